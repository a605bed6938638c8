"""Floyd–Steinberg on the CPU: one compiled sequential loop per image (numba), streamed by rows.

The wavefront form of :mod:`torchpalette._dither.fs` runs ``W + 2 H`` steps of small tensor
ops; on the CPU their per-op overhead dominates, so here the plain sequential algorithm is
compiled once (numba, cached on disk) and runs one image per thread with the GIL released.
It computes what :func:`torchpalette._dither.fs.floyd_steinberg` computes, in the same order
and the input's dtype, so the labels are the same (up to exact float ties).

The image is converted to linear light a band of rows at a time and the loop carries only
the row being dithered and the next one, so memory stays near the size of the labels.

numba is optional: :func:`available` says whether it imported; without it the caller uses
the wavefront path.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import torch
from torch import Tensor

from .. import _policy
from .fs import to_linear
from .space import Features, palette_coords, srgb_to_linear
from .strength import pixel_strength

try:  # optional: the torch wavefront path serves where numba is missing
    import numba
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None  # type: ignore[assignment]

SPACE_CODE = {"lab": 0, "oklab": 1, "srgb": 2}


def available() -> bool:
    """Whether the compiled kernel can run (numba imported)."""
    return numba is not None


def _nearest_py(v0, v1, v2, mt, mat, cst, space, dist):  # pragma: no cover
    """Index of the palette colour nearest to the linear-light colour ``(v0, v1, v2)``: its
    features in the space (``mat``, ``cst``, ``space`` as in :func:`_kernel_py`), then the
    folded distances ``mt [4, K]`` into ``dist [K]``; ties take the first. The one search of
    both compiled dithers, in the wavefront's order of operations."""
    zero, thr, slope, third, gthr, inv24, a1, a0, g_slope = (
        cst[0], cst[2], cst[3], cst[4], cst[5], cst[6], cst[7], cst[8], cst[9])
    if space == 2:
        f0 = (max(v0, gthr) ** inv24) * a1 - a0 + min(v0 - gthr, zero) * g_slope
        f1 = (max(v1, gthr) ** inv24) * a1 - a0 + min(v1 - gthr, zero) * g_slope
        f2 = (max(v2, gthr) ** inv24) * a1 - a0 + min(v2 - gthr, zero) * g_slope
    else:
        t0 = mat[0, 0] * v0 + mat[0, 1] * v1 + mat[0, 2] * v2
        t1 = mat[1, 0] * v0 + mat[1, 1] * v1 + mat[1, 2] * v2
        t2 = mat[2, 0] * v0 + mat[2, 1] * v1 + mat[2, 2] * v2
        if space == 0:
            f0 = max(t0, thr) ** third + min(t0 - thr, zero) * slope
            f1 = max(t1, thr) ** third + min(t1 - thr, zero) * slope
            f2 = max(t2, thr) ** third + min(t2 - thr, zero) * slope
        else:
            f0 = max(t0, zero) ** third
            f1 = max(t1, zero) ** third
            f2 = max(t2, zero) ** third
    k = dist.shape[0]
    for j in range(k):
        dist[j] = mt[0, j] * f0 + mt[1, j] * f1 + mt[2, j] * f2 + mt[3, j]
    best, bd = 0, dist[0]
    for j in range(1, k):
        if dist[j] < bd:
            best, bd = j, dist[j]
    return best


# inlined into both loops (no call in the inner loop)
nearest_step = None if numba is None else numba.njit(inline="always", cache=True)(_nearest_py)


def _kernel_py(lin, st, cur, out, y0, mt, q, mat, cst, space, last):  # pragma: no cover
    """Dither the rows of one band of one image. ``lin [3, R, W]`` linear light (the last row
    is only a look-ahead unless ``last``), ``st [R, W]`` the share of its error each pixel
    passes on (:func:`~torchpalette._dither.strength.pixel_strength`), ``cur [W + 2, 3]``
    value plus received error of the band's first row (updated in place for the next band),
    ``out [H, W]`` int64 labels (rows ``y0 ..``), ``mt [4, K]`` folded palette (transposed, so
    the K distances vectorize), ``q [K, 3]`` palette in linear light, ``mat [3, 3]`` linear
    light -> the space's features, ``cst`` constants in the input's dtype
    (:func:`constants`), ``space`` a code of :data:`SPACE_CODE`."""
    _, r_all, w = lin.shape
    k = mt.shape[1]
    zero, one = cst[0], cst[1]
    w7, w3, w5, w1, rmax2 = cst[10:15]
    rows = r_all if last else r_all - 1
    nxt = np.empty_like(cur)
    dist = np.empty(k, dtype=lin.dtype)
    for r in range(rows):
        for x in range(w + 2):
            for c in range(3):
                nxt[x, c] = lin[c, r + 1, x - 1] if 0 < x <= w and r + 1 < r_all else zero
        for x in range(w):
            s0, s1, s2 = lin[0, r, x], lin[1, r, x], lin[2, r, x]
            v0 = min(max(cur[x + 1, 0], zero), one)
            v1 = min(max(cur[x + 1, 1], zero), one)
            v2 = min(max(cur[x + 1, 2], zero), one)
            d0, d1, d2 = v0 - s0, v1 - s1, v2 - s2
            rr = d0 * d0 + d1 * d1 + d2 * d2
            if rr > rmax2:  # bound the received error: no far-off colour from a run of errors
                sc = np.sqrt(rmax2 / rr)
                v0, v1, v2 = s0 + d0 * sc, s1 + d1 * sc, s2 + d2 * sc
            best = nearest_step(v0, v1, v2, mt, mat, cst, space, dist)
            out[y0 + r, x] = best
            sx = st[r, x]
            e0 = (v0 - q[best, 0]) * sx
            e1 = (v1 - q[best, 1]) * sx
            e2 = (v2 - q[best, 2]) * sx
            # below first, then right: the order in which raster order adds them
            nxt[x, 0] += e0 * w3
            nxt[x, 1] += e1 * w3
            nxt[x, 2] += e2 * w3
            nxt[x + 1, 0] += e0 * w5
            nxt[x + 1, 1] += e1 * w5
            nxt[x + 1, 2] += e2 * w5
            nxt[x + 2, 0] += e0 * w1
            nxt[x + 2, 1] += e1 * w1
            nxt[x + 2, 2] += e2 * w1
            cur[x + 2, 0] += e0 * w7
            cur[x + 2, 1] += e1 * w7
            cur[x + 2, 2] += e2 * w7
        cur[:, :] = nxt


_kernel = None if numba is None else numba.njit(cache=True, nogil=True)(_kernel_py)


def constants(dtype: torch.dtype, rmax: Tensor, strength: float) -> np.ndarray:
    """The loop's constants ``[B, 16]`` in the input's dtype (so float32 stays float32, as in
    the wavefront); ``rmax [B]`` the error bound of each image."""
    vals = (0.0, 1.0, 0.008856, 7.787, 1.0 / 3.0, 0.0031308, 1.0 / 2.4, 1.055, 0.055, 12.92,
            7 / 16, 3 / 16, 5 / 16, 1 / 16, 0.0, strength)
    cst = torch.tensor(vals, dtype=dtype).repeat(rmax.shape[0], 1)
    cst[:, 14] = rmax.to(dtype) * rmax.to(dtype)  # squared in the dtype, as the wavefront
    return cst.numpy()


def floyd_steinberg_cpu(
    rgb: Tensor, pal: Tensor, space: str, strength: float, rmax: Tensor,
    visible: Tensor | None = None,
) -> Tensor:
    """Labels ``[B, H, W]`` int64 of ``rgb [B, 3, H, W]`` (uint8, or float sRGB of ``pal``'s
    dtype), ``pal [B, K, 3]`` float sRGB, ``visible [B, H, W]`` bool or None. Images run on
    up to ``torch.get_num_threads()`` threads."""
    b, _, h, w = rgb.shape
    dtype = pal.dtype
    feat = Features(space, pal)
    mt = feat.fold(palette_coords(pal, space)).transpose(1, 2).contiguous().numpy()
    q = srgb_to_linear(pal.transpose(1, 2)).transpose(1, 2).contiguous().numpy()
    mat = feat.m.contiguous().numpy()
    cst = constants(dtype, rmax, strength)
    out = torch.empty(b, h, w, dtype=torch.int64)
    band = max(2, _policy.DITHER_BAND // w)

    def linear(i: int, y0: int, y1: int) -> Tensor:
        return to_linear(rgb[i : i + 1, :, y0:y1], dtype)[0]

    def one(i: int) -> None:
        o = out[i].numpy()
        cur = np.zeros((w + 2, 3), dtype=cst.dtype)
        for y0 in range(0, h, band):
            y1 = min(h, y0 + band)
            lin = linear(i, y0, min(h, y1 + 1)).numpy()
            if y0 == 0:
                cur[1 : w + 1] = lin[:, 0].T
            st = pixel_strength(rgb[i : i + 1], y0, y1, dtype, strength,
                                None if visible is None else visible[i : i + 1])[0].numpy()
            _kernel(lin, st, cur, o, y0, mt[i], q[i], mat, cst[i], SPACE_CODE[space], y1 == h)

    threads = max(1, min(b, torch.get_num_threads()))
    if threads == 1:
        for i in range(b):
            one(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(b)))
    return out
