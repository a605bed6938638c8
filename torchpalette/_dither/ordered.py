"""Ordered dithering that mixes any palette colours: Knoll's pattern dithering.

For every pixel a *mixing plan* of ``N`` candidates is built: candidate ``i`` is the palette
colour nearest (in the quantization space) to ``target + mult * error``, where ``error`` is the
sum of ``target - candidate`` over the candidates so far, so the plan's mean approaches the
target as closely as the palette allows, whatever the hues. Targets and errors are in linear
light, where the eye averages neighbouring pixels. The candidates are sorted by luminance and
the pixel takes the one at the rank read from a tiled 16x16 threshold map; neighbouring pixels
thus walk through the plan and their average reproduces it. A pixel on an edge or in
texture (edge factor below :data:`~torchpalette._dither.strength.EDGE_CUT`) takes the plan's
first candidate, its bin's nearest colour. The map is a product of two 4x4
Latin squares in Bayer's order (``4 P(x mod 4, y mod 4) + P(x div 4, y div 4)``): the coarse
rank changes from pixel to pixel as in a Bayer matrix, and every row and every column of 16
pixels meets all 16 ranks, so even a one-pixel-wide strip mixes two colours in 16 levels (an
8x8 Bayer matrix gives a column only 4 of them). The accumulated error is bounded as in
Floyd–Steinberg (``rmax``), so a plan never reaches for far-off hues. A pixel that equals a
palette colour gets a plan of that colour only (no noise in flat areas). Every step is a
batched nearest-colour search over all plans of all images: ``N`` searches in total, no
per-pixel loop.

A plan depends only on the colour, so plans are made once per occupied colour bin (6 bits
per channel, 4 sRGB levels wide) for the mean colour of its visible pixels, in linear light: a
photo has ~25x fewer occupied bins than pixels (about 5x faster end to end), for a small loss
on the blur metric at large k (``benchmarks/RESULTS.md``). A bin of one colour gets exactly
that colour's plan. The image is read twice by bands of rows (bin sums, then labels), so
memory stays near the size of the labels.

References:
    T. Knoll, "Pattern dithering", US patent 6,606,166 (1999).
    J. Yliluoma, "Joel Yliluoma's arbitrary-palette positional dithering algorithm" (2011),
    https://bisqwit.iki.fi/story/howto/dither/jy/ (the pattern-dithering description).
    B. E. Bayer, "An optimum method for two-level rendition of continuous-tone pictures",
    IEEE Int. Conf. on Communications, 1973.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .. import _policy
from . import ordered_cpu
from .fs import to_linear
from .space import (
    LUMA,
    Features,
    first_argmin,
    int_view,
    palette_coords,
    plain_distances,
    srgb_to_linear,
)
from .strength import EDGE_CUT, edge_factor

PLAN_SIZE = 16  # candidates per pixel (16 levels of mixing between two colours)
ERROR_MULT = 1.0  # weight of the accumulated error in each candidate's target
BIN_BITS = 6  # plans per colour bin of 4 sRGB levels, for the mean colour of its pixels
_CHUNK = 1 << 22  # most pixel-colour distances alive at once (16 MiB of float32)
_GROUP = 16  # images whose colour bins are summed at once
_LATIN = ((0, 2, 1, 3), (3, 1, 2, 0), (1, 3, 0, 2), (2, 0, 3, 1))  # rows and columns: 0..3


def threshold_map(device: torch.device | None = None) -> Tensor:
    """``[16, 16]`` int64 plan ranks 0..15, indexed ``[y, x]``; every row and column holds
    each rank once."""
    p = torch.tensor(_LATIN, device=device)
    y, x = torch.meshgrid(torch.arange(16, device=device), torch.arange(16, device=device),
                          indexing="ij")
    return 4 * p[x % 4, y % 4] + p[x // 4, y // 4]


def pattern_dither(
    rgb: Tensor, pal: Tensor, space: str, *, strength: float, rmax: Tensor,
    visible: Tensor | None = None, n_plan: int = PLAN_SIZE, mult: float = ERROR_MULT,
) -> Tensor:
    """Knoll pattern-dither labels: ``rgb [B, 3, H, W]`` uint8 or float sRGB, ``pal [B, K, 3]``
    float sRGB (the working dtype), ``visible [B, H, W]`` bool or None -> ``[B, H, W]``
    int64. ``strength`` scales the accumulated error of the plans (0: every candidate is the
    nearest colour of the bin's mean); ``rmax [B]`` bounds it."""
    b, _, h, w = rgb.shape
    if b > _GROUP:  # the bins' sums take ~14 MB per image: bound them
        return torch.cat([
            pattern_dither(rgb[i : i + _GROUP], pal[i : i + _GROUP], space, strength=strength,
                           rmax=rmax[i : i + _GROUP], n_plan=n_plan, mult=mult,
                           visible=None if visible is None else visible[i : i + _GROUP])
            for i in range(0, b, _GROUP)])
    k = pal.shape[1]
    feat = Features(space, pal)
    m = feat.fold(palette_coords(pal, space))
    q_tab = srgb_to_linear(pal.transpose(1, 2)).transpose(1, 2).contiguous()  # [B, K, 3]
    # luminance order of the colours: ties (equal luminance) by index, so ranks are unique
    luma = q_tab @ torch.tensor(LUMA, dtype=q_tab.dtype, device=q_tab.device)  # [B, K]
    by_luma = torch.sort(luma, dim=1, stable=True).indices  # [B, K] rank -> colour
    rank_of = torch.argsort(by_luma, dim=1)  # [B, K] colour -> rank
    band = max(1, min(h, _policy.DITHER_BAND // (b * w)))
    scale = mult * strength
    thr = threshold_map(rgb.device)
    if rgb.device.type == "cpu" and ordered_cpu.available():

        def band_codes(i: int, y0: int, y1: int) -> tuple[np.ndarray, np.ndarray]:
            part = rgb[i : i + 1, :, y0:y1]
            return to_linear(part, pal.dtype)[0].numpy(), _codes(part)[0].numpy()

        return ordered_cpu.pattern_dither_cpu(rgb, visible, band, band_codes, q_tab, feat, m,
                                              rank_of, by_luma, thr, n_plan, scale, rmax)
    means, slot_of_bin = _bin_means(rgb, visible, pal.dtype, band)  # [B, M, 3], [B, nb]
    ramp = torch.arange(k, dtype=int_view(pal.dtype), device=rgb.device).view(1, k, 1)
    n = means.shape[1]
    # sorted plan ranks of every plan; int16 (K <= 32767) keeps a photo of distinct bins small
    ranks = torch.empty(b, n, n_plan, dtype=torch.int16, device=rgb.device)
    nearest = torch.empty(b, n, dtype=torch.int64, device=rgb.device)  # first candidates
    step = max(1, _CHUNK // max(1, b * k))
    for s in range(0, n, step):  # chunks bound memory; each chunk covers every image
        plan = _plan(means[:, s : s + step], q_tab, feat, m, ramp, n_plan, scale, rmax)
        plan_ranks = rank_of.gather(1, plan.flatten(1)).view_as(plan)
        ranks[:, s : s + step] = plan_ranks.sort(-1).values
        nearest[:, s : s + step] = plan[..., 0]
    out = torch.empty(b, h, w, dtype=torch.int64, device=rgb.device)
    for y0 in range(0, h, band):  # labels, a band of rows at a time
        y1 = min(h, y0 + band)
        slot = slot_of_bin.gather(1, _codes(rgb[:, :, y0:y1]).reshape(b, -1))  # [B, R * W]
        ys, xs = torch.arange(y0, y1, device=rgb.device), torch.arange(w, device=rgb.device)
        t = thr[ys % 16][:, xs % 16]  # [R, W]
        pick = ranks.view(b, -1).gather(1, slot * n_plan + t.reshape(1, -1))
        lab = by_luma.gather(1, pick.long())
        # on edges (texture, outlines) the bin's nearest colour: no error carried across
        edge = edge_factor(rgb, y0, y1, pal.dtype, visible).reshape(b, -1) < EDGE_CUT
        out[:, y0:y1] = torch.where(edge, nearest.gather(1, slot), lab).view(b, y1 - y0, w)
    return out


def _codes(rgb: Tensor, bits: int = BIN_BITS) -> Tensor:
    """Colour bin of every pixel ``[B, R, W]`` int64 (``bits`` per channel) of uint8 or float
    sRGB ``rgb [B, 3, R, W]``."""
    n1 = 1 << bits
    if rgb.dtype == torch.uint8:
        q = rgb.long() >> (8 - bits)
    else:
        q = (rgb * n1).long().clamp_(0, n1 - 1)
    return (q[:, 0] * n1 + q[:, 1]) * n1 + q[:, 2]


def _bin_means(
    rgb: Tensor, visible: Tensor | None, dtype: torch.dtype, band: int
) -> tuple[Tensor, Tensor]:
    """The linear-light mean of every occupied colour bin's visible pixels ``[B, M, 3]`` (``M``
    the most bins of one image, zero-padded) and each bin's slot ``[B, nb]`` (int64) among
    them, summed a band of rows at a time. Means are accumulated in float64, so a bin of one
    colour gets exactly that colour (no noise in flat areas)."""
    b, _, h, w = rgb.shape
    nb = 1 << (3 * BIN_BITS)
    sums = torch.zeros(3, b * nb, dtype=torch.float64, device=rgb.device)
    num = torch.zeros(b * nb, dtype=torch.float64, device=rgb.device)
    first = torch.arange(b, device=rgb.device).unsqueeze(-1) * nb  # [B, 1]
    for y0 in range(0, h, band):  # bincount: one pass per channel, no [B, nb, 3] scatter
        y1 = min(h, y0 + band)
        code = (_codes(rgb[:, :, y0:y1]).reshape(b, -1) + first).view(-1)
        lin = to_linear(rgb[:, :, y0:y1], dtype).reshape(b, 3, -1).transpose(0, 1)
        wgt = None if visible is None else visible[:, y0:y1].reshape(-1).double()
        num += torch.bincount(code, weights=wgt, minlength=b * nb).double()
        for c in range(3):  # invisible pixels weigh nothing
            val = lin[c].reshape(-1).double()
            sums[c] += torch.bincount(code, weights=val if wgt is None else val * wgt,
                                      minlength=b * nb)
    num = num.view(b, nb)
    occupied = num > 0
    rank = occupied.cumsum(1)  # [B, nb] 1 + slot of each occupied bin within its image
    mmax = max(1, int(rank[:, -1].max()))  # one host read, outside any loop
    slot_of_bin = (rank - 1).clamp_(min=0)  # bins without visible pixels: any slot will do
    where = occupied.view(-1).nonzero().squeeze(1)  # occupied bins, image by image
    means = torch.zeros(b * mmax, 3, dtype=torch.float64, device=rgb.device)
    dest = (where // nb) * mmax + slot_of_bin.view(-1)[where]
    means[dest] = (sums[:, where] / num.view(-1)[where]).T
    return means.view(b, mmax, 3).to(dtype), slot_of_bin


def _plan(lin, q_tab, feat, m, ramp, n_plan: int, mult: float, rmax: Tensor) -> Tensor:
    """The mixing plans of pixels ``lin [B, n, 3]`` (linear light): ``[B, n, N]`` colour
    indices, candidate ``i`` nearest to ``lin + mult * sum_{j<i} (lin - candidate_j)``, that
    offset bounded to ``rmax`` (Euclidean, linear light)."""
    b, n, _ = lin.shape
    rmax = rmax.to(lin.dtype).view(b, 1, 1)
    err = torch.zeros_like(lin)
    plan = torch.empty(b, n, n_plan, dtype=torch.int64, device=lin.device)
    for i in range(n_plan):  # every op as the compiled loop of ordered_cpu does it
        off = err * mult
        norm = (off[..., 0:1] * off[..., 0:1] + off[..., 1:2] * off[..., 1:2]
                + off[..., 2:3] * off[..., 2:3]).sqrt()
        off = torch.where(norm > rmax, off * (rmax / norm), off)  # pulled back to rmax
        target = (lin + off).clamp_(0.0, 1.0)
        lab = first_argmin(plain_distances(feat.plain(target), m), ramp).long()
        plan[..., i] = lab
        err += lin - q_tab.gather(1, lab.unsqueeze(-1).expand(b, n, 3))
    return plan
