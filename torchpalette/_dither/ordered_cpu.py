"""The mixing plans of the ordered dither on the CPU: one compiled loop (numba) per image.

:func:`torchpalette._dither.ordered._plan` builds every plan with ``N`` batched searches; on
the CPU the per-op overhead and the ``[B, K, n]`` distance tables cost more than the sums, so
here each colour bin's plan is built in a compiled loop, in the same order and dtype as the
tensor path (so the two give the same plans, up to the math libraries' ``pow``), and the
plan's palette ranks are sorted in place.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .fs_cpu import SPACE_CODE, available, constants, nearest_step, numba
from .space import Features

__all__ = ["available", "plans_cpu"]


def _plans_py(lin, mt, q, mat, cst, space, scale, rmax, rank_of, out, first):  # pragma: no cover
    """Plans of bins ``lin [M, 3]`` (linear light) -> sorted palette ranks ``out [M, N]`` and
    the first candidate (the bin's nearest colour) ``first [M]`` (int64 colour index):
    candidate ``i`` is the colour nearest to ``lin + off`` with ``off = scale * sum_{j<i}
    (lin - candidate_j)`` pulled back to length ``rmax``. ``mt``, ``q``, ``mat``, ``cst`` and
    ``space`` as in :func:`torchpalette._dither.fs_cpu._kernel_py`."""
    m, n_plan = out.shape
    k = mt.shape[1]
    zero, one = cst[0], cst[1]
    dist = np.empty(k, dtype=lin.dtype)
    plan = np.empty(n_plan, dtype=np.int64)
    for i in range(m):
        l0, l1, l2 = lin[i, 0], lin[i, 1], lin[i, 2]
        e0, e1, e2 = zero, zero, zero
        for s in range(n_plan):
            o0, o1, o2 = e0 * scale, e1 * scale, e2 * scale
            norm = np.sqrt(o0 * o0 + o1 * o1 + o2 * o2)
            if norm > rmax:
                o0, o1, o2 = o0 * (rmax / norm), o1 * (rmax / norm), o2 * (rmax / norm)
            v0 = min(max(l0 + o0, zero), one)
            v1 = min(max(l1 + o1, zero), one)
            v2 = min(max(l2 + o2, zero), one)
            best = nearest_step(v0, v1, v2, mt, mat, cst, space, dist)
            if s == 0:
                first[i] = best
            plan[s] = rank_of[best]
            e0 += l0 - q[best, 0]
            e1 += l1 - q[best, 1]
            e2 += l2 - q[best, 2]
        plan.sort()
        for s in range(n_plan):
            out[i, s] = plan[s]


_plans = None if numba is None else numba.njit(cache=True, nogil=True)(_plans_py)


def plans_cpu(
    lin: Tensor, q: Tensor, feat: Features, m: Tensor, rank_of: Tensor, n_plan: int,
    scale: float, rmax: Tensor,
) -> tuple[Tensor, Tensor]:
    """Sorted plan ranks ``[B, M, N]`` int16 and first candidates ``[B, M]`` int64 (colour
    indices) of bins ``lin [B, M, 3]`` (linear light) for palettes ``q [B, K, 3]`` (linear
    light) folded as ``m [B, K, 4]``; ``rank_of [B, K]`` each colour's luminance rank,
    ``rmax [B]`` the bound of each image's offsets."""
    b, n = lin.shape[:2]
    out = torch.empty(b, n, n_plan, dtype=torch.int16)
    first = torch.empty(b, n, dtype=torch.int64)
    cst = constants(lin.dtype, rmax, 1.0)
    mt = m.transpose(1, 2).contiguous().numpy()
    mat = feat.m.contiguous().numpy()
    rmax_t = rmax.to(lin.dtype).numpy()
    for i in range(b):  # a few images; each loop is compiled
        _plans(lin[i].contiguous().numpy(), mt[i], q[i].contiguous().numpy(), mat, cst[i],
               SPACE_CODE[feat.space], cst.dtype.type(scale), rmax_t[i],
               rank_of[i].contiguous().numpy(), out[i].numpy(), first[i].numpy())
    return out, first
