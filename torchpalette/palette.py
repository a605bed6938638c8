"""palette(): an image's weighted k-means colour palette.

Pixels are clustered in a perceptual space (CIELAB by default, or Oklab, or plain sRGB) with
:func:`torchpalette.kmeans`; the palette is the cluster centres converted back to sRGB, weighted
by the fraction of pixels in each cluster. Pixels with alpha 0 carry no weight.

Two methods:

* ``"hist"`` (default): pixels are binned into a 3-D colour histogram with ``bits`` bits per
  channel (``2**(3*bits)`` bins), the occupied bins are compacted and clustered as weighted
  points, each bin standing for the mean of its pixels and weighted by their count. The work
  after binning depends on the number of distinct colour bins, not on the image size, so a
  12-megapixel photo costs about as much to cluster as a thumbnail. The default 5 bits (bins
  8/255 wide, a few thousand occupied on a photo) gave palettes within +0.02 mean dE00 of
  full-pixel scikit-learn k-means in Lab on four photos (3 seeds each) at k=16.
* ``"exact"``: every pixel is a point (``max_pixels`` bounds the cost by subsampling).

Internal building blocks for the layers (:mod:`torchpalette.nn`), all batched over ``[B, ...]``
and sync-free except where noted:

* :func:`_bin_pixels` — ``[B, 3, P]`` pixels -> compacted bins (means ``[B, M, 3]``, counts).
* :func:`_palette_from_pixels` — ``[B, 3, P]`` pixels (+ weights) -> palette, either method.
* :func:`_to_space` / :func:`_from_space` — unchecked sRGB <-> Lab / Oklab / sRGB.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import kornia.color as kc
import torch
from torch import Tensor

from . import _validate as v
from . import color as _color
from ._image import split_alpha
from .kmeans import _check_options, _few_threads, _kmeans

__all__ = ["Palette", "palette"]

SPACES = ("lab", "oklab", "srgb")
METHODS = ("hist", "exact")
# k-means tolerance of palettes: stop once no centroid moves by 1% of the data's spread
# (~0.2-0.3 Lab units on photos). The same mean dE00 on the benchmark photos as kmeans()'s
# 1e-4 (which is 100x stricter than scikit-learn's tol=1e-4 on squared shifts), in fewer steps.
TOL = 1e-2
# k-means++ seedings of small palettes (k <= SMALL_K): at k=2 a photo can have two basins (the
# astronaut: mean Lab inertia 783 vs 1012, dE00 16.7 vs 22.3) and one seeding lands in the
# worse one in ~12% of seeds here (scikit-learn's KMeans(n_init=1): ~20%, 8 of 40 seeds).
# Clustering a few thousand bins is cheap at small k, so n_init=3 (bad run ~0.2%) costs a few
# ms; at larger k the basins are many and shallow and one seeding is kept.
SMALL_K, SMALL_K_INITS = 4, 3
# below this many pixels (a batch of 16 512x512 images) CPU palettes and quantization run on
# one thread: on a loaded machine (or beside DataLoader workers) every parallel region waits
# for descheduled threads, 3-10x slower on 2 cores (see kmeans._few_threads); on a quiet
# machine 2 threads gain at most ~1.4x here
_SMALL_PIXELS = 1 << 22


class Palette(NamedTuple):
    """A weighted palette: colours ``[..., K, 3]`` sRGB float in [0, 1] and weights ``[..., K]``
    (pixel fractions summing to 1, sorted descending)."""

    colors: Tensor
    weights: Tensor


def palette(
    image: Tensor,
    k: int = 16,
    *,
    space: str = "lab",
    max_pixels: int | None = None,
    seed: int = 0,
    method: str = "hist",
    bits: int = 5,
    **kmeans_kw: Any,
) -> Palette:
    """Weighted k-means palette of each image.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha-0 pixels are ignored.
        k: palette size (>= 1). Images with fewer distinct colours (bins) than ``k`` warn and
            get duplicate colours of weight 0.
        space: clustering space, ``"lab"`` (CIELAB D65), ``"oklab"`` or ``"srgb"``.
        max_pixels: cluster at most this many pixels per image (a random subset, the same
            positions for every image of a batch); ``None`` uses all.
        seed: seed of the k-means++ draws (and of the subset).
        method: ``"hist"`` (3-D histogram bins as weighted points, fast) or ``"exact"``
            (every pixel a point).
        bits: bits per channel of the ``"hist"`` bins (1..8; default 5).
        **kmeans_kw: passed to :func:`torchpalette.kmeans` (``max_iter``, ``tol``,
            ``n_init``); ``tol`` defaults to 1e-2 here and ``n_init`` to 3 for ``k <= 4``
            (small palettes: one seeding can land in a clearly worse local optimum), else 1.

    Returns:
        :class:`Palette`: colours ``[..., k, 3]`` sRGB in [0, 1] (float32, or the image's
        float dtype) and weights ``[..., k]`` (sum 1, sorted descending).

    Raises:
        TypeError: not a tensor, wrong dtype, non-int ``k``/``seed``/``bits``.
        ValueError: bad shape, empty, NaN, float values outside [0, 1], ``k < 1``, unknown
            ``space``/``method``, or an image whose pixels all have alpha 0.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.zeros(3, 4, 4, dtype=torch.uint8)
        >>> img[0, :, :1] = 255  # a red quarter, the rest black
        >>> pal = tp.palette(img, k=2)
        >>> (pal.colors * 255).round(), pal.weights
        (tensor([[  0.,   0.,   0.],
                [255.,   0.,   0.]]), tensor([0.7500, 0.2500]))
    """
    return _palette(
        image, k, space=space, max_pixels=max_pixels, seed=seed, method=method, bits=bits,
        **kmeans_kw,
    )[0]


def _palette(
    image: Tensor,
    k: int = 16,
    *,
    space: str = "lab",
    max_pixels: int | None = None,
    seed: int = 0,
    method: str = "hist",
    bits: int = 5,
    return_bins: bool = False,
    **kmeans_kw: Any,
) -> tuple[Palette, tuple[Tensor, Tensor, Tensor, int] | None]:
    """:func:`palette` (checked) plus, with ``return_bins`` and ``method="hist"``, what
    :func:`_bin_lut_apply` needs: ``(rgb [B, 3, P] (all pixels), bins [B, M], labels [B, M]
    (index into the sorted palette), bits)``; else None."""
    v.check_image(image, "image")
    k = v.check_int(k, "k", low=1)
    v.check_choice(space, "space", SPACES)
    v.check_choice(method, "method", METHODS)
    bits = v.check_int(bits, "bits", low=1, high=8)
    seed = v.check_int(seed, "seed")
    if max_pixels is not None:
        max_pixels = v.check_int(max_pixels, "max_pixels", low=1)
    unknown = set(kmeans_kw) - {"max_iter", "tol", "n_init"}
    if unknown:
        raise TypeError(
            f"palette: unexpected keyword {sorted(unknown)[0]!r} "
            "(k-means options: max_iter, tol, n_init)"
        )
    _check_options(**kmeans_kw)
    kmeans_kw = {"tol": TOL, "n_init": SMALL_K_INITS if k <= SMALL_K else 1, **kmeans_kw}
    batch = image.shape[:-3]
    rgb, alpha = split_alpha(image)
    rgb = rgb.reshape(-1, 3, rgb.shape[-2] * rgb.shape[-1])
    weights = None
    if alpha is not None:
        weights = (alpha.reshape(rgb.shape[0], -1) > 0).float()
        if bool((weights.sum(-1) == 0).any()):
            raise ValueError(
                "image: expected at least one pixel with alpha > 0 in every image, "
                "got an image whose pixels are all transparent"
            )
    generator = torch.Generator().manual_seed(seed)
    rgb_all = rgb
    if max_pixels is not None and rgb.shape[-1] > max_pixels:
        keep = torch.randperm(rgb.shape[-1], generator=generator)[:max_pixels].sort().values
        keep = keep.to(rgb.device)
        rgb = rgb[..., keep]
        weights = None if weights is None else weights[..., keep]
    with _few_threads(rgb, rgb.shape[0] * rgb.shape[-1], _SMALL_PIXELS):
        colors, wts, degenerate, extra = _palette_from_pixels(
            rgb, k, weights=weights, space=space, method=method, bits=bits,
            generator=generator, return_bins=True, **kmeans_kw,
        )
    if bool(degenerate.any()):
        warnings.warn(
            f"palette: an image has fewer distinct colours than k={k}; "
            "duplicate colours of weight 0 were returned",
            UserWarning,
            stacklevel=3,
        )
    if image.is_floating_point() and image.dtype in (torch.float32, torch.float64):
        colors, wts = colors.to(image.dtype), wts.to(image.dtype)
    lut = None
    if return_bins and extra is not None:
        lut = (rgb_all, extra[0], extra[1], bits)
    return Palette(colors.reshape(*batch, k, 3), wts.reshape(*batch, k)), lut


_SRGB_TO_XYZ = (  # rows divided by the D65 white (0.95047, 1, 1.08883), as kornia.color
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_WHITE = (0.95047, 1.0, 1.08883)
_F_TO_LAB = ((0.0, 116.0, 0.0), (500.0, -500.0, 0.0), (0.0, 200.0, -200.0))


def _lab_cf(rgb: Tensor, dtype: torch.dtype = torch.float32, *, ones: bool = False) -> Tensor:
    """Fast unchecked sRGB -> CIELAB in channel-first layout: ``[B, 3, P]`` -> ``[B, 3, P]``
    (with ``ones``: ``[B, 4, P]`` whose last row is 1, for distances as one ``bmm``).

    The same formulas and constants as ``kornia.color.rgb_to_lab`` (the tests compare them),
    but uint8 pixels are linearised by a 256-entry look-up table instead of ``pow(2.4)`` and
    the two linear steps are 3x3 matrix products, which makes it several times faster on
    large pixel sets. Float input is computed in its own dtype (float32 or float64).
    """
    dev = rgb.device
    if rgb.dtype == torch.uint8:
        lut = kc.rgb_to_linear_rgb(
            torch.arange(256, device=dev, dtype=torch.float64).div(255.0).view(1, 1, 256)
            .expand(3, 1, 256)
        )[0, 0].to(dtype)
        # index_select with int32 indices: ~5x faster than lut[rgb.long()] on CPU
        lin = lut.index_select(0, rgb.reshape(-1).int()).view(rgb.shape)
    else:
        dtype = rgb.dtype if rgb.dtype in (torch.float32, torch.float64) else torch.float32
        lin = kc.rgb_to_linear_rgb(rgb.to(dtype).unsqueeze(-1)).squeeze(-1)
    m = torch.tensor(_SRGB_TO_XYZ, dtype=dtype, device=dev)
    m = m / torch.tensor(_WHITE, dtype=dtype, device=dev).unsqueeze(-1)
    t = torch.matmul(m, lin)
    thr = 0.008856
    # cube root as exp(log(t) / 3): ~2x faster than pow(1/3) on CPU, within a few ulp
    f = torch.where(
        t > thr, t.clamp(min=thr).log_().mul_(1.0 / 3.0).exp_(), t * 7.787 + 4.0 / 29.0
    )
    fm = torch.tensor(_F_TO_LAB, dtype=dtype, device=dev)
    if not ones:
        lab = torch.matmul(fm, f)
        lab[:, 0] -= 16.0
        return lab
    out = torch.empty(f.shape[0], 4, f.shape[2], dtype=dtype, device=dev)
    torch.matmul(fm, f, out=out[:, :3])
    out[:, 0] -= 16.0
    out[:, 3] = 1.0
    return out


def _to_space(rgb: Tensor, space: str) -> Tensor:
    """Unchecked sRGB ``[..., 3]`` float -> ``space`` (``"lab"``, ``"oklab"``, ``"srgb"``)."""
    if space == "lab":
        return _color._srgb_to_lab(rgb)
    if space == "oklab":
        return _color._srgb_to_oklab(rgb)
    return rgb


def _to_space_cf(rgb: Tensor, space: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """Unchecked channel-first conversion of pixels: ``[B, 3, P]`` uint8 or float sRGB ->
    ``[B, 3, P]`` in ``space`` (float ``dtype`` for uint8 input, else the input's float)."""
    if space == "lab":
        return _lab_cf(rgb, dtype)
    x = rgb.to(dtype) / 255.0 if rgb.dtype == torch.uint8 else rgb
    return _to_space(x.transpose(1, 2), space).transpose(1, 2)


def _from_space(c: Tensor, space: str) -> Tensor:
    """Unchecked ``space`` -> sRGB ``[..., 3]`` in [0, 1] (out-of-gamut values clipped)."""
    if space == "lab":
        return _color._lab_to_srgb(c)
    if space == "oklab":
        return _color._oklab_to_srgb(c)
    return c.clamp(0.0, 1.0)


_BIN_CHUNK = 1 << 23  # most pixels (and dense bins) binned at once on CPU
_BIN_CHUNK_GPU = 1 << 24  # on a GPU: fewer groups (each costs a few syncs), ~1.5x a uint8 input


def _chunk(x: Tensor) -> int:
    """Pixels handled per group of images on ``x``'s device."""
    return _BIN_CHUNK if x.device.type == "cpu" else _BIN_CHUNK_GPU


def _bin_codes(rgb: Tensor, bits: int) -> Tensor:
    """``[B, 3, P]`` uint8 or float sRGB -> int32 bin codes ``[B, P]``:
    ``(r << 2 bits) | (g << bits) | b`` with ``x = round(255 x) >> (8 - bits)`` per channel.
    uint8 pixels are shifted as uint8 and widened once (4 bytes per pixel, no float copy)."""
    s = 8 - bits
    q = rgb if rgb.dtype == torch.uint8 else rgb.mul(255.0).round_().to(torch.uint8)
    code = (q[:, 0] >> s).to(torch.int32).bitwise_left_shift_(2 * bits)
    code.bitwise_or_((q[:, 1] >> s).to(torch.int32).bitwise_left_shift_(bits))
    return code.bitwise_or_(q[:, 2] >> s)


def _bin_pixels(
    rgb: Tensor, weights: Tensor | None = None, bits: int = 6, *, return_bins: bool = False
) -> tuple[Tensor, ...]:
    """Bin pixels into a 3-D colour histogram and compact it to the occupied bins.

    Images are binned in groups whose pixels and dense bins stay under ``_BIN_CHUNK``
    (``_BIN_CHUNK_GPU``) elements: a loop over groups only to bound memory, so a GPU batch
    of 1024 images never holds ``[B, 32768, 4]`` float bins at once. In a group, the bin
    codes of all images are offset by ``image * 2**(3 bits)`` and one ``bincount`` (GPU:
    ``scatter_add_``) gives the counts, three more the channel sums; ``nonzero`` compacts
    them to the occupied bins, element-major.

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB in [0, 1].
        weights: ``[B, P]`` pixel weights (0 = ignored) or None.
        bits: bits per channel; bin of a channel = ``round(255 x) >> (8 - bits)``.
        return_bins: also return each slot's bin code.

    Returns:
        ``(means [B, M, 3], counts [B, M])`` and with ``return_bins`` also ``bins [B, M]``
        int64 (the bin code of each slot, ``2**(3 bits)`` for padding): float32 (float64
        for float64 input) sRGB mean of each occupied bin and its (weighted) pixel count; M
        is the largest number of occupied bins over the batch, shorter rows are padded with
        count 0. Two host syncs per group (``nonzero`` and M).
    """
    b, _, p = rgb.shape
    dev = rgb.device
    dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    nb = 1 << (3 * bits)
    group = max(1, _chunk(rgb) // max(p, nb))
    parts = []
    for g0 in range(0, b, group):
        x = rgb[g0 : g0 + group]
        g = x.shape[0]
        wg = None if weights is None else weights[g0 : g0 + group]
        if dev.type == "cpu" and p > _PIX_CHUNK and nb <= _PIX_CHUNK:
            counts, dense = _dense_sums_chunked(x, wg, bits, dtype)
        else:
            counts, dense = _dense_sums(x, wg, bits, dtype)
        occ = counts > 0
        (idx,) = occ.nonzero(as_tuple=True)  # sorted: element-major
        scale = 1.0 / 255.0 if x.dtype == torch.uint8 else 1.0
        sums = [d[idx] for d in dense]
        row = idx // nb
        n_occ = occ.view(g, nb).sum(-1)
        m = int(n_occ.max())
        pos = torch.arange(idx.numel(), device=dev) - (n_occ.cumsum(0) - n_occ)[row]
        cnt = counts[idx]
        means = torch.zeros(g, m, 3, dtype=dtype, device=dev)
        means[row, pos] = torch.stack(sums, -1) * (scale / cnt.unsqueeze(-1))
        out_counts = torch.zeros(g, m, dtype=dtype, device=dev)
        out_counts[row, pos] = cnt
        bins = torch.full((g, m), nb, dtype=torch.int64, device=dev)
        bins[row, pos] = idx - row * nb
        parts.append((means, out_counts, bins))
    m = max(part[0].shape[1] for part in parts)
    pad = [tuple(torch.nn.functional.pad(t, (0, 0, 0, m - t.shape[1]) if t.ndim == 3 else
                                         (0, m - t.shape[1]), value=(nb if t.dtype ==
                                                                     torch.int64 else 0))
                 for t in part) for part in parts]
    means, counts, bins = (torch.cat([part[i] for part in pad]) for i in range(3))
    return (means, counts, bins) if return_bins else (means, counts)


_PIX_CHUNK = 1 << 18  # CPU: pixels per image binned at once in large images (stays in L2)


def _dense_sums(
    x: Tensor, wg: Tensor | None, bits: int, dtype: torch.dtype
) -> tuple[Tensor, list[Tensor]]:
    """Dense per-bin counts ``[g 2**(3 bits)]`` and channel sums (3 of those) of the images
    ``x [g, 3, P]`` with pixel weights ``wg [g, P]`` or None, in one pass."""
    g = x.shape[0]
    nb = 1 << (3 * bits)
    code = _bin_codes(x, bits)
    code += torch.arange(g, device=x.device, dtype=torch.int32).unsqueeze(-1) * nb
    flat = code.view(-1)  # on a GPU summed by scatter_add_: bincount syncs to size itself
    w = None if wg is None else wg.to(dtype).reshape(-1)
    counts = _sum_by(flat, w, g * nb, dtype)
    sums = []
    for c in range(3):
        xc = x[:, c].reshape(-1)
        if w is not None or x.is_floating_point():
            xc = xc.to(dtype) if w is None else xc.to(dtype) * w
        sums.append(_sum_by(flat, xc, g * nb, dtype))
    return counts, sums


def _dense_sums_chunked(
    x: Tensor, wg: Tensor | None, bits: int, dtype: torch.dtype
) -> tuple[Tensor, list[Tensor]]:
    """:func:`_dense_sums` over pixel chunks of ``_PIX_CHUNK`` per image (CPU, large images):
    the codes and weights of a chunk stay in cache instead of image-sized temporaries; the
    chunk boundaries do not depend on the batch, and the sums accumulate in float64."""
    g, _, p = x.shape
    nb = 1 << (3 * bits)
    acc = torch.zeros(4, g * nb, dtype=torch.float64, device=x.device)
    for s in range(0, p, _PIX_CHUNK):
        counts, sums = _dense_sums(
            x[..., s : s + _PIX_CHUNK], None if wg is None else wg[:, s : s + _PIX_CHUNK],
            bits, torch.float64,
        )
        acc[0] += counts
        for c in range(3):
            acc[c + 1] += sums[c]
    acc = acc.to(dtype)
    return acc[0], [acc[1], acc[2], acc[3]]


_FIXED = float(1 << 24)  # fixed-point step of the GPU bin sums (2**-24 of one sRGB unit)


def _sum_by(
    flat: Tensor, w: Tensor | None, size: int, dtype: torch.dtype, scatter: bool | None = None
) -> Tensor:
    """Dense per-code sums of ``w`` (counts when None): ``[size]`` of ``dtype``. CPU:
    ``bincount``; other devices (or ``scatter=True``): ``scatter_add_``, no host sync.

    GPU atomics add in any order, and float sums depend on the order: there ``w`` is summed as
    int64 fixed point (steps of 2**-24), so every run, and every split of a batch, gives the
    same bits (same seed, same palette). Groups hold at most 2**24 pixels, so the int64 sums
    of values up to 255 * 2**24 cannot overflow."""
    if not (flat.device.type != "cpu" if scatter is None else scatter):
        w = w if w is None or w.is_floating_point() else w.to(dtype)
        return torch.bincount(flat, weights=w, minlength=size).to(dtype)
    flat = flat.long()
    if w is not None and not w.is_floating_point():  # integer values (uint8 pixels): exact
        sums = torch.zeros(size, dtype=torch.int64, device=flat.device)
        return sums.scatter_add_(0, flat, w.long()).to(dtype)
    if w is None:  # counts: sums of ones are exact in any order
        ones = torch.ones((), dtype=dtype, device=flat.device).expand(flat.shape)
        return torch.zeros(size, dtype=dtype, device=flat.device).scatter_add_(0, flat, ones)
    fixed = torch.round(w * _FIXED).long()
    sums = torch.zeros(size, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, fixed)
    return sums.to(dtype) / _FIXED


def _bin_lut_apply(
    rgb: Tensor, bins: Tensor, bin_labels: Tensor, colors: Tensor, bits: int
) -> Tensor:
    """Approximate quantization through the histogram: every pixel takes the colour of its
    bin's cluster (a per-image look-up table bin -> colour), no per-pixel distances.

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB, binned as :func:`_bin_pixels` did.
        bins: ``[B, M]`` int64 bin code of each slot (``2**(3 bits)`` = padding).
        bin_labels: ``[B, M]`` int64 palette index of each slot.
        colors: ``[B, K, 3]`` palette in the output's dtype (uint8 or float).
        bits: bits per channel of ``bins``.

    Returns:
        ``[B, 3, P]`` pixels of ``colors``' dtype (pixels of bins that carried no weight take
        colour 0, the heaviest). Memory: three tables ``[B, 2**(3 bits)]``
        plus pixel temporaries bounded by ``_BIN_CHUNK`` (``_BIN_CHUNK_GPU``).
    """
    b, _, p = rgb.shape
    nb1 = (1 << (3 * bits)) + 1
    slot_col = colors.gather(1, bin_labels.unsqueeze(-1).expand(-1, -1, 3))  # [B, M, 3]
    # bins no weighted pixel fell in (alpha 0, or outside a max_pixels subset) take colour 0
    lut = colors[:, :1].permute(2, 0, 1).repeat(1, 1, nb1)  # [3, B, nb + 1], channel-major
    lut.scatter_(2, bins.unsqueeze(0).expand(3, -1, -1), slot_col.permute(2, 0, 1))
    out = torch.empty(b, 3, p, dtype=colors.dtype, device=rgb.device)
    group = max(1, _chunk(rgb) // p)
    for g0 in range(0, b, group):
        x = rgb[g0 : g0 + group]
        g = x.shape[0]
        code = _bin_codes(x, bits).long()
        code += torch.arange(g, device=rgb.device).unsqueeze(-1) * nb1
        for c in range(3):  # lut[c, group] is a contiguous block: a flat view, no copy
            out[g0 : g0 + g, c] = lut[c, g0 : g0 + g].reshape(-1)[code]
    return out


def _palette_from_pixels(
    rgb: Tensor,
    k: int,
    *,
    weights: Tensor | None = None,
    space: str = "lab",
    method: str = "hist",
    bits: int = 5,
    generator: torch.Generator | None = None,
    return_bins: bool = False,
    **kmeans_kw: Any,
) -> tuple[Tensor, ...]:
    """Unchecked palette core: ``rgb [B, 3, P]`` (uint8 or float sRGB), ``weights [B, P]``
    -> (colours ``[B, k, 3]`` sRGB, weights ``[B, k]`` sorted descending, summing to 1,
    degenerate ``[B]`` bool: fewer distinct points than k). One batched k-means for all B.
    With ``return_bins`` a fourth item: ``(bins [B, M], labels [B, M])`` for the hist
    method (each slot's bin code and palette index), else None."""
    bins = None
    if method == "hist":
        pts, w, bins = _bin_pixels(rgb, weights, bits, return_bins=True)
    else:
        pts = _to_space_cf(rgb, space).transpose(1, 2)
        w = weights
    if method == "hist":
        pts = _to_space(pts, space)
    res, degenerate = _kmeans(pts, k, weights=w, generator=generator, **kmeans_kw)
    if w is None:
        w = torch.ones(res.labels.shape, dtype=pts.dtype, device=pts.device)
    mass = torch.zeros(res.labels.shape[0], k, dtype=w.dtype, device=w.device)
    mass.scatter_add_(1, res.labels, w.to(mass.dtype))
    mass = mass / mass.sum(-1, keepdim=True)
    mass, order = mass.sort(dim=-1, descending=True, stable=True)
    colors = _from_space(res.centroids, space).gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
    if not return_bins:
        return colors, mass, degenerate
    extra = None
    if bins is not None:  # labels of the bins, renumbered to the sorted palette
        extra = (bins, order.argsort(-1).gather(1, res.labels))
    return colors, mass, degenerate, extra
