"""Floyd–Steinberg error diffusion, batched, in wavefronts (the GPU path; the CPU's compiled
loop, :mod:`torchpalette._dither.fs_cpu`, computes the same labels).

Pixels are visited in raster order (left to right, top to bottom); each pixel takes the palette
colour nearest (in the quantization space) to its value plus the errors it has received, and
passes its own error ``s * (value - colour)`` on: 7/16 to the right, 3/16 below left,
5/16 below, 1/16 below right, ``s`` the pixel's strength
(:func:`torchpalette._dither.strength.pixel_strength`: ``dither_strength`` times its edge
factor, so edges and texture carry less error). Errors live in linear light, where mixing
colours is physical.
The value is clamped to [0, 1], as Pillow does, and the received error is bounded: where
``|value - source| > rmax`` (Euclidean, linear light) the value is pulled back to that
distance from the source pixel. Without the bound a palette that cannot reach a colour (dark
saturated hues at small k) lets the error grow until far-off hues appear (libimagequant scales
large errors down for the same reason). ``rmax`` follows the palette's spacing (the median
distance between neighbouring colours, :func:`torchpalette._dither.labels.error_bound`): the
error needed to mix neighbouring colours passes, a run of errors past it does not. Pixels
marked invisible (alpha 0) pass no error on, so what hides under them never shows.

Pixel ``(x, y)`` depends only on ``(x - 1, y)`` and the three pixels above it, so every pixel
with the same ``t = x + 2 y`` can be computed at once: ``W + 2 (H - 1)`` fronts, each a handful
of batched tensor ops over all images of the batch and all pixels of the front. The image lives
in a skewed buffer ``S[B, T + 3, H + 1, 3]`` (``T`` fronts) with pixel ``(x, y)`` at
``S[:, x + 2 y, y]``: a front is one contiguous slice, and the four neighbours of a front's
pixels are the same rows of the next front (7/16) and the next rows of the next three fronts
(3, 5, 1/16), so diffusion is two strided adds, with no index tables. Images are processed
in bands of rows (the band's last buffer row holds the next band's first row, so its errors
add up in raster order), which bounds memory on any image size.

Every product and sum is a separate op in the compiled loop's order (no fused multiply-add, no
BLAS), so the two paths agree bit for bit except where the math libraries' ``pow`` differ.

References:
    R. W. Floyd and L. Steinberg, "An adaptive algorithm for spatial greyscale",
    Proc. Society for Information Display 17(2), 1976.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from .. import _policy
from .space import (
    Features,
    first_argmin,
    int_view,
    palette_coords,
    plain_distances,
    srgb_to_linear,
)
from .strength import pixel_strength

_W_BELOW = (3.0 / 16.0, 5.0 / 16.0, 1.0 / 16.0)  # below left, below, below right
_W_RIGHT = 7.0 / 16.0


@functools.lru_cache(maxsize=16)
def _fronts(h: int, w: int) -> tuple[tuple[tuple[int, int], ...], Tensor]:
    """Row range ``(y0, y1)`` of every front ``t = x + 2 y`` and the permutation from
    front order to raster order ``[H * W]`` (on the CPU; cached per size)."""
    ranges: list[tuple[int, int]] = []
    order: list[int] = []
    for t in range(w + 2 * (h - 1)):
        y0, y1 = max(0, (t - w + 2) // 2), min(h - 1, t // 2) + 1
        ranges.append((y0, y1))
        order.extend(y * w + t - 2 * y for y in range(y0, y1))
    inv = torch.empty(h * w, dtype=torch.int64)
    inv[torch.tensor(order, dtype=torch.int64)] = torch.arange(h * w)
    return tuple(ranges), inv


def _skewed(s: Tensor, rows: int, w: int) -> Tensor:
    """The view ``[B, rows, W, C]`` of a skewed buffer with pixel ``(x, y)`` at ``[:, x + 2 y,
    y]``."""
    st = s.stride()
    return s.as_strided((s.shape[0], rows, w, s.shape[-1]), (st[0], 2 * st[1] + st[2], st[1], 1),
                        s.storage_offset())


def to_linear(rgb: Tensor, dtype: torch.dtype) -> Tensor:
    """uint8 or float sRGB ``[B, 3, R, W]`` -> linear light ``[B, 3, R, W]`` of ``dtype`` (the
    conversion both Floyd–Steinberg paths use, so they start from the same values)."""
    b, _, r, w = rgb.shape
    if rgb.dtype == torch.uint8:  # a table of the 256 values: the same numbers, no pow per pixel
        return linear_table(dtype, rgb.device)[rgb.long()]
    return srgb_to_linear(rgb.to(dtype).reshape(b, 3, r * w)).view(b, 3, r, w)


def linear_table(dtype: torch.dtype, device: torch.device | None = None) -> Tensor:
    """``[256]`` linear light of the 8-bit sRGB levels in ``dtype``: what :func:`to_linear`
    gives a uint8 image (the compiled loops read it directly)."""
    return srgb_to_linear(torch.arange(256, dtype=dtype, device=device).div_(255.0)
                          .expand(1, 3, 256))[0, 0]


def floyd_steinberg(
    rgb: Tensor, pal: Tensor, space: str, strength: float, rmax: Tensor,
    visible: Tensor | None = None,
) -> Tensor:
    """Floyd–Steinberg labels: ``rgb [B, 3, H, W]`` uint8 or float sRGB, ``pal [B, K, 3]``
    float sRGB (the working dtype), ``rmax [B]`` the error bound of each image, ``visible
    [B, H, W]`` bool or None -> ``[B, H, W]`` int64."""
    b, _, h, w = rgb.shape
    feat = Features(space, pal)
    m = feat.fold(palette_coords(pal, space))  # [B, K, 4]
    q = srgb_to_linear(pal.transpose(1, 2)).transpose(1, 2).contiguous()  # [B, K, 3]
    out = torch.empty(b, h, w, dtype=torch.int64, device=rgb.device)
    band = max(1, min(h, _policy.DITHER_BAND // (b * (w + 2))))
    carry = None  # value plus received error of the next band's first row [B, W, 3]
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        r = y1 - y0
        lin = to_linear(rgb[:, :, y0 : min(h, y1 + 1)], pal.dtype).permute(0, 2, 3, 1)
        shape = (b, w + 2 * r + 1, r + 1)
        s = lin.new_zeros(*shape, 3)
        _skewed(s, lin.shape[1], w).copy_(lin)  # the band and the next band's first row
        if carry is not None:
            _skewed(s, 1, w).copy_(carry.unsqueeze(1))
        src = lin.new_zeros(*shape, 3)
        _skewed(src, r, w).copy_(lin[:, :r])
        st = lin.new_zeros(*shape, 1)  # each pixel's share of its error passed on
        _skewed(st, r, w).copy_(pixel_strength(rgb, y0, y1, pal.dtype, strength,
                                               visible).unsqueeze(-1))
        ranges, inv = _fronts(r, w)
        labs = _run(s, src, st, ranges, feat, m, q, rmax)
        out[:, y0:y1] = torch.cat(labs, 1).index_select(1, inv.to(rgb.device)).view(b, r, w)
        carry = _skewed(s, r + 1, w)[:, r].clone()
    return out


def _run(s, src, st, ranges, feat, m, q, rmax: Tensor) -> list[Tensor]:
    """The front loop over one band: for each front (a slice ``s[:, t]`` of the skewed buffer),
    bounded value, nearest colour and error diffusion; returns the labels of every front
    ``[B, n_t]`` (int64) in order."""
    b, k = m.shape[:2]
    wb = torch.tensor(_W_BELOW, dtype=s.dtype, device=s.device).view(1, 3, 1, 1)
    ramp = torch.arange(k, dtype=int_view(s.dtype), device=s.device).view(1, k, 1)
    rmax = rmax.to(s.dtype).view(b, 1)
    rmax2 = rmax * rmax
    labs = []
    for t, (y0, y1) in enumerate(ranges):
        v = s[:, t, y0:y1].clamp(0.0, 1.0)  # [B, n, 3] value plus received error
        x = src[:, t, y0:y1]
        d = v - x
        rr = d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1] + d[..., 2] * d[..., 2]
        big = (rr > rmax2).unsqueeze(-1)
        v = torch.where(big, x + d * torch.sqrt(rmax2 / rr).unsqueeze(-1), v)
        lab = first_argmin(plain_distances(feat.plain(v), m), ramp).long()  # [B, n]
        e = (v - q.gather(1, lab.unsqueeze(-1).expand(b, -1, 3))) * st[:, t, y0:y1]
        # below first, then right: the order in which raster order adds them to a pixel
        s[:, t + 1 : t + 4, y0 + 1 : y1 + 1] += e.unsqueeze(1) * wb
        s[:, t + 1, y0:y1] += e * _W_RIGHT
        labs.append(lab)
    return labs
