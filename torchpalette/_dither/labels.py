"""Dithering: palette indices that mix palette colours so that the image looks right from afar.

One entry point, :func:`dither_labels`, for ``apply_palette`` / ``reduce_colors`` / the
layers / the command line. Two methods, both batched over images and exact on any device:

* ``"floyd-steinberg"`` (:mod:`torchpalette._dither.fs`): classic error diffusion in raster
  order, errors in linear light, computed in wavefronts (``W + 2 (H - 1)`` steps of batched
  tensor ops); the labels equal the sequential algorithm's.
* ``"ordered"`` (:mod:`torchpalette._dither.ordered`): Knoll's pattern dithering: a plan of
  16 palette colours whose mean approaches the pixel's colour (one plan per 6-bit colour
  bin), one of them chosen by an 8x8 Bayer threshold map. Mixes any hues, fully parallel, no
  noise where a pixel already equals a palette colour.

Both are selective (:mod:`torchpalette._dither.strength`): a pixel on an edge or in texture
dithers less (Floyd–Steinberg passes on less of its error; the ordered dither gives it its
nearest colour), as libimagequant does, so errors carried across edges do not pick far-off
colours. In both, "nearest" is measured in the quantization space (``"lab"``, ``"oklab"`` or
``"srgb"``). Quality and speed against Pillow, pngquant and libimagequant are measured by
``benchmarks/bench_dither.py`` (figures in ``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validate as v
from . import fs_cpu
from .fs import floyd_steinberg
from .ordered import pattern_dither
from .space import SPACES, srgb_to_linear

METHODS = ("floyd-steinberg", "ordered")
_MAX_K = 32767  # the ordered dither stores its plans as int16 palette ranks
#: The largest error (Euclidean, linear light) a pixel may carry, as a multiple of the
#: palette's spacing (:func:`error_bound`), chosen on the blur metric and the share of far-off
#: pixels of ``benchmarks/bench_dither.py``.
BOUND = 1.0


def error_bound(palette: Tensor) -> Tensor:
    """``[B]``: :data:`BOUND` times the median distance (linear light) from each palette colour
    to its nearest other colour. Errors that large are needed to mix neighbouring colours;
    larger ones only pull in far-off hues. ``inf`` (no bound) for one colour."""
    q = srgb_to_linear(palette.transpose(1, 2)).transpose(1, 2)  # [B, K, 3]
    if q.shape[1] == 1:
        return q.new_full((q.shape[0],), float("inf"))
    d = torch.cdist(q, q) + torch.diag(q.new_full((q.shape[1],), float("inf")))
    return d.amin(2).median(1).values * BOUND


def dither_labels(
    rgb: Tensor, palette: Tensor, method: str, space: str, *, strength: float = 1.0,
    visible: Tensor | None = None,
) -> Tensor:
    """Dithered palette index of every pixel.

    The caller validates the values (range, NaN); this checks only shapes, dtypes and
    names, which needs no read-back from the device.

    Args:
        rgb: ``[B, 3, H, W]`` uint8, or float32/float64 sRGB in [0, 1].
        palette: ``[B, K, 3]`` float sRGB in [0, 1] (one palette per image).
        method: ``"floyd-steinberg"`` or ``"ordered"``.
        space: where "nearest" is measured: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        strength: 0..1, how much of the error is mixed in (0: the nearest colour of each
            pixel, 1: full dithering), times each pixel's edge factor.
        visible: ``[B, H, W]`` bool or None; invisible pixels (alpha 0) influence no other
            pixel.

    Returns:
        ``[B, H, W]`` int64 indices into each image's K colours. Computed in float64 if
        either input is float64, else float32.

    Raises:
        TypeError: non-tensor or non-float inputs, non-string names.
        ValueError: wrong shapes, batch sizes that differ, different devices, unknown
            ``method`` or ``space``, ``strength`` outside [0, 1].

    Note:
        Floyd–Steinberg: R. W. Floyd and L. Steinberg, Proc. SID 17(2), 1976 (weights 7/16,
        3/16, 5/16, 1/16, raster order, no serpentine). Pattern dithering: T. Knoll, US patent
        6,606,166; B. E. Bayer, IEEE ICC 1973.

    Example:
        >>> import torch
        >>> from torchpalette._dither import dither_labels
        >>> ramp = torch.linspace(0, 1, 8).expand(1, 3, 2, 8)  # black -> white
        >>> pal = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
        >>> labels = dither_labels(ramp, pal, "floyd-steinberg", "lab")
        >>> labels.shape, labels.dtype, labels[0, :, 0].tolist(), labels[0, :, -1].tolist()
        (torch.Size([1, 2, 8]), torch.int64, [0, 0], [1, 1])
    """
    v.check_choice(method, "method", METHODS)
    v.check_choice(space, "space", SPACES)
    strength = v.check_unit(strength, "strength")
    for x, name in ((rgb, "rgb"), (palette, "palette")):
        v.check_tensor(x, name)
        ok = (torch.float32, torch.float64) + ((torch.uint8,) if name == "rgb" else ())
        if x.dtype not in ok:
            want = "uint8, float32 or float64" if name == "rgb" else "float32 or float64"
            raise TypeError(f"{name}: expected dtype {want}, got {x.dtype}")
    if rgb.ndim != 4 or rgb.shape[1] != 3 or 0 in rgb.shape:
        raise ValueError(f"rgb: expected shape [B, 3, H, W], got {v.shape_str(rgb.shape)}")
    b, _, h, w = rgb.shape
    if palette.ndim != 3 or palette.shape[-1] != 3 or palette.shape[0] != b or not (
        1 <= palette.shape[1] <= _MAX_K
    ):
        raise ValueError(
            f"palette: expected shape [{b}, K, 3] (1 <= K <= {_MAX_K}), got "
            f"{v.shape_str(palette.shape)}"
        )
    if visible is not None and (visible.shape != (b, h, w) or visible.dtype != torch.bool):
        raise ValueError(f"visible: expected a bool tensor of shape [{b}, {h}, {w}], got "
                         f"{visible.dtype} {v.shape_str(visible.shape)}")
    for t, name in ((palette, "palette"), (visible, "visible")):
        if t is not None and t.device != rgb.device:
            raise ValueError(f"{name}: expected device {rgb.device}, got {t.device}")
    dtype = palette.dtype if rgb.dtype == torch.uint8 else torch.promote_types(rgb.dtype,
                                                                             palette.dtype)
    rgb = rgb if rgb.dtype == torch.uint8 else rgb.to(dtype)
    palette = palette.to(dtype).contiguous()
    with torch.no_grad():
        rmax = error_bound(palette)
        if method == "ordered":
            return pattern_dither(rgb, palette, space, strength=strength, rmax=rmax,
                                  visible=visible)
        if rgb.device.type == "cpu" and fs_cpu.available():
            return fs_cpu.floyd_steinberg_cpu(rgb, palette, space, strength, rmax, visible)
        return floyd_steinberg(rgb, palette, space, strength, rmax, visible)
