"""Engine of palettes: pixels -> weighted k-means palette, shared by :func:`torchpalette.palette`,
:func:`torchpalette.reduce_colors`, the layers and dataset palettes.

The k-means defaults of palettes are defined here once (:func:`kmeans_defaults`), so a palette
of one image and a palette of a dataset are clustered the same way.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._bins import bin_pixels, color_table, labels_by_bin
from ._image import split_alpha
from ._kmeans import cluster, refine
from ._nearest import nearest_centroid
from ._spaces import SPACES, from_space, to_space, to_space_cf
from ._types import Palette

METHODS = ("hist", "exact")
#: Bits per channel of fixed colour bins (bins 8 sRGB levels wide): dataset palettes, and
#: the coarse stage of image palettes.
DEFAULT_BITS = 5
# Adaptive histogram (``bits=None``): an image with at most DIRECT_COLORS distinct colours, or
# fewer than COARSE_PER_K occupied coarse bins per palette colour, is clustered on its exact
# colours; any other on its coarse bins (photos: a fine stage costs several times the palette).
# ``bits=8`` clusters every image on its exact colours: the others coarse-to-fine, refined by
# Lloyd steps on the exact colours to FINE_TOL times the coarse tolerance.
DIRECT_COLORS = 1024
COARSE_PER_K = 8
FINE_TOL = 0.1
# k-means tolerance of palettes: stop once no centroid moves by 1% of the data's spread
# (~0.2-0.3 Lab units on photos): the same mean dE00 as 1e-4 on the benchmark photos, in
# fewer steps.
TOL = 1e-2
# k-means++ seedings of small palettes (k <= SMALL_K): at k=2 a photo can have two basins and
# one seeding lands in the worse one in ~12% of seeds; n_init=3 costs a few ms there. At
# larger k the basins are many and shallow, and one seeding is kept.
SMALL_K, SMALL_K_INITS = 4, 3


def kmeans_defaults(k: int, **overrides: Any) -> dict[str, Any]:
    """The k-means options of a ``k``-colour palette (``tol``, ``n_init``), with overrides."""
    return {"tol": TOL, "n_init": SMALL_K_INITS if k <= SMALL_K else 1, **overrides}


class PaletteOptions(NamedTuple):
    """Checked options of an image palette (see :func:`torchpalette.palette`)."""

    k: int
    space: str
    max_pixels: int | None
    seed: int
    method: str
    bits: int | None
    kmeans: dict[str, Any]


class PixelLabels(NamedTuple):
    """Palette index of pixels found while the palette was built (no per-pixel search):
    ``labels [B, P]`` int64, valid in the rows (images) where ``known [B]`` is True."""

    labels: Tensor
    known: Tensor


#: What :func:`image_palette` may label on the way: ``"table"``, each pixel through the table
#: of its image's exact colours (the exact search's labels, for images whose exact colours the
#: palette counted); ``"bins"``, the same, and every other image through its coarse bins'
#: k-means labels (the look-up-table assignment).
LABELS = (None, "table", "bins")


def check_options(
    k: int, space: str, max_pixels: int | None, seed: int, method: str, bits: int | None,
    kmeans_kw: dict[str, Any], caller: str = "palette",
) -> PaletteOptions:
    """Validate the palette options (not the image) and fill in the k-means defaults."""
    k = v.check_int(k, "k", low=1)
    v.check_choice(space, "space", SPACES)
    v.check_choice(method, "method", METHODS)
    if bits is not None:
        bits = v.check_int(bits, "bits", low=1, high=8)
    seed = v.check_int(seed, "seed")
    if max_pixels is not None:
        max_pixels = v.check_int(max_pixels, "max_pixels", low=1)
    unknown = set(kmeans_kw) - {"max_iter", "tol", "n_init"}
    if unknown:
        raise TypeError(
            f"{caller}: unexpected keyword {sorted(unknown)[0]!r} "
            "(k-means options: max_iter, tol, n_init)"
        )
    v.check_kmeans_options(**kmeans_kw)
    return PaletteOptions(k, space, max_pixels, seed, method, bits, kmeans_defaults(k, **kmeans_kw))


def image_palette(
    image: Tensor, opt: PaletteOptions, *, labels: str | None = None
) -> tuple[Palette, PixelLabels | None]:
    """Palette of each image of a checked ``image [..., 3|4, H, W]``, and with ``labels``
    (one of :data:`LABELS`) the :class:`PixelLabels` found on the way (``"hist"`` method, all
    pixels used), else None. Which images get labels depends on each image alone."""
    batch = image.shape[:-3]
    rgb, alpha = split_alpha(image)
    rgb = rgb.reshape(-1, 3, rgb.shape[-2] * rgb.shape[-1])
    weights, invisible = None, None
    if alpha is not None:
        weights = (alpha.reshape(rgb.shape[0], -1) > 0).float()
        invisible = weights.sum(-1) == 0  # [B]: every pixel transparent
        if bool(invisible.any()):  # clustered on its hidden colours, given weight 0 below
            weights = torch.where(invisible[:, None], 1.0, weights)
        else:
            invisible = None
    generator = torch.Generator().manual_seed(opt.seed)
    if opt.max_pixels is not None and rgb.shape[-1] > opt.max_pixels:
        keep = torch.randperm(rgb.shape[-1], generator=generator)[: opt.max_pixels]
        keep = keep.sort().values.to(rgb.device)
        rgb = rgb[..., keep]
        weights = None if weights is None else weights[..., keep]
        labels = None  # labels of a subset are no labels of the image
    with _policy.single_thread_if_small(rgb, rgb.shape[0] * rgb.shape[-1], _policy.SMALL_PIXELS):
        colors, wts, degenerate, found = palette_of_pixels(
            rgb, opt.k, weights=weights, space=opt.space, method=opt.method, bits=opt.bits,
            generator=generator, labels=labels, **opt.kmeans,
        )
    if bool(degenerate.any()):
        warnings.warn(
            f"palette: an image has fewer distinct colours than k={opt.k}; "
            "duplicate colours of weight 0 were returned",
            UserWarning,
            stacklevel=3,
        )
    if invisible is not None:
        wts = torch.where(invisible[:, None], 0.0, wts)
    if image.is_floating_point() and image.dtype in (torch.float32, torch.float64):
        colors, wts = colors.to(image.dtype), wts.to(image.dtype)
    return Palette(colors.reshape(*batch, opt.k, 3), wts.reshape(*batch, opt.k)), found


def palette_of_pixels(
    rgb: Tensor,
    k: int,
    *,
    weights: Tensor | None = None,
    space: str = "lab",
    method: str = "hist",
    bits: int | None = DEFAULT_BITS,
    generator: torch.Generator | None = None,
    labels: str | None = None,
    **kmeans_kw: Any,
) -> tuple[Tensor, Tensor, Tensor, PixelLabels | None]:
    """Unchecked palette of pixels: one batched k-means for all B images.

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB.
        k: palette size.
        weights: ``[B, P]`` pixel weights or None.
        space, method, bits: as :func:`torchpalette.palette`.
        generator: k-means++ draws.
        labels: pixel labels to return on the way, one of :data:`LABELS`.
        **kmeans_kw: k-means options (``tol``, ``n_init``, ``max_iter``).

    Returns:
        ``(colors [B, k, 3] sRGB, weights [B, k] sorted descending and summing to 1,
        degenerate [B] bool (fewer distinct points than k), pixel labels or None)``. Fixed
        ``bits`` label every pixel through its bin (``labels="bins"`` only); adaptive bits
        label the images whose exact colours were counted through their exact colours, and
        with ``"bins"`` every other image through its coarse bins.
    """
    if method == "hist" and bits in (None, 8):
        return _adaptive_palette(rgb, k, weights, space, generator, labels, kmeans_kw,
                                 fine=bits == 8)
    codes = None
    w: Tensor | None
    if method == "hist" and bits is not None:
        pts, w, codes = bin_pixels(rgb, weights, bits)
        pts = to_space(pts, space)
    else:
        pts = to_space_cf(rgb, space).transpose(1, 2)
        w = weights
    res, degenerate = cluster(pts, k, weights=w, generator=generator, **kmeans_kw)
    if w is None:
        w = torch.ones(res.labels.shape, dtype=pts.dtype, device=pts.device)
    mass = torch.zeros(res.labels.shape[0], k, dtype=w.dtype, device=w.device)
    mass.scatter_add_(1, res.labels, w.to(mass.dtype))
    mass = mass / mass.sum(-1, keepdim=True)
    mass, order = mass.sort(dim=-1, descending=True, stable=True)
    colors = from_space(res.centroids, space).gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
    found = None
    if codes is not None and bits is not None and labels == "bins":
        code_labels = order.argsort(-1).gather(1, res.labels)  # renumbered to the sorted palette
        known = torch.ones(rgb.shape[0], dtype=torch.bool, device=rgb.device)
        found = PixelLabels(labels_by_bin(rgb, codes, code_labels, bits), known)
    return colors, mass, degenerate, found
def _adaptive_palette(
    rgb: Tensor, k: int, weights: Tensor | None, space: str,
    generator: torch.Generator | None, labels: str | None, kmeans_kw: dict[str, Any],
    fine: bool = False,
) -> tuple[Tensor, Tensor, Tensor, PixelLabels | None]:
    """:func:`palette_of_pixels` with adaptive bins: each image, decided alone, is clustered on
    its exact colours or on its coarse bins (refined on its exact colours with ``fine``), see
    :data:`DIRECT_COLORS`. Exact colours are counted only where some image may need them."""
    b = rgb.shape[0]
    means, cw, codes = bin_pixels(rgb, weights, DEFAULT_BITS)
    cx = to_space(means, space)
    n_bins = (cw > 0).sum(-1)
    few_bins = n_bins < COARSE_PER_K * k
    # images whose exact colours are counted: decided per image, so that which labels an
    # image gets never depends on its batch
    counted = few_bins | (n_bins <= DIRECT_COLORS) | fine
    direct = few_bins  # an image with more bins than DIRECT_COLORS has more colours too
    t = None
    if bool(counted.any()):
        dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
        t = color_table(rgb, weights, dtype)
        # uint8 colours are exact levels: converted through the space's uint8 (table) path
        src = t.colors.mul(255).round_().to(torch.uint8) if rgb.dtype == torch.uint8 else t.colors
        x = to_space_cf(src.transpose(1, 2), space, dtype).transpose(1, 2)  # [B, U, 3]
        direct = few_bins | (t.distinct <= DIRECT_COLORS)
    first_x, first_w = cx, cw
    if t is not None and bool(direct.any()):  # exact colours, as wide as direct images need
        used = (t.counts > 0) * torch.arange(1, t.counts.shape[1] + 1, device=cw.device)
        width = max(cw.shape[1], int(used[direct].amax()))
        pad = (0, width - cw.shape[1])
        f = torch.nn.functional
        first_x = torch.where(direct.view(-1, 1, 1), x[:, :width], f.pad(cx, (0, 0, *pad)))
        first_w = torch.where(direct.view(-1, 1), t.counts[:, :width].to(cw.dtype),
                              f.pad(cw, pad))
    res, _ = cluster(first_x, k, weights=first_w, generator=generator, **kmeans_kw)
    cent = res.centroids
    if t is not None and fine and not bool(direct.all()):
        tol = kmeans_kw.get("tol", TOL) * FINE_TOL
        cent = refine(x, t.counts, cent, tol, kmeans_kw.get("max_iter", 100), ~direct)
    colors = from_space(cent, space)
    # weights: the k-means labels of the clustered points; exact colours' where they were
    # clustered (so an image's weights never depend on what its batch needed)
    mass = torch.zeros(b, k, dtype=cw.dtype, device=cw.device)
    mass.scatter_add_(1, res.labels, first_w)
    exact_labels = None
    if t is not None:
        exact_labels = nearest_centroid(to_space(colors, space), x.transpose(1, 2))[0]  # [B, U]
        exact_mass = torch.zeros_like(mass).scatter_add_(1, exact_labels, t.counts.to(mass.dtype))
        mass = torch.where((direct | fine).view(-1, 1), exact_mass, mass)
    mass = mass / mass.sum(-1, keepdim=True)
    mass, order = mass.sort(dim=-1, descending=True, stable=True)
    colors = colors.gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
    # colours nothing maps to (fewer colours than k) repeat the heaviest: which point an empty
    # cluster was re-seeded on must not show (it may depend on the batch's padding)
    colors = torch.where(mass.unsqueeze(-1) > 0, colors, colors[:, :1])
    degenerate = n_bins < k if t is None else t.distinct < k
    if labels is None:
        return colors, mass, degenerate, None
    rank = order.argsort(-1)  # old palette index -> index in the sorted palette
    known = counted if t is not None else torch.zeros_like(counted)
    pixel = torch.zeros(b, rgb.shape[-1], dtype=torch.int64, device=rgb.device)
    if t is not None and exact_labels is not None:
        pixel = rank.gather(1, exact_labels).gather(1, t.slot)
    if labels == "bins" and not bool(known.all()):  # the others through their coarse bins
        m = codes.shape[1]
        by_bin = labels_by_bin(rgb, codes, rank.gather(1, res.labels[:, :m]), DEFAULT_BITS)
        pixel = torch.where(known.view(-1, 1), pixel, by_bin)
        known = torch.ones_like(known)
    return colors, mass, degenerate, PixelLabels(pixel, known)
