"""Ordered dithering that mixes any palette colours: Knoll's pattern dithering.

For every pixel a *mixing plan* of ``N`` candidates is built: candidate ``i`` is the palette
colour nearest (in the quantization space) to ``target + mult * error``, where ``error`` is the
sum of ``target - candidate`` over the candidates so far, so the plan's mean approaches the
target as closely as the palette allows, whatever the hues. Targets and errors are in linear
light, where the eye averages neighbouring pixels. The candidates are sorted by luminance and
the pixel takes the one at rank ``floor(threshold * N)``, the threshold read from a tiled
8x8 Bayer matrix; neighbouring pixels thus walk through the plan and their average
reproduces it. A pixel that equals a palette colour gets a plan of that colour only (no
noise in flat areas). Every step is a batched nearest-colour search over all plans of all
images: ``N`` searches in total, no per-pixel loop.

A plan depends only on the colour, so plans are made once per occupied colour bin (6 bits
per channel, 4 sRGB levels wide) for the mean colour of its pixels, in linear light: a photo
has ~25x fewer occupied bins than pixels (about 5x faster end to end), for a small loss on
the blur metric at large k (``benchmarks/RESULTS.md``). A bin of one colour gets exactly
that colour's plan.

References:
    T. Knoll, "Pattern dithering", US patent 6,606,166 (1999).
    J. Yliluoma, "Joel Yliluoma's arbitrary-palette positional dithering algorithm" (2011),
    https://bisqwit.iki.fi/story/howto/dither/jy/ (the pattern-dithering description).
    B. E. Bayer, "An optimum method for two-level rendition of continuous-tone pictures",
    IEEE Int. Conf. on Communications, 1973.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .space import (
    Features,
    feature_buffer,
    first_argmin,
    int_view,
    palette_coords,
    srgb_to_linear,
)

PLAN_SIZE = 16  # candidates per pixel (16 levels of mixing between two colours)
ERROR_MULT = 1.0  # weight of the accumulated error in each candidate's target
BIN_BITS = 6  # plans per colour bin of 4 sRGB levels, for the mean colour of its pixels
_CHUNK = 1 << 22  # most pixel-colour distances alive at once (16 MiB of float32)
_LUMA = (0.2126, 0.7152, 0.0722)  # Rec. 709 luminance of linear sRGB


def bayer(n: int = 8) -> Tensor:
    """``[n, n]`` Bayer index matrix with values ``0 .. n*n - 1`` (n a power of two)."""
    m = torch.zeros(1, 1, dtype=torch.int64)
    while m.shape[0] < n:
        m = torch.cat([torch.cat([4 * m, 4 * m + 2], 1), torch.cat([4 * m + 3, 4 * m + 1], 1)], 0)
    return m


def _threshold_ranks(h: int, w: int, n_plan: int, device: torch.device) -> Tensor:
    """Plan rank ``floor(threshold * N)`` of every pixel ``[H * W]`` from the tiled 8x8 map."""
    b = bayer(8)
    rank = (b * n_plan) // b.numel()
    return rank.repeat((h + 7) // 8, (w + 7) // 8)[:h, :w].reshape(-1).to(device)


def pattern_dither(
    rgb: Tensor, pal: Tensor, space: str, n_plan: int = PLAN_SIZE, mult: float = ERROR_MULT,
    bits: int | None = BIN_BITS,
) -> Tensor:
    """Knoll pattern-dither labels: ``rgb [B, 3, H, W]`` float sRGB, ``pal [B, K, 3]`` float
    sRGB (same dtype) -> ``[B, H, W]`` int64. ``bits``: plans per colour bin (``None``: one
    plan per pixel)."""
    b, _, h, w = rgb.shape
    p, k = h * w, pal.shape[1]
    feat = Features(space, rgb)
    m = feat.fold(palette_coords(pal, space))
    q_tab = srgb_to_linear(pal.transpose(1, 2)).transpose(1, 2).contiguous()  # [B, K, 3]
    # luminance order of the colours: ties (equal luminance) by index, so ranks are unique
    luma = q_tab @ torch.tensor(_LUMA, dtype=q_tab.dtype, device=q_tab.device)  # [B, K]
    by_luma = torch.sort(luma, dim=1, stable=True).indices  # [B, K] rank -> colour
    rank_of = torch.argsort(by_luma, dim=1)  # [B, K] colour -> rank
    lin = srgb_to_linear(rgb.reshape(b, 3, p)).transpose(1, 2)  # [B, P, 3]
    slot = None
    if bits is not None:
        lin, slot = _bin_means(rgb.reshape(b, 3, p), lin, bits)  # [B, M, 3], [B * P]
    ramp = torch.arange(k, dtype=int_view(rgb.dtype), device=rgb.device).view(1, k, 1)
    n = lin.shape[1]
    # sorted plan ranks of every plan; int16 (K <= 32767) keeps a photo of distinct bins small
    ranks = torch.empty(b, n, n_plan, dtype=torch.int16, device=rgb.device)
    step = max(1, _CHUNK // max(1, b * k))
    for s in range(0, n, step):  # chunks bound memory; each chunk covers every image
        plan = _plan(lin[:, s : s + step], q_tab, feat, m, ramp, n_plan, mult)  # [B, n, N]
        ranks[:, s : s + step] = rank_of.gather(1, plan.flatten(1)).view_as(plan).sort(-1).values
    thr = _threshold_ranks(h, w, n_plan, rgb.device)  # [P]
    if slot is None:
        pick = ranks.gather(2, thr.view(1, -1, 1).expand(b, -1, 1)).view(b, p)
    else:
        pick = ranks.view(-1).index_select(0, slot * n_plan + thr.repeat(b)).view(b, p)
    return by_luma.gather(1, pick.long()).view(b, h, w)


def _bin_means(rgb: Tensor, lin: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """Pixels ``rgb [B, 3, P]`` sRGB (``lin [B, P, 3]`` linear) -> the linear-light mean of
    every occupied colour bin ``[B, M, 3]`` (``M`` the most bins of one image, zero-padded)
    and each pixel's flat bin slot ``[B * P]`` into ``[B * M]``. Means are accumulated in
    float64, so a bin of one colour gets exactly that colour (no noise in flat areas)."""
    b, _, p = rgb.shape
    n1 = 1 << bits
    nb = n1 ** 3
    q = (rgb * n1).long().clamp_(0, n1 - 1)  # [B, 3, P]
    code = (q[:, 0] * n1 + q[:, 1]) * n1 + q[:, 2]
    code += torch.arange(b, device=rgb.device).unsqueeze(-1) * nb
    code = code.view(-1)
    cnt = torch.bincount(code, minlength=b * nb).view(b, nb)
    rank = (cnt > 0).cumsum(1)  # [B, nb] 1 + slot of each occupied bin within its image
    mmax = int(rank[:, -1].max())  # one host read, outside any loop
    slot_of_bin = rank - 1 + torch.arange(b, device=rgb.device).unsqueeze(-1) * mmax
    slot = slot_of_bin.view(-1).index_select(0, code)  # [B * P]
    sums = torch.zeros(b * mmax, 3, dtype=torch.float64, device=rgb.device)
    sums.index_add_(0, slot, lin.reshape(-1, 3).double())
    num = torch.zeros(b * mmax, dtype=torch.float64, device=rgb.device)
    num.index_add_(0, slot, torch.ones_like(slot, dtype=torch.float64))
    means = (sums / num.clamp_min(1.0).unsqueeze(-1)).to(lin.dtype)
    return means.view(b, mmax, 3), slot


def _plan(lin, q_tab, feat, m, ramp, n_plan: int, mult: float) -> Tensor:
    """The mixing plans of pixels ``lin [B, n, 3]`` (linear light): ``[B, n, N]`` colour
    indices, candidate ``i`` nearest to ``lin + mult * sum_{j<i} (lin - candidate_j)``."""
    b, n, _ = lin.shape
    err = torch.zeros_like(lin)
    f = feature_buffer(b, n, lin)
    plan = torch.empty(b, n, n_plan, dtype=torch.int64, device=lin.device)
    for i in range(n_plan):
        target = torch.add(lin, err, alpha=mult).clamp_(0.0, 1.0) if i else lin
        feat(target, out=f[..., :3])
        d = torch.bmm(m, f.transpose(1, 2))  # [B, K, n] distances (up to a per-pixel term)
        lab = first_argmin(d, ramp).long()
        plan[..., i] = lab
        err += lin - q_tab.gather(1, lab.unsqueeze(-1).expand(b, n, 3))
    return plan
