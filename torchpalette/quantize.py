"""Colour quantization: map every pixel to a palette colour.

:func:`palette_indices` finds, for each pixel, the index of the nearest palette colour in a
perceptual space (CIELAB by default, or Oklab, or sRGB); :func:`apply_palette` replaces each
pixel by that colour and :func:`reduce_colors` does both after computing the image's own
palette (:func:`torchpalette.palette`). The search is the package's one chunked nearest-colour
search (``torchpalette._nearest``): chunks loop over pixel positions, never over images.

:func:`reduce_colors` chooses how pixels find their colour (``assign``):

* ``"exact"``: the nearest palette colour of every pixel.
* ``"bins"`` (the default on CUDA): every pixel takes the colour of its histogram bin's cluster
  through a per-image look-up table bin -> colour built from the palette's own k-means
  (``torchpalette._bins.recolor_by_bin``), so no distances are computed; about +0.04 mean
  dE00 against ``"exact"`` at k=16 on the benchmark photos (``benchmarks/RESULTS.md``).
* ``"refined"``: the nearest colour of each 5-bit bin's centre through a table, and the exact
  search only for pixels of bins near a decision boundary (+0.005 mean dE00 against
  ``"exact"``).

Dithering (``torchpalette._dither``) mixes palette colours so that the image looks right
from afar: ``"floyd-steinberg"`` diffuses each pixel's error (in linear light) to its
neighbours in raster order, exactly, batched over images in wavefronts; ``"ordered"`` is Knoll's
pattern dithering: a plan of palette colours whose mean approaches the pixel, one of them picked
by a 16x16 threshold map, so it mixes any hues. Dithering implies the per-pixel search (``assign``
``"bins"``/``"refined"`` need ``dither="none"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._bins import recolor_by_bin
from ._dither import dither_labels
from ._image import float_to_uint8, merge_alpha, split_alpha
from ._nearest import search, search_near_boundaries
from ._palette_core import check_options, image_palette
from ._spaces import SPACES, to_space
from ._types import Palette

__all__ = ["apply_palette", "palette_indices", "reduce_colors"]

DITHERS = ("none", "ordered", "floyd-steinberg")
ASSIGNS = ("auto", "exact", "bins", "refined")


def _check_palette(image: Any, pal: Any, space: str, dither: str) -> tuple[Tensor, tuple[int, ...]]:
    v.check_image(image, "image")
    if isinstance(pal, Palette):
        pal = pal.colors
    v.check_colors(pal, "palette", min_ndim=2)
    v.check_choice(space, "space", SPACES)
    v.check_choice(dither, "dither", DITHERS)
    try:
        batch = torch.broadcast_shapes(image.shape[:-3], pal.shape[:-2])
    except RuntimeError:
        batch = None
    if batch is None or tuple(batch) != tuple(image.shape[:-3]):
        raise ValueError(
            f"palette: expected batch dims broadcastable to the image's "
            f"{v.shape_str(image.shape[:-3])}, got shape {v.shape_str(pal.shape)}"
        )
    if pal.device != image.device:
        raise ValueError(f"palette: expected device {image.device}, got {pal.device}")
    return pal, tuple(batch)


def _search(
    rgb: Tensor, pal: Tensor, space: str, dither: str, hw: tuple[int, int], refine: bool = False,
    strength: float = 1.0, alpha: Tensor | None = None,
) -> Tensor:
    """Unchecked nearest-colour search: ``rgb [B, 3, P]`` (uint8 or float sRGB), palette
    ``[B, K, 3]`` sRGB float -> labels ``[B, P]`` int64. Chunked over P, batched over B.
    ``refine`` (no dither): the per-pixel search only near decision boundaries; a ``dither``
    other than ``"none"`` chooses among palette colours with ``torchpalette._dither``
    (``strength`` 0 is no dither; pixels of ``alpha`` 0 influence no other pixel)."""
    b, _, p = rgb.shape
    dtype = torch.float64 if torch.float64 in (rgb.dtype, pal.dtype) else torch.float32
    pal = pal.to(dtype)
    with _policy.single_thread_if_small(rgb, b * p, _policy.SMALL_PIXELS):
        if dither != "none" and strength > 0:
            x = rgb if rgb.dtype == torch.uint8 else rgb.to(dtype)  # uint8: converted by bands
            vis = None if alpha is None else alpha.reshape(b, *hw) > 0
            pal = pal.expand(b, -1, -1).contiguous()
            return dither_labels(x.reshape(b, 3, *hw), pal, dither, space, strength=strength,
                                 visible=vis).reshape(b, p)
        ps = to_space(pal, space).expand(b, -1, -1)  # [B, K, 3]
        pa = torch.cat([ps * -2.0, (ps * ps).sum(-1, keepdim=True)], -1)  # [B, K, 4]
        if refine:
            return search_near_boundaries(rgb, ps, pa, space, dtype)
        return search(rgb, ps, pa, space, dtype)


def palette_indices(
    image: Tensor, palette: Tensor | Palette, *, space: str = "lab", dither: str = "none",
    dither_strength: float = 1.0,
) -> Tensor:
    """Index of the nearest palette colour for every pixel (for indexed images).

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha is ignored.
        palette: ``[..., K, 3]`` sRGB float in [0, 1] (or a :class:`Palette`), batch dims
            broadcastable to the image's.
        space: where "nearest" is measured: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` (pattern dithering, 16x16 threshold map) or
            ``"floyd-steinberg"`` (error diffusion); see the module docstring. Pixels of
            alpha 0 influence no other pixel.
        dither_strength: 0..1, how much of each pixel's error is mixed in (0: no dither,
            1: full dither).

    Returns:
        ``[..., H, W]`` int64 indices into the palette's K colours.

    Raises:
        TypeError: wrong types or dtypes.
        ValueError: bad shapes, NaN, values out of range, unknown ``space``/``dither``,
            palette on another device.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.tensor([[[0.1, 0.9]], [[0.1, 0.9]], [[0.1, 0.9]]])  # [3, 1, 2]
        >>> tp.palette_indices(img, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        tensor([[1, 0]])
    """
    _, labels, _ = _labels(image, palette, space, dither, dither_strength)
    return labels.reshape(*image.shape[:-3], *image.shape[-2:])


def apply_palette(
    image: Tensor, palette: Tensor | Palette, *, space: str = "lab", dither: str = "none",
    dither_strength: float = 1.0,
) -> Tensor:
    """Replace every pixel by its nearest palette colour.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha passes through.
        palette: ``[..., K, 3]`` sRGB float in [0, 1] (or a :class:`Palette`), batch dims
            broadcastable to the image's.
        space: where "nearest" is measured: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` (pattern dithering, 16x16 threshold map) or
            ``"floyd-steinberg"`` (error diffusion); see the module docstring. Pixels of
            alpha 0 influence no other pixel.
        dither_strength: 0..1, how much of each pixel's error is mixed in (0: no dither,
            1: full dither).

    Returns:
        Image of the input's shape and dtype. uint8 output holds exactly the palette
        colours rounded to uint8 (``round(255 c)``), so it maps 1:1 onto palette entries.
        The output is gathered from the palette: a palette that requires grad receives the
        gradient of the pixels that took each colour; the image gets none (the output is
        piecewise constant in it; the layers offer a straight-through estimator). Under
        ``torch.autocast`` the search still runs in float32.

    Raises:
        TypeError: wrong types or dtypes.
        ValueError: bad shapes, NaN, values out of range, unknown ``space``/``dither``.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.tensor([[[10, 200]], [[10, 200]], [[10, 200]]], dtype=torch.uint8)
        >>> tp.apply_palette(img, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))[:, 0]
        tensor([[  0, 255],
                [  0, 255],
                [  0, 255]], dtype=torch.uint8)
    """
    pal, labels, alpha = _labels(image, palette, space, dither, dither_strength)
    out = _gather(pal, labels, image.dtype).reshape(*image.shape[:-3], 3, *image.shape[-2:])
    return merge_alpha(out, alpha)


def _labels(
    image: Tensor, palette: Tensor | Palette, space: str, dither: str, strength: float = 1.0
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Checked nearest-colour search shared by :func:`palette_indices` and
    :func:`apply_palette`: (palette ``[B, K, 3]``, labels ``[B, H*W]``, alpha or None).

    The search runs on detached data without autograd and outside autocast (float32
    distances); the returned palette keeps its autograd history, so an output gathered from it
    sends gradients to the colours used."""
    pal, batch = _check_palette(image, palette, space, dither)
    strength = v.check_unit(strength, "dither_strength")
    h, w = image.shape[-2:]
    rgb, alpha = split_alpha(image)
    rgb = rgb.reshape(-1, 3, h * w)
    pal = torch.broadcast_to(pal, (*batch, *pal.shape[-2:])).reshape(rgb.shape[0], -1, 3)
    with torch.no_grad(), _policy.no_autocast(rgb):
        labels = _search(rgb.detach(), pal.detach(), space, dither, (h, w), strength=strength,
                         alpha=alpha)
    return pal, labels, alpha


def _gather(pal: Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
    """Palette ``[B, K, 3]`` sRGB, labels ``[B, P]`` -> image ``[B, 3, P]`` of ``dtype``."""
    if dtype == torch.uint8:
        pal = float_to_uint8(pal)  # the rounding write_image uses for indexed PNGs
    else:
        pal = pal.to(dtype)
    return pal.transpose(1, 2).gather(2, labels.unsqueeze(1).expand(-1, 3, -1))


def reduce_colors(
    image: Tensor,
    colors: int = 16,
    *,
    space: str = "lab",
    dither: str = "none",
    assign: str = "auto",
    dither_strength: float = 1.0,
    **palette_kw: Any,
) -> Tensor:
    """Reduce each image to its own ``colors``-colour k-means palette.

    :func:`torchpalette.palette` then the nearest-colour search, both in ``space``; all
    images of a batch in one batched pass.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha passes through and
            alpha-0 pixels do not shape the palette.
        colors: palette size (>= 1); ``k=`` is accepted as an alias (the name
            :func:`torchpalette.palette` and the CLI's ``palette -k`` use).
        space: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"`` (see :func:`apply_palette`).
        dither_strength: 0..1, how much of each pixel's error is mixed in.
        assign: how pixels find their colour. ``"exact"``: nearest palette colour per pixel
            (:func:`apply_palette`). ``"bins"``: each pixel takes the colour of its
            histogram bin's cluster through a per-image look-up table (no per-pixel
            distances; about +0.04 mean dE00 at the default 5 bits; needs the ``"hist"``
            method and ``dither="none"``; alpha-0 pixels and, with ``max_pixels``, pixels of
            bins outside the subset take the heaviest colour). ``"refined"``: the nearest
            colour of each 5-bit bin's centre through a look-up table, and the exact search
            for the pixels of bins near a boundary between two colours (about a quarter of a
            photo's pixels at 16 colours; +0.005 mean dE00 against ``"exact"`` on the
            benchmark photos; needs ``dither="none"``). ``"auto"`` (default): where the
            palette found the image's exact colours (adaptive ``bits`` on images with few
            colours, or ``bits=8``; ``dither="none"``, no ``max_pixels``) the nearest colour
            of each exact colour through a look-up table, the labels of ``"exact"`` without a
            per-pixel search; else ``"bins"`` on CUDA where allowed, else ``"exact"``.
        **palette_kw: passed to :func:`torchpalette.palette` (``seed``, ``method``,
            ``max_pixels``, ``bits``, k-means options).

    Returns:
        Image of the input's shape and dtype with at most ``colors`` distinct colours. It
        carries no gradient (piecewise constant in the image; the layers' straight-through
        estimator passes one). Palettes and distances are float32 even under autocast.

    Raises:
        TypeError, ValueError: as :func:`torchpalette.palette` and :func:`apply_palette`;
            ``assign="bins"`` with ``dither`` or ``method="exact"``.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
        >>> out = tp.reduce_colors(img, 4)
        >>> out.shape, out.dtype, len(out[0].flatten(1).unique(dim=1).T) <= 4
        (torch.Size([2, 3, 8, 8]), torch.uint8, True)
        >>> lut = tp.reduce_colors(img, 4, assign="bins")  # look-up table, as on CUDA
        >>> len(lut[1].flatten(1).unique(dim=1).T) <= 4
        True
        >>> ref = tp.reduce_colors(img, 4, assign="refined")  # look-up table + exact near edges
        >>> len(ref[0].flatten(1).unique(dim=1).T) <= 4
        True
    """
    colors = _colors_alias(colors, palette_kw)
    v.check_choice(dither, "dither", DITHERS)
    v.check_choice(assign, "assign", ASSIGNS)
    strength = v.check_unit(dither_strength, "dither_strength")
    method = palette_kw.pop("method", "hist")
    use_bins = _use_bins(image, assign, dither, method, palette_kw.get("max_pixels"),
                         palette_kw.get("bits"))
    v.check_image(image, "image")
    opt = check_options(
        colors, space, palette_kw.pop("max_pixels", None), palette_kw.pop("seed", 0), method,
        palette_kw.pop("bits", None), palette_kw, caller="reduce_colors",
    )
    with torch.no_grad(), _policy.no_autocast(image):  # piecewise constant: no gradient
        out, alpha = _reduce(image.detach(), opt, space, dither, use_bins, assign == "refined",
                             strength)
    return merge_alpha(out.reshape(*image.shape[:-3], 3, *image.shape[-2:]), alpha)


def _colors_alias(colors: Any, palette_kw: dict[str, Any]) -> Any:
    """``k=`` is accepted as an alias of ``colors=`` (the name :func:`torchpalette.palette`
    uses); giving both differently is an error."""
    if "k" not in palette_kw:
        return colors
    k = palette_kw.pop("k")
    if colors != 16 and colors != k:  # 16: the default, i.e. not given
        raise TypeError(f"reduce_colors: got colors={colors!r} and its alias k={k!r}; give one")
    return k


def _reduce(
    image: Tensor, opt: Any, space: str, dither: str, use_bins: bool, refine: bool,
    strength: float = 1.0,
) -> tuple[Tensor, Tensor | None]:
    """Palette and assignment of :func:`reduce_colors` (checked input): (rgb ``[B, 3, P]`` of
    the image's dtype, alpha or None)."""
    pal, binned = image_palette(image, opt, want_bin_labels=use_bins)
    h, w = image.shape[-2:]
    rgb, alpha = split_alpha(image)
    rgb = rgb.reshape(-1, 3, h * w)
    table = pal.colors.reshape(rgb.shape[0], opt.k, 3)
    if binned is None or isinstance(binned, Tensor):  # labels: searched, or looked up by colour
        labels = binned if binned is not None else _search(
            rgb, table, space, dither, (h, w), refine=refine, strength=strength, alpha=alpha)
        return _gather(table, labels, image.dtype), alpha
    table = float_to_uint8(table) if image.dtype == torch.uint8 else table.to(image.dtype)
    with _policy.single_thread_if_small(rgb, rgb.numel() // 3, _policy.SMALL_PIXELS):
        return recolor_by_bin(rgb, binned.codes, binned.labels, table, binned.bits), alpha


def _use_bins(
    image: Any, assign: str, dither: str, method: str, max_pixels: Any, bits: Any = None
) -> bool | str:
    """Whether ``reduce_colors`` maps pixels through the bins' table (see ``assign``); with
    adaptive bits the table holds every exact colour, so ``"auto"`` uses it on any device."""
    bins_ok = dither == "none" and method == "hist"
    if assign == "refined" and dither != "none":
        raise ValueError(
            f"assign: expected 'exact' or 'auto' with dither={dither!r} ('refined' needs "
            "dither='none'), got 'refined'"
        )
    if assign == "bins" and not bins_ok:
        raise ValueError(
            f"assign: expected 'exact' or 'auto' with dither={dither!r}, method={method!r} "
            "('bins' needs dither='none' and method='hist'), got 'bins'"
        )
    if assign == "auto":  # the look-up table on GPUs; on the CPU only where it is exact
        if not bins_ok or max_pixels is not None:
            return False
        if isinstance(image, Tensor) and image.device.type != "cpu":
            return True
        return "exact" if bits is None else False
    return assign == "bins"
