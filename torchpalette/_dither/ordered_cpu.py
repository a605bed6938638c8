"""The ordered dither on the CPU: compiled loops (numba), one image per thread.

:func:`torchpalette._dither.ordered.pattern_dither` sums the colour bins in dense ``[B,
2**18]`` tables (a bincount per channel), builds every plan with ``N`` batched searches and
gathers the labels; on the CPU the dense tables, the per-op overhead and the ``[B, K, n]``
distance tables cost more than the work. Here each image takes three compiled passes:

* :func:`_bins_py`: the bin of every pixel, a table ``first [2**18]`` from bin to its entry
  in a list of the bins met (in order of appearance), and the sums per entry, band by band
  (per-band partial sums added to the totals, the order of the tensor path's bincounts, so
  the float64 means are the same numbers);
* :func:`_plans_py`: each occupied bin's plan, in the same order and dtype as the tensor path
  (so the two give the same plans, up to the math libraries' ``pow``), its palette ranks
  sorted in place;
* :func:`_labels_py`: each pixel's rank from its bin's plan and the threshold map (an edge
  pixel: the plan's first candidate, its bin's nearest colour).

The occupied bins are numbered in bin order, as the tensor path numbers them, so that even
a pixel in a bin without visible pixels takes the same plan.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .fs import linear_table
from .fs_cpu import (
    SPACE_CODE,
    available,
    constants,
    linear_source,
    nearest_step,
    numba,
    strength_cpu,
)
from .space import Features
from .strength import EDGE_CUT, edge_constants

__all__ = ["available", "pattern_dither_cpu"]

_NBINS = 1 << 18  # 6 bits per channel (ordered.BIN_BITS)
_LANES = 2  # bins whose plans are built together (measured: 2 as fast as 4 or 8)


def _code_py(src, codes, r, x):  # pragma: no cover
    """The colour bin of pixel ``(x, r)``: from the uint8 ``src [1, 3, R, W]`` itself, else
    ``codes [R, W]``."""
    return codes[r, x]


if numba is not None:
    @numba.extending.overload(_code_py, inline="always")
    def _code_overload(src, codes, r, x):
        if src.dtype == numba.types.uint8:
            return lambda src, codes, r, x: (
                ((np.int64(src[0, 0, r, x]) >> 2) << 12)
                | ((np.int64(src[0, 1, r, x]) >> 2) << 6) | (np.int64(src[0, 2, r, x]) >> 2))
        return lambda src, codes, r, x: codes[r, x]


def _bins_py(src, lut, codes, vis, vy, first, found, count, tot, num, part, pnum, mark,
             band):  # pragma: no cover
    """Add one band of rows to the bin sums. ``src [1, 3, R, W]`` uint8 (read through ``lut``)
    or linear light with ``codes [R, W]``, ``vis [H, W]`` bool from row ``vy`` (empty: all
    visible). ``first [2**18]`` int64 entry of each bin met (-1: none yet), ``found [n]`` the
    bin of each entry, ``count [1]`` the entries so far; ``tot [n, 3]``, ``num [n]`` float64
    sums and visible counts; ``part``, ``pnum``, ``mark`` the band's partial sums and the
    band each entry was last reset in (``band``, a running number)."""
    _, _, rows, w = src.shape
    n = count[0]
    seen = np.empty(rows * w, dtype=np.int64)  # entries met in this band
    m = 0
    all_vis = vis.shape[0] == 0
    for r in range(rows):
        for x in range(w):
            c = _code_py(src, codes, r, x)
            i = first[c]
            if i < 0:
                i = n
                first[c] = i
                found[i] = c
                tot[i, 0] = tot[i, 1] = tot[i, 2] = 0.0
                num[i] = 0.0
                mark[i] = -1
                n += 1
            if mark[i] != band:
                mark[i] = band
                part[i, 0] = part[i, 1] = part[i, 2] = 0.0
                pnum[i] = 0.0
                seen[m] = i
                m += 1
            if all_vis or vis[vy + r, x]:  # invisible pixels weigh nothing
                pnum[i] += 1.0
                part[i, 0] += np.float64(linear_source(src, lut, 0, 0, r, x))
                part[i, 1] += np.float64(linear_source(src, lut, 0, 1, r, x))
                part[i, 2] += np.float64(linear_source(src, lut, 0, 2, r, x))
    for j in range(m):
        i = seen[j]
        tot[i, 0] += part[i, 0]
        tot[i, 1] += part[i, 1]
        tot[i, 2] += part[i, 2]
        num[i] += pnum[i]
    count[0] = n


def _labels_py(src, codes, first, slot_of, ranks, nearest, edge, by_luma, thr, y0,
               out):  # pragma: no cover
    """Labels of one band: rows ``y0 ..`` of ``out [H, W]`` (int64) from the bins of ``src``
    / ``codes`` (as in :func:`_bins_py`): the colour at the rank of the threshold map ``thr
    [16, 16]`` in the plan ``ranks [M, N]`` of the bin's slot ``slot_of[first[bin]]``, or,
    where ``edge [R, W]`` (an edge pixel), the plan's first candidate ``nearest [M]``."""
    _, _, rows, w = src.shape
    for r in range(rows):
        y = y0 + r
        for x in range(w):
            s = slot_of[first[_code_py(src, codes, r, x)]]
            if edge[r, x]:
                out[y, x] = nearest[s]
            else:
                out[y, x] = by_luma[ranks[s, thr[y & 15, x & 15]]]


def _need_py(src, codes, first, edge, need):  # pragma: no cover
    """Mark ``need[entry]`` for the bins of ``src`` / ``codes`` (one band, as in
    :func:`_bins_py`) that hold a pixel off the edges (``edge [R, W]`` False): only those read
    more of their plan than its first candidate."""
    _, _, rows, w = src.shape
    for r in range(rows):
        for x in range(w):
            if not edge[r, x]:
                need[first[_code_py(src, codes, r, x)]] = True


def _plans_py(lin, mt, q, mat, cst, space, scale, rmax, rank_of, out, nearest, todo,
              rest):  # pragma: no cover
    """Plans of bins ``lin [M, 3]`` (linear light) -> sorted palette ranks ``out [M, N]`` and
    the first candidate (the colour nearest to the bin's mean) ``nearest [M]`` (int64):
    candidate ``i`` is the colour nearest to ``lin + off`` with ``off = scale * sum_{j<i}
    (lin - candidate_j)`` pulled back to length ``rmax``. ``mt``, ``q``, ``mat``, ``cst`` and
    ``space`` as in :func:`torchpalette._dither.fs_cpu._kernel_py`. Only the bins ``todo``
    get whole plans; the bins ``rest`` (all their pixels on edges) only their first candidate
    (the rows of ``out`` left unset are never read). :data:`_LANES` bins are built step by
    step together: their chains of dependent searches overlap in the core."""
    m, n_plan = out.shape
    k = mt.shape[1]
    zero, one = cst[0], cst[1]
    dist = np.empty(k, dtype=lin.dtype)
    for r in rest:  # the first step of a plan: no error yet
        v0 = min(max(lin[r, 0] + zero, zero), one)
        v1 = min(max(lin[r, 1] + zero, zero), one)
        v2 = min(max(lin[r, 2] + zero, zero), one)
        nearest[r] = nearest_step(v0, v1, v2, mt, mat, cst, space, dist)
    err = np.empty((_LANES, 3), dtype=lin.dtype)
    rows = np.empty(_LANES, dtype=np.int64)
    nt = todo.shape[0]
    for i in range(0, nt, _LANES):
        for a in range(_LANES):
            rows[a] = todo[min(i + a, nt - 1)]  # past the end: the last bin again (same result)
            err[a, 0] = err[a, 1] = err[a, 2] = zero
        for s in range(n_plan):
            for a in range(_LANES):
                r = rows[a]
                l0, l1, l2 = lin[r, 0], lin[r, 1], lin[r, 2]
                e0, e1, e2 = err[a, 0], err[a, 1], err[a, 2]
                o0, o1, o2 = e0 * scale, e1 * scale, e2 * scale
                norm = np.sqrt(o0 * o0 + o1 * o1 + o2 * o2)
                if norm > rmax:
                    o0, o1, o2 = o0 * (rmax / norm), o1 * (rmax / norm), o2 * (rmax / norm)
                v0 = min(max(l0 + o0, zero), one)
                v1 = min(max(l1 + o1, zero), one)
                v2 = min(max(l2 + o2, zero), one)
                best = nearest_step(v0, v1, v2, mt, mat, cst, space, dist)
                out[r, s] = rank_of[best]
                if s == 0:
                    nearest[r] = best
                err[a, 0] = e0 + (l0 - q[best, 0])
                err[a, 1] = e1 + (l1 - q[best, 1])
                err[a, 2] = e2 + (l2 - q[best, 2])
        for a in range(_LANES):  # insertion sort of each plan's ranks (N is small)
            r = rows[a]
            for s in range(1, n_plan):
                v = out[r, s]
                t = s - 1
                while t >= 0 and out[r, t] > v:
                    out[r, t + 1] = out[r, t]
                    t -= 1
                out[r, t + 1] = v


_jit = None if numba is None else numba.njit(cache=True, nogil=True, boundscheck=False,
                                            error_model="numpy")
_plans = None if _jit is None else _jit(_plans_py)
_bins = None if _jit is None else _jit(_bins_py)
_labels = None if _jit is None else _jit(_labels_py)
_need = None if _jit is None else _jit(_need_py)


def pattern_dither_cpu(
    rgb: Tensor, visible: Tensor | None, band: int, band_codes: Callable[[int, int, int],
    tuple[np.ndarray, np.ndarray]], q: Tensor, feat: Features, m: Tensor, rank_of: Tensor,
    by_luma: Tensor, thr: Tensor, n_plan: int, scale: float, rmax: Tensor,
) -> Tensor:
    """Ordered-dither labels ``[B, H, W]`` int64 of ``rgb [B, 3, H, W]`` (uint8, or float
    sRGB; then ``band_codes(i, y0, y1)`` gives image ``i``'s rows as linear light ``[3, R,
    W]`` and bins ``[R, W]``), bands of ``band`` rows as the tensor path sums them; palettes
    ``q [B, K, 3]`` (linear light, the working dtype) folded as ``m [B, K, 4]``, ``rank_of
    [B, K]`` / ``by_luma [B, K]`` each colour's luminance rank and its inverse, ``thr [16,
    16]`` the threshold map, ``rmax [B]`` the bound of each image's offsets. Images run on up
    to ``torch.get_num_threads()`` threads."""
    b, _, h, w = rgb.shape
    dtype = q.dtype
    out = torch.empty(b, h, w, dtype=torch.int64)
    cst = constants(dtype, rmax)
    mt = m.transpose(1, 2).contiguous().numpy()
    mat = feat.m.contiguous().numpy()
    qn, rank_n, luma_n = q.contiguous().numpy(), rank_of.contiguous().numpy(), by_luma.numpy()
    rmax_t = rmax.to(dtype).numpy()
    thr_n = thr.to(torch.int64).contiguous().numpy()
    lut = linear_table(dtype).numpy()
    uint8 = rgb.dtype == torch.uint8
    rgb = rgb.contiguous()
    vis_all = np.zeros((0, 0), np.bool_) if visible is None else visible.contiguous().numpy()
    img = rgb.numpy()
    ce = edge_constants(rgb, dtype, 1.0).numpy()
    no_codes = np.zeros((0, 0), np.int64)
    cap = min(_NBINS, h * w)

    def one(i: int) -> None:
        vis = vis_all if visible is None else vis_all[i]
        first = np.full(_NBINS, -1, dtype=np.int64)
        found = np.empty(cap, dtype=np.int64)
        tot, part = np.empty((cap, 3)), np.empty((cap, 3))
        num, pnum = np.empty(cap), np.empty(cap)
        mark = np.empty(cap, dtype=np.int64)
        count = np.zeros(1, dtype=np.int64)
        edge = np.empty((h, w), dtype=np.bool_)  # pixels that take their bin's nearest colour
        need = np.zeros(cap, dtype=np.bool_)
        for k, y0 in enumerate(range(0, h, band)):
            y1 = min(h, y0 + band)
            edge[y0:y1] = strength_cpu(img[i], vis, y0, y1, dtype, ce, factor_only=True) < EDGE_CUT
            if uint8:
                src, codes = rgb[i : i + 1, :, y0:y1].numpy(), no_codes
            else:
                lin, codes = band_codes(i, y0, y1)
                src = lin[None]
            _bins(src, lut, codes, vis, y0, first, found, count, tot, num, part, pnum, mark, k)
            _need(src, codes, first, edge[y0:y1], need)
        n = int(count[0])
        occ = num[:n] > 0
        order = np.sort(found[:n][occ])  # the occupied bins in bin order: their slots
        # a bin without visible pixels takes the slot before it (the tensor path's rule)
        slot_of = np.maximum(np.searchsorted(order, found[:n], side="right") - 1, 0)
        means = np.zeros((max(1, order.size), 3), dtype=cst.dtype)
        if order.size:
            sel = first[order]
            means[:] = tot[sel] / num[sel][:, None]
        ranks = np.empty((means.shape[0], n_plan), dtype=np.int16)
        nearest = np.empty(means.shape[0], dtype=np.int64)
        whole = np.zeros(means.shape[0], dtype=np.bool_)  # plans read past their first entry
        whole[slot_of[np.flatnonzero(need[:n])]] = True
        _plans(means, mt[i], qn[i], mat, cst[i], SPACE_CODE[feat.space], cst.dtype.type(scale),
               rmax_t[i], rank_n[i], ranks, nearest, np.flatnonzero(whole),
               np.flatnonzero(~whole))
        o = out[i].numpy()
        for y0 in range(0, h, band):
            y1 = min(h, y0 + band)
            if uint8:
                _labels(rgb[i : i + 1, :, y0:y1].numpy(), no_codes, first, slot_of, ranks,
                        nearest, edge[y0:y1], luma_n[i], thr_n, y0, o)
            else:
                lin, codes = band_codes(i, y0, y1)
                _labels(lin[None], codes, first, slot_of, ranks, nearest, edge[y0:y1],
                        luma_n[i], thr_n, y0, o)

    threads = max(1, min(b, torch.get_num_threads()))
    if threads == 1:
        for i in range(b):
            one(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(b)))
    return out
