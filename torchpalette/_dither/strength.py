"""Where the dithers mix colours: a strength per pixel, full in smooth areas, low on edges.

Dithering pays off where the image is smooth: a gradient between two palette colours is
rebuilt from a mix of both. On an edge or in texture the image itself masks the palette's
steps, and an error carried across an edge lands on pixels of another colour, where it picks
far-off colours (a saturated pixel next to a dark one). So, as libimagequant does, each pixel
dithers at ``dither_strength`` times an *edge factor*: 1 where the range of luma over its 3x3
neighbourhood is at most :data:`EDGE_LOW`, falling linearly to :data:`EDGE_FLOOR` at
:data:`EDGE_HIGH` and beyond (luma ``Y' = 0.2126 R' + 0.7152 G' + 0.0722 B'`` of the sRGB
values, on a 0..100 scale). Floyd–Steinberg scales each pixel's error by it; the ordered
dither gives pixels whose factor is below :data:`EDGE_CUT` their nearest colour. Pixels of
alpha 0 count neither as a neighbour nor as a source of error, so what hides under them never
changes a visible pixel.

The thresholds were chosen on ``benchmarks/bench_dither.py``: on photos at k = 4 the share of
pixels more than 20 CIEDE2000 from their source fell from 3.3 % to 2.3 % (pngquant 2.5 %) for
+0.17 on the blur metric (+0.07 at k = 16); smooth gradients do not change.

The compiled CPU loops compute the same numbers in one pass per band
(:func:`torchpalette._dither.fs_cpu.strength_cpu`, from :func:`edge_constants`), bit for
bit: uint8 luma is an exact integer (weights x 10000), and every float step follows the
order of operations here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .space import LUMA

EDGE_LOW = 4.0  # 3x3 luma range (0..100) up to which a pixel dithers at full strength
EDGE_HIGH = 16.0  # ... and from which at EDGE_FLOOR
EDGE_FLOOR = 0.2
EDGE_CUT = 0.5  # the ordered dither: a pixel below this factor takes its nearest colour
LUMA_INT = tuple(round(w * 10000) for w in LUMA)  # the luma weights x 10000, for uint8 images


def edge_factor(
    rgb: Tensor, y0: int, y1: int, dtype: torch.dtype, visible: Tensor | None = None
) -> Tensor:
    """The edge factor of rows ``y0:y1`` of ``rgb [B, 3, H, W]`` (uint8 or float sRGB) ->
    ``[B, y1 - y0, W]`` of ``dtype`` in [:data:`EDGE_FLOOR`, 1]; ``visible [B, H, W]`` bool or
    None (invisible pixels are no one's neighbours). Reads one row above and below the band."""
    h = rgb.shape[2]
    a, z = max(0, y0 - 1), min(h, y1 + 1)
    if rgb.dtype == torch.uint8:  # exact integer luma, 10000 x 255 units (no float pass)
        x = rgb[:, :, a:z].to(torch.int32)
        lum = x[:, 0] * LUMA_INT[0] + x[:, 1] * LUMA_INT[1] + x[:, 2] * LUMA_INT[2]
        unit, floor = 100.0 / (255.0 * 10000.0), float(-(1 << 30))
    else:
        x = rgb[:, :, a:z].to(dtype)
        lum = x[:, 0] * LUMA[0] + x[:, 1] * LUMA[1] + x[:, 2] * LUMA[2]
        unit, floor = 100.0, float("-inf")
    hi, lo = lum, -lum
    if visible is not None:  # hidden pixels never win a max
        hidden = ~visible[:, a:z]
        hi, lo = hi.masked_fill(hidden, floor), lo.masked_fill(hidden, floor)
    rng = (_max3x3(hi, floor) + _max3x3(lo, floor))[:, y0 - a : y1 - a]  # max - min over 3x3
    f = 1.0 - (rng.to(dtype) * unit - EDGE_LOW) / (EDGE_HIGH - EDGE_LOW)
    return f.clamp_(EDGE_FLOOR, 1.0)  # no visible pixel around: -inf range, factor 1


def _max3x3(x: Tensor, floor: float) -> Tensor:
    """Max over each 3x3 neighbourhood of ``x [B, R, W]`` (outside pixels, padded with
    ``floor``, never win), as two passes of element-wise maxima (``max_pool2d`` with stride 1
    is ~10x slower on the CPU)."""
    p = F.pad(x, (1, 1, 1, 1), value=floor)
    h = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(h[:, :-2], h[:, 1:-1]), h[:, 2:])


def edge_constants(rgb: Tensor, dtype: torch.dtype, strength: float) -> Tensor:
    """``[unit, EDGE_LOW, EDGE_HIGH - EDGE_LOW, EDGE_FLOOR, strength, 1, 0]`` in ``dtype``, the
    numbers :func:`edge_factor` and :func:`pixel_strength` compute with, for the compiled CPU
    loops that compute the same factors (``unit``: luma units per range unit)."""
    unit = 100.0 / (255.0 * 10000.0) if rgb.dtype == torch.uint8 else 100.0
    return torch.tensor([unit, EDGE_LOW, EDGE_HIGH - EDGE_LOW, EDGE_FLOOR, strength, 1.0, 0.0],
                        dtype=dtype)


def luma_weights(dtype: torch.dtype) -> Tensor:
    """The luma weights ``[3]`` in ``dtype`` (float images; uint8 ones use integers)."""
    return torch.tensor(LUMA, dtype=dtype)


def pixel_strength(
    rgb: Tensor, y0: int, y1: int, dtype: torch.dtype, strength: float,
    visible: Tensor | None = None,
) -> Tensor:
    """How much of its error each pixel of rows ``y0:y1`` passes on in Floyd–Steinberg:
    ``strength`` times :func:`edge_factor`, 0 for invisible pixels -> ``[B, y1 - y0, W]`` of
    ``dtype`` (both Floyd–Steinberg paths multiply the error by it, so they agree)."""
    st = edge_factor(rgb, y0, y1, dtype, visible).mul_(strength)
    if visible is not None:
        st.masked_fill_(~visible[:, y0:y1], 0.0)
    return st
