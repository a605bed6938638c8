"""Floyd–Steinberg error diffusion, batched and exact, in wavefronts.

Pixels are visited in raster order (left to right, top to bottom, no serpentine); each pixel
takes the palette colour nearest (in the quantization space) to its value plus the errors it
has received, and passes its own error ``value - colour`` on: 7/16 to the right, 3/16 below
left, 5/16 below, 1/16 below right. Errors live in linear light, where mixing colours is
physical: on the blur metric of ``benchmarks/bench_dither.py`` it beats diffusing in the
quantization space. Values are clamped to [0, 1] before the search, as Pillow does, so a run
of out-of-gamut errors cannot grow without bound.

Pixel ``(x, y)`` depends only on ``(x - 1, y)`` and the three pixels above it, so every pixel
with the same ``t = x + 2 y`` can be computed at once: ``W + 2 (H - 1)`` fronts, each a
handful of batched tensor ops over all images of the batch and all pixels of the front.
The image lives in a skewed buffer ``S[B, T + 3, H + 1, 3]`` (``T`` fronts) with pixel
``(x, y)`` at ``S[:, x + 2 y, y]``: a front is one contiguous slice, and the four neighbours
of a front's pixels are the same rows of the next front (7/16) and the next rows of the next
three fronts (3, 5, 1/16), so diffusion is two in-place strided adds, with no index tables.
The buffer holds ``(W + 2 H) / W`` times the image's pixels (3x for a square image). The
loop has no host synchronisation, so it runs unchanged on a GPU.

The labels equal those of the plain sequential algorithm (the tests compare them) except
where two palette colours are at equal distance up to float rounding (the errors a pixel
receives are added in raster order, as the reference does).

References:
    R. W. Floyd and L. Steinberg, "An adaptive algorithm for spatial greyscale",
    Proc. Society for Information Display 17(2), 1976.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ._dither_space import (
    Features,
    feature_buffer,
    first_argmin,
    int_view,
    palette_coords,
    srgb_to_linear,
)

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


def _skew(img: Tensor, h: int, w: int) -> Tensor:
    """``[B, H, W, 3]`` -> skewed buffer ``[B, W + 2 H + 1, H + 1, 3]``: pixel ``(x, y)`` at
    ``[:, x + 2 y, y]``, zeros elsewhere (padding that absorbs errors leaving the image)."""
    b = img.shape[0]
    s = img.new_zeros(b, w + 2 * (h - 1) + 3, h + 1, 3)
    st = s.stride()
    s.as_strided((b, h, w, 3), (st[0], 2 * st[1] + st[2], st[1], 1)).copy_(img)
    return s


def floyd_steinberg(rgb: Tensor, pal: Tensor, space: str, diffuse: str = "linear") -> Tensor:
    """Floyd–Steinberg labels: ``rgb [B, 3, H, W]`` float sRGB, ``pal [B, K, 3]`` float sRGB
    (same dtype) -> ``[B, H, W]`` int64. ``diffuse``: ``"linear"`` (errors in linear light)
    or ``"space"`` (errors in the quantization space; kept for the benchmark's comparison)."""
    b, _, h, w = rgb.shape
    ranges, inv = _fronts(h, w)
    px = rgb.permute(0, 2, 3, 1).reshape(b, h * w, 3)
    pal_s = palette_coords(pal, space)
    if diffuse == "linear":
        feat = Features(space, rgb)
        x = srgb_to_linear(px.transpose(1, 2)).transpose(1, 2)
        q_tab = srgb_to_linear(pal.transpose(1, 2)).transpose(1, 2)  # [B, K, 3] linear light
        m = feat.fold(pal_s)
    else:
        feat = None
        x, q_tab = palette_coords(px, space), pal_s
        m = torch.cat([-2.0 * pal_s, pal_s.square().sum(-1, keepdim=True)], -1)
    s = _skew(x.reshape(b, h, w, 3), h, w)
    clamp = diffuse == "linear" or space == "srgb"
    labs = _run(s, ranges, feat, m, q_tab.contiguous(), clamp)
    return torch.cat(labs, 1).index_select(1, inv.to(rgb.device)).view(b, h, w)


def _run(s: Tensor, ranges, feat, m: Tensor, q_tab: Tensor, clamp: bool):
    """The front loop: for each front (a slice ``s[:, t]`` of the skewed buffer), nearest colour
    and error diffusion; returns the labels of every front ``[B, n_t]`` (int64) in order."""
    b, k = m.shape[:2]
    wb = torch.tensor(_W_BELOW, dtype=s.dtype, device=s.device).view(1, 3, 1, 1)
    ramp = torch.arange(k, dtype=int_view(s.dtype), device=s.device).view(1, k, 1)
    buf = feature_buffer(b, max(y1 - y0 for y0, y1 in ranges), s)  # features and a 1
    labs = []
    for t, (y0, y1) in enumerate(ranges):
        v = s[:, t, y0:y1]  # [B, n, 3] value plus received error
        if clamp:
            v = v.clamp(0.0, 1.0)
        f = buf[:, : y1 - y0]
        if feat is None:
            f[..., :3] = v
        else:
            feat(v, out=f[..., :3])
        d = torch.bmm(m, f.transpose(1, 2))  # [B, K, n] distances (up to a per-pixel term)
        lab = first_argmin(d, ramp).long()  # [B, n]
        e = v - q_tab.gather(1, lab.unsqueeze(-1).expand(b, -1, 3))
        # below first, then right: the order in which raster order adds them to a pixel
        s[:, t + 1 : t + 4, y0 + 1 : y1 + 1].addcmul_(e.unsqueeze(1), wb)
        s[:, t + 1, y0:y1].add_(e, alpha=_W_RIGHT)
        labs.append(lab)
    return labs
