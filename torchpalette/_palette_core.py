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
from ._bins import ColorTable, bin_pixels, color_table
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
# colours; any other is clustered on its coarse bins first, then refined by Lloyd steps on its
# exact colours to FINE_TOL times the coarse tolerance (coarse-to-fine k-means).
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


class BinLabels(NamedTuple):
    """What the look-up-table assignment needs of a ``"hist"`` palette: every pixel
    ``rgb [B, 3, P]``, each image's occupied bin codes ``[B, M]`` and their palette index."""

    rgb: Tensor
    codes: Tensor
    labels: Tensor
    bits: int


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
    image: Tensor, opt: PaletteOptions, *, want_bin_labels: bool = False
) -> tuple[Palette, BinLabels | Tensor | None]:
    """Palette of each image of a checked ``image [..., 3|4, H, W]``; with ``want_bin_labels``
    and the ``"hist"`` method also the :class:`BinLabels` of its bins (fixed ``bits``) or the
    palette index ``[B, H*W]`` of every pixel (adaptive bits, all pixels used), else None."""
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
    generator = torch.Generator().manual_seed(opt.seed)
    rgb_all = rgb
    if opt.max_pixels is not None and rgb.shape[-1] > opt.max_pixels:
        keep = torch.randperm(rgb.shape[-1], generator=generator)[: opt.max_pixels]
        keep = keep.sort().values.to(rgb.device)
        rgb = rgb[..., keep]
        weights = None if weights is None else weights[..., keep]
    with _policy.single_thread_if_small(rgb, rgb.shape[0] * rgb.shape[-1], _policy.SMALL_PIXELS):
        colors, wts, degenerate, bins = palette_of_pixels(
            rgb, opt.k, weights=weights, space=opt.space, method=opt.method, bits=opt.bits,
            generator=generator, want_labels=want_bin_labels and rgb is rgb_all, **opt.kmeans,
        )
    if bool(degenerate.any()):
        warnings.warn(
            f"palette: an image has fewer distinct colours than k={opt.k}; "
            "duplicate colours of weight 0 were returned",
            UserWarning,
            stacklevel=3,
        )
    if image.is_floating_point() and image.dtype in (torch.float32, torch.float64):
        colors, wts = colors.to(image.dtype), wts.to(image.dtype)
    pal = Palette(colors.reshape(*batch, opt.k, 3), wts.reshape(*batch, opt.k))
    if want_bin_labels and isinstance(bins, tuple) and opt.bits is not None:
        return pal, BinLabels(rgb_all, bins[0], bins[1], opt.bits)
    return pal, bins if isinstance(bins, Tensor) else None


def palette_of_pixels(
    rgb: Tensor,
    k: int,
    *,
    weights: Tensor | None = None,
    space: str = "lab",
    method: str = "hist",
    bits: int | None = DEFAULT_BITS,
    generator: torch.Generator | None = None,
    want_labels: bool = False,
    **kmeans_kw: Any,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor] | Tensor | None]:
    """Unchecked palette of pixels: one batched k-means for all B images.

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB.
        k: palette size.
        weights: ``[B, P]`` pixel weights or None.
        space, method, bits: as :func:`torchpalette.palette`.
        generator: k-means++ draws.
        **kmeans_kw: k-means options (``tol``, ``n_init``, ``max_iter``).

    Returns:
        ``(colors [B, k, 3] sRGB, weights [B, k] sorted descending and summing to 1,
        degenerate [B] bool (fewer distinct points than k), bins)`` where ``bins`` is
        ``(codes [B, M], labels [B, M])`` for the ``"hist"`` method with fixed ``bits`` (each
        occupied bin's code and palette index, renumbered to the sorted palette); with
        adaptive bits (``bits=None``) and ``want_labels`` the nearest palette colour
        ``[B, P]`` of every pixel in ``space``; else None.
    """
    if method == "hist" and bits is None:
        return _adaptive_palette(rgb, k, weights, space, generator, want_labels, kmeans_kw)
    codes = None
    if method == "hist":
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
    bins = None
    if codes is not None:  # labels of the bins, renumbered to the sorted palette
        bins = (codes, order.argsort(-1).gather(1, res.labels))
    return colors, mass, degenerate, bins


def _adaptive_palette(
    rgb: Tensor, k: int, weights: Tensor | None, space: str,
    generator: torch.Generator | None, want_labels: bool, kmeans_kw: dict[str, Any],
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """:func:`palette_of_pixels` with adaptive bins: every image's exact colours, clustered
    directly or coarse-to-fine (see :data:`DIRECT_COLORS`), each image decided alone."""
    dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    t = color_table(rgb, weights, dtype)
    # uint8 colours are exact levels: converted through the space's uint8 path (a table)
    src = t.colors.mul(255).round_().to(torch.uint8) if rgb.dtype == torch.uint8 else t.colors
    x = to_space_cf(src.transpose(1, 2), space, dtype).transpose(1, 2)  # [B, U, 3]
    w = t.counts
    coarse_x, coarse_w = _coarse_points(t, x)
    direct = (t.distinct <= DIRECT_COLORS) | ((coarse_w > 0).sum(-1) < COARSE_PER_K * k)
    first_x, first_w = coarse_x, coarse_w
    if bool(direct.any()):  # rows of exact colours, as wide as the direct images need
        used = (w > 0) * torch.arange(1, w.shape[1] + 1, device=w.device)
        width = max(t.m, int(used[direct].amax()))
        pad = (0, width - t.m)
        first_x = torch.where(direct.view(-1, 1, 1), x[:, :width],
                              torch.nn.functional.pad(coarse_x, (0, 0, *pad)))
        first_w = torch.where(direct.view(-1, 1), w[:, :width],
                              torch.nn.functional.pad(coarse_w, pad))
    res, _ = cluster(first_x, k, weights=first_w, generator=generator, **kmeans_kw)
    cent = res.centroids
    if not bool(direct.all()):
        tol = kmeans_kw.get("tol", TOL) * FINE_TOL
        cent = refine(x, w, cent, tol, kmeans_kw.get("max_iter", 100), ~direct)
    colors = from_space(cent, space)
    labels = nearest_centroid(to_space(colors, space), x.transpose(1, 2))[0]  # [B, U]
    mass = torch.zeros(w.shape[0], k, dtype=w.dtype, device=w.device).scatter_add_(1, labels, w)
    mass = mass / mass.sum(-1, keepdim=True)
    mass, order = mass.sort(dim=-1, descending=True, stable=True)
    colors = colors.gather(1, order.unsqueeze(-1).expand(-1, -1, 3))
    # colours nothing maps to (fewer colours than k) repeat the heaviest: which point an empty
    # cluster was re-seeded on must not show (it may depend on the batch's padding)
    colors = torch.where(mass.unsqueeze(-1) > 0, colors, colors[:, :1])
    pixel_labels = None
    if want_labels:
        pixel_labels = order.argsort(-1).gather(1, labels).gather(1, t.slot)
    return colors, mass, t.distinct < k, pixel_labels


def _coarse_points(t: ColorTable, x: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean (in the clustering space) and weight of the exact colours ``x [B, U, 3]``
    of each coarse bin: ``[B, M, 3]``, ``[B, M]``."""
    b, m = x.shape[0], t.m
    cw = torch.zeros(b, m, dtype=x.dtype, device=x.device).scatter_add_(1, t.coarse, t.counts)
    cs = torch.zeros(b, m, 3, dtype=x.dtype, device=x.device)
    cs.scatter_add_(1, t.coarse.unsqueeze(-1).expand(-1, -1, 3), x * t.counts.unsqueeze(-1))
    return cs / cw.clamp_min(torch.finfo(x.dtype).tiny).unsqueeze(-1), cw
