"""The palette steps of the quantizer layers as operators that ``torch.compile`` treats as
opaque, and palettes with a different k per image in one batched k-means.

k-means is data-dependent (a convergence loop with host checks, empty clusters re-seeded,
converged images compacted away), so dynamo cannot trace it into one graph. Registered as
``torch.library`` custom operators with a shape-only fake implementation, the palette steps
stay eager while everything around them (the per-pixel assignment, clamping, the
straight-through estimator) compiles with ``fullgraph=True``; ``k`` is an ``int`` argument,
so a layer compiles once per palette size, and the per-image palette size of
:class:`~torchpalette.nn.RandomColorReduction` is a tensor, so drawing another k never
recompiles.

Per-image k (:func:`palettes_at_k`): every image is clustered at the batch's largest palette
size ``kmax`` with the slots beyond its own k masked out, so a batch of mixed k is one k-means.
k-means++ is greedy, so the first k of ``kmax`` seeds are a k-means++ seeding of k; the Lloyd
steps of the one k-means engine (``torchpalette._kmeans``, with its empty-cluster rule) then move
only an image's own k centroids (the masked ones sit far outside the colour space and never win a
pixel). The palette returned repeats colour 0 in the masked slots, so an image
takes at most its own k colours whatever the assignment.
"""

from __future__ import annotations

import json
import warnings

import torch
from torch import Tensor

from .. import _kmeans, _policy
from .._bins import bin_pixels, recolor_by_bin
from .._image import float_to_uint8, merge_alpha, split_alpha
from .._palette_core import DEFAULT_BITS, TOL, check_options, image_palette
from .._spaces import from_space, to_space
from ..quantize import apply_palette, palette_indices, reduce_colors
from ._base import decode


def _float_of(image: Tensor) -> torch.dtype:
    return torch.float64 if image.dtype == torch.float64 else torch.float32


@torch.library.custom_op("torchpalette::image_palette", mutates_args=())
def image_palette_op(image: Tensor, k: int, space: str, options: str) -> Tensor:
    """Each image's ``k``-colour palette, as :func:`torchpalette.reduce_colors` computes it:
    ``image [B, 3|4, H, W]`` (checked) -> ``[B, k, 3]`` sRGB (float64 for float64 images,
    else float32). ``options``: the palette keywords as JSON (``seed``, ``bits``, ...)."""
    kw = json.loads(options)
    opt = check_options(
        k, space, kw.pop("max_pixels", None), kw.pop("seed", 0), kw.pop("method", "hist"),
        kw.pop("bits", None), kw, caller="ColorQuantizer",  # reduce_colors's default
    )
    with torch.no_grad(), _policy.no_autocast(image):
        colors = image_palette(image, opt)[0].colors
    return colors.reshape(image.shape[0], k, 3).to(_float_of(image))


@image_palette_op.register_fake
def _(image: Tensor, k: int, space: str, options: str) -> Tensor:
    return image.new_empty(image.shape[0], k, 3, dtype=_float_of(image))


@torch.library.custom_op("torchpalette::reduce_at_k", mutates_args=())
def reduce_at_k_op(
    image: Tensor, k: Tensor, space: str, dither: str, seed: int, strength: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Reduce image ``i`` of ``image [B, 3|4, H, W]`` (checked, in [0, 1]) to ``k[i]`` colours
    (``k [B]`` int64; 0 leaves the image unchanged) in one batched call -> (image of the
    input's shape and dtype, degenerate ``[B]`` bool: fewer distinct colours than k);
    ``strength`` is the dither's ``dither_strength``.

    When every reduced image has the same k this is :func:`torchpalette.reduce_colors`;
    otherwise :func:`palettes_at_k` and each pixel takes its colour bin's cluster colour (the
    ``assign="bins"`` look-up table; with ``dither="ordered"`` the per-pixel search)."""
    out = image.clone()
    degenerate = torch.zeros(image.shape[0], dtype=torch.bool, device=image.device)
    k = k.to(image.device)
    (idx,) = (k > 0).nonzero(as_tuple=True)
    if idx.numel() == 0:
        return out, degenerate
    sub, ks = image.index_select(0, idx), k.index_select(0, idx)
    kmin, kmax = (int(t) for t in torch.aminmax(ks))
    with torch.no_grad(), _policy.no_autocast(image):
        if kmin == kmax:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                reduced = reduce_colors(sub, kmax, space=space, dither=dither, seed=seed,
                                        dither_strength=strength)
            degenerate[idx] = bool(caught)
        else:
            reduced, deg = _reduce_mixed(sub, ks, kmax, space, dither, seed, strength)
            degenerate[idx] = deg
    return out.index_copy_(0, idx, reduced.to(out.dtype)), degenerate


@reduce_at_k_op.register_fake
def _(
    image: Tensor, k: Tensor, space: str, dither: str, seed: int, strength: float = 1.0
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(image), image.new_empty(image.shape[0], dtype=torch.bool)


@torch.library.custom_op("torchpalette::palette_indices", mutates_args=())
def palette_indices_op(
    image: Tensor, palette: Tensor, space: str, dither: str, strength: float = 1.0
) -> Tensor:
    """:func:`torchpalette.palette_indices` as an opaque operator: ``image [B, 3|4, H, W]``,
    ``palette [B|1, K, 3]`` -> ``[B, H, W]`` int64 (``strength``: ``dither_strength``).
    Dithering is sequential (error diffusion) or chunked by data-dependent plans, which dynamo
    cannot trace into one graph."""
    with torch.no_grad():
        return palette_indices(image, palette, space=space, dither=dither,
                               dither_strength=strength)


@palette_indices_op.register_fake
def _(image: Tensor, palette: Tensor, space: str, dither: str, strength: float = 1.0) -> Tensor:
    return image.new_empty(image.shape[0], *image.shape[-2:], dtype=torch.int64)


def apply_palette_traceable(
    image: Tensor, palette: Tensor, space: str, dither: str, strength: float = 1.0
) -> Tensor:
    """:func:`torchpalette.apply_palette` (``image [..., 3|4, H, W]``, ``palette [..., K, 3]``,
    ``strength`` its ``dither_strength``) in a form ``torch.compile`` and ``torch.export``
    take whole: the search traced (no dither) or the opaque :func:`palette_indices_op`
    (dither), then a gather from the palette (which keeps its gradient)."""
    if dither == "none" or not torch.compiler.is_compiling():
        return apply_palette(image, palette, space=space, dither=dither,
                             dither_strength=strength)
    rgb, alpha = split_alpha(image)
    flat = rgb.reshape(-1, *rgb.shape[-3:])
    pal = palette.reshape(-1, *palette.shape[-2:])
    if pal.shape[0] != 1:
        pal = torch.broadcast_to(palette, (*rgb.shape[:-3], *palette.shape[-2:]))
        pal = pal.reshape(-1, *palette.shape[-2:])
    idx = palette_indices_op(flat, pal.detach(), space, dither, strength)
    idx = idx.reshape(rgb.shape[:-3] + rgb.shape[-2:])
    return merge_alpha(decode(idx, palette, image.dtype), alpha)


def _reduce_mixed(
    image: Tensor, k: Tensor, kmax: int, space: str, dither: str, seed: int, strength: float
) -> tuple[Tensor, Tensor]:
    """Images ``[B, 3|4, H, W]`` each to its own ``k [B]`` colours (see :func:`reduce_at_k_op`)."""
    b, _, h, w = image.shape
    rgb, alpha = split_alpha(image)
    rgb = rgb.reshape(b, 3, h * w)
    weights = None if alpha is None else (alpha.reshape(b, -1) > 0).float()
    colors, codes, labels, degenerate = palettes_at_k(rgb, weights, k, kmax, space, seed)
    if dither != "none":
        out = apply_palette(image[:, :3], colors, space=space, dither=dither,
                            dither_strength=strength).reshape(rgb.shape)
    else:
        table = float_to_uint8(colors) if image.dtype == torch.uint8 else colors.to(image.dtype)
        with _policy.single_thread_if_small(rgb, b * h * w, _policy.SMALL_PIXELS):
            out = recolor_by_bin(rgb, codes, labels, table, DEFAULT_BITS)
    return merge_alpha(out.reshape(b, 3, h, w), alpha), degenerate


def palettes_at_k(
    rgb: Tensor,
    weights: Tensor | None,
    k: Tensor,
    kmax: int,
    space: str = "lab",
    seed: int = 0,
    *,
    bits: int = DEFAULT_BITS,
    max_iter: int = 100,
    tol: float = TOL,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A ``k[i]``-colour palette of every image in one batched k-means (see the module
    docstring), on the binned pixels as :func:`torchpalette.palette`'s ``"hist"`` method.

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB.
        weights: ``[B, P]`` pixel weights (alpha > 0) or None.
        k: ``[B]`` int64 palette size of each image, 1 <= k <= kmax.
        kmax: slots of the returned palettes.
        space, seed, bits, max_iter, tol: as :func:`torchpalette.palette`.

    Returns:
        ``(colors [B, kmax, 3] sRGB with colour 0 repeated beyond k[i], codes [B, M] of the
        occupied bins, labels [B, M] their palette index, degenerate [B] bool: fewer distinct
        colour bins than k[i])``.
    """
    with _policy.single_thread_if_small(rgb, rgb.shape[0] * rgb.shape[-1], _policy.SMALL_PIXELS), \
            _policy.ieee_fp32():  # k-means products: no TF32
        return _palettes_at_k(rgb, weights, k, kmax, space, seed, bits, max_iter, tol)


def _palettes_at_k(
    rgb: Tensor, weights: Tensor | None, k: Tensor, kmax: int, space: str, seed: int,
    bits: int, max_iter: int, tol: float,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    pts, w, codes = bin_pixels(rgb, weights, bits)
    x = to_space(pts, space)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    w = w.to(x.dtype)
    valid = torch.arange(kmax, device=x.device) < k.view(-1, 1)  # [B, kmax]
    distinct = (w > 0).sum(-1)
    cent = _kmeans.seed(x, w, kmax, torch.Generator().manual_seed(seed))
    cent = _kmeans.refine(x, w, cent, tol, max_iter, valid=valid)
    labels = _kmeans.nearest(x, cent, valid)
    colors = from_space(cent, space)
    colors = torch.where(valid.unsqueeze(-1), colors, colors[:, :1])
    return colors, codes, labels, distinct < k
