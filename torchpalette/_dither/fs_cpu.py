"""Floyd–Steinberg on the CPU: one compiled sequential loop per image (numba), streamed by rows.

The wavefront form of :mod:`torchpalette._dither.fs` runs ``W + 2 H`` steps of small tensor
ops; on the CPU their per-op overhead dominates, so here the plain sequential algorithm is
compiled once (numba, cached on disk) and runs on up to ``torch.get_num_threads()`` threads
with the GIL released. It computes what :func:`torchpalette._dither.fs.floyd_steinberg`
computes, in the same order and the input's dtype, so the labels are the same (up to exact
float ties).

A pixel's step waits for its left neighbour's, so one image leaves most of the core idle;
where a thread has two images or more, one call dithers two, their pixels taking turns, and
the two chains overlap. A uint8 image is read as it is, through a 256-entry table of linear
light (the values :func:`~torchpalette._dither.fs.to_linear` gives the wavefront); a float
image is converted a band of rows at a time. The loop carries the errors it passes on and
one row of values plus received errors, so memory stays near the size of the labels. Each
pixel passes on its error times its strength
(:func:`~torchpalette._dither.strength.pixel_strength`), computed a band at a time by the
compiled :func:`strength_cpu`, equal bit for bit to the tensor function the wavefront uses.

numba is optional: :func:`available` says whether it imported; without it the caller uses
the wavefront path.
"""

from __future__ import annotations

import concurrent.futures

import numpy as np
import torch
from torch import Tensor

from .. import _policy
from .fs import linear_table, to_linear
from .space import Features, palette_coords, srgb_to_linear
from .strength import LUMA_INT, edge_constants, luma_weights

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


def linear_source(src, lut, lane, c, r, x):  # pragma: no cover
    """Linear light of ``src[lane, c, r, x]``: through ``lut`` for uint8, as is for float."""
    return src[lane, c, r, x]


if numba is not None:
    @numba.extending.overload(linear_source, inline="always")
    def _source_overload(src, lut, lane, c, r, x):
        if src.dtype == numba.types.uint8:
            return lambda src, lut, lane, c, r, x: lut[src[lane, c, r, x]]
        return lambda src, lut, lane, c, r, x: src[lane, c, r, x]


def _kernel_py(src, lut, sth, buf, out, r0, r1, oy, first, mt, q, mat, cst,
               space):  # pragma: no cover
    """Dither rows ``r0 .. r1 - 1`` of ``L`` images (lanes) at once. Per lane ``l``:
    ``src[l] [3, R, W]`` (uint8 sRGB read through ``lut [256]``, or linear light; row ``r1``
    if present is the look-ahead), labels to ``out[l] [oy + r - r0, :]`` (int64), ``sth[l]
    [r1 - r0, W]`` the share of its error each pixel passes on
    (:func:`~torchpalette._dither.strength.pixel_strength`), ``buf[l] [W, 3]`` value
    plus received error of row ``r0`` (set from ``src`` if ``first``; left holding row
    ``r1``'s for the next band), ``mt[l] [4, K]`` folded palette (transposed, so the K
    distances vectorize), ``q[l] [K, 3]`` palette in linear light, ``cst[l]`` constants in
    the input's dtype (:func:`constants`); ``mat [3, 3]`` linear light -> the space's
    features, ``space`` a code of :data:`SPACE_CODE`.

    The lanes take turns pixel by pixel, so that their chains of dependent steps overlap in
    the core. The errors a pixel passes on are carried in ``st[l]``: ``a`` (the right
    neighbour's value plus received error), ``b`` and ``p`` (the row below's sums so far at
    ``x + 1`` and ``x``); each position of the row below is written once, into ``buf`` just
    behind the position being read, when its last share (3/16, from ``x + 1``) is in. The
    shares add up in raster order, as in the wavefront."""
    lanes, _, r_all, w = src.shape
    k = mt.shape[2]
    zero, one = cst[0, 0], cst[0, 1]
    dist = np.empty(k, dtype=buf.dtype)
    st = np.empty((lanes, 9), dtype=buf.dtype)
    if first:
        for lane in range(lanes):
            for x in range(w):
                for c in range(3):
                    buf[lane, x, c] = linear_source(src, lut, lane, c, r0, x)
    for r in range(r0, r1):
        below = r + 1 < r_all
        y = oy + r - r0
        for lane in range(lanes):
            for c in range(3):
                st[lane, c] = buf[lane, 0, c]
                st[lane, 3 + c] = linear_source(src, lut, lane, c, r + 1, 0) if below else zero
                st[lane, 6 + c] = zero
        for x in range(w):
            for lane in range(lanes):
                w7, w3, w5, w1 = cst[lane, 10], cst[lane, 11], cst[lane, 12], cst[lane, 13]
                rmax2 = cst[lane, 14]
                s0 = linear_source(src, lut, lane, 0, r, x)
                s1 = linear_source(src, lut, lane, 1, r, x)
                s2 = linear_source(src, lut, lane, 2, r, x)
                v0 = min(max(st[lane, 0], zero), one)
                v1 = min(max(st[lane, 1], zero), one)
                v2 = min(max(st[lane, 2], zero), one)
                d0, d1, d2 = v0 - s0, v1 - s1, v2 - s2
                rr = d0 * d0 + d1 * d1 + d2 * d2
                if rr > rmax2:  # bound the received error: no far-off colour from a run of errors
                    sc = np.sqrt(rmax2 / rr)
                    v0, v1, v2 = s0 + d0 * sc, s1 + d1 * sc, s2 + d2 * sc
                best = nearest_step(v0, v1, v2, mt[lane], mat, cst[lane], space, dist)
                out[lane, y, x] = best
                sx = sth[lane, r - r0, x]  # 0 for invisible pixels: adding zeros changes nothing
                e0 = (v0 - q[lane, best, 0]) * sx
                e1 = (v1 - q[lane, best, 1]) * sx
                e2 = (v2 - q[lane, best, 2]) * sx
                # below first (x - 1 is complete, x and x + 1 take their shares), then right
                if x > 0:
                    buf[lane, x - 1, 0] = st[lane, 6] + e0 * w3
                    buf[lane, x - 1, 1] = st[lane, 7] + e1 * w3
                    buf[lane, x - 1, 2] = st[lane, 8] + e2 * w3
                st[lane, 6] = st[lane, 3] + e0 * w5
                st[lane, 7] = st[lane, 4] + e1 * w5
                st[lane, 8] = st[lane, 5] + e2 * w5
                if x + 1 < w:
                    n0 = linear_source(src, lut, lane, 0, r + 1, x + 1) if below else zero
                    n1 = linear_source(src, lut, lane, 1, r + 1, x + 1) if below else zero
                    n2 = linear_source(src, lut, lane, 2, r + 1, x + 1) if below else zero
                    st[lane, 3], st[lane, 4], st[lane, 5] = n0 + e0 * w1, n1 + e1 * w1, n2 + e2 * w1
                    st[lane, 0] = buf[lane, x + 1, 0] + e0 * w7
                    st[lane, 1] = buf[lane, x + 1, 1] + e1 * w7
                    st[lane, 2] = buf[lane, x + 1, 2] + e2 * w7
        for lane in range(lanes):
            for c in range(3):
                buf[lane, w - 1, c] = st[lane, 6 + c]


_kernel = None if numba is None else numba.njit(cache=True, nogil=True, boundscheck=False,
                                               error_model="numpy")(_kernel_py)


def constants(dtype: torch.dtype, rmax: Tensor) -> np.ndarray:
    """The loop's constants ``[B, 15]`` in the input's dtype (so float32 stays float32, as in
    the wavefront); ``rmax [B]`` the error bound of each image (the strength is per pixel:
    :func:`strength_cpu`)."""
    vals = (0.0, 1.0, 0.008856, 7.787, 1.0 / 3.0, 0.0031308, 1.0 / 2.4, 1.055, 0.055, 12.92,
            7 / 16, 3 / 16, 5 / 16, 1 / 16, 0.0)
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
    cst = constants(dtype, rmax)
    out = torch.empty(b, h, w, dtype=torch.int64)
    band = max(2, _policy.DITHER_BAND // w)
    lut = linear_table(dtype).numpy()
    rgb = rgb.contiguous()
    img = rgb.numpy()
    code = SPACE_CODE[space]
    ce = edge_constants(rgb, dtype, strength).numpy()
    no_vis = np.zeros((0, 0), np.bool_)

    threads = max(1, min(b, torch.get_num_threads()))
    lanes = 2 if b >= 2 * threads else 1  # two images per call where there are enough

    def run(i: int) -> None:  # images i .. i + lanes - 1
        j = min(b, i + lanes)
        o = out[i:j].numpy()
        vis = None if visible is None else visible[i:j].numpy()
        buf = np.empty((j - i, w, 3), dtype=cst.dtype)
        args = (mt[i:j], q[i:j], mat, cst[i:j], code)
        for y0 in range(0, h, band):  # by bands of rows
            y1 = min(h, y0 + band)
            sth = np.stack([strength_cpu(img[n], no_vis if vis is None else vis[n - i], y0, y1,
                                         dtype, ce) for n in range(i, j)])
            if rgb.dtype == torch.uint8:  # read as is, through the table: no copy of the image
                _kernel(rgb[i:j].numpy(), lut, sth, buf, o, y0, y1, y0, y0 == 0, *args)
            else:  # linear light (+ one look-ahead row)
                lin = to_linear(rgb[i:j, :, y0 : min(h, y1 + 1)], dtype).numpy()
                _kernel(lin, lut, sth, buf, o, 0, y1 - y0, y0, y0 == 0, *args)

    if threads == 1:
        for i in range(0, b, lanes):
            run(i)
    else:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(0, b, lanes)))
    return out


def luma(src, lw, y, x):  # pragma: no cover
    """Luma of pixel ``(x, y)`` of one image ``src [3, H, W]`` as
    :func:`~torchpalette._dither.strength.edge_factor` computes it: float sRGB with the
    weights ``lw [3]`` (in its order of operations), uint8 in exact integers."""
    return src[0, y, x] * lw[0] + src[1, y, x] * lw[1] + src[2, y, x] * lw[2]


if numba is not None:
    @numba.extending.overload(luma, inline="always")
    def _luma_overload(src, lw, y, x):
        if src.dtype == numba.types.uint8:
            w0, w1, w2 = LUMA_INT
            return lambda src, lw, y, x: (np.int64(src[0, y, x]) * w0
                                          + np.int64(src[1, y, x]) * w1
                                          + np.int64(src[2, y, x]) * w2)
        return lambda src, lw, y, x: src[0, y, x] * lw[0] + src[1, y, x] * lw[1] + (
            src[2, y, x] * lw[2])


def _strength_py(src, vis, lw, ce, y0, y1, hi, lo, tmp, out, factor_only):  # pragma: no cover
    """:func:`~torchpalette._dither.strength.pixel_strength` (``factor_only``: the edge factor
    alone) of rows ``y0 .. y1 - 1`` of ``src [3, H, W]`` (uint8 or float sRGB) into ``out
    [y1 - y0, W]``, bit for bit: ``vis [H, W]`` bool (empty: all visible), ``lw`` the luma
    weights, ``ce`` :func:`~torchpalette._dither.strength.edge_constants`; ``hi``, ``lo``
    ``[2, rows + 2, W]`` (int64 for uint8, else the dtype; ``rows`` the band and its
    neighbour rows) and ``tmp [1]`` (the dtype) are scratch. The 3x3 maximum and minimum are
    two passes (along rows, then across), hidden pixels never winning."""
    _, h, w = src.shape
    unit, low, span, floor, strength, one, zero = ce[0], ce[1], ce[2], ce[3], ce[4], ce[5], ce[6]
    all_vis = vis.shape[0] == 0
    a, z = max(0, y0 - 1), min(h, y1 + 1)
    for y in range(a, z):
        for x in range(w):
            v = luma(src, lw, y, x)
            hidden = not (all_vis or vis[y, x])
            hi[0, y - a, x] = hi[1, 0, 0] if hidden else v  # hi[1, 0, 0]: the "none" value
            lo[0, y - a, x] = lo[1, 0, 0] if hidden else v
        for x in range(w):  # along the row, into plane 1 from row 1 on
            m0, n0 = hi[0, y - a, x], lo[0, y - a, x]
            if x > 0:
                m0, n0 = max(m0, hi[0, y - a, x - 1]), min(n0, lo[0, y - a, x - 1])
            if x + 1 < w:
                m0, n0 = max(m0, hi[0, y - a, x + 1]), min(n0, lo[0, y - a, x + 1])
            hi[1, y - a + 1, x], lo[1, y - a + 1, x] = m0, n0
    none = hi[1, 0, 0]
    for y in range(y0, y1):
        r = y - a + 1
        for x in range(w):
            m0, n0 = hi[1, r, x], lo[1, r, x]
            if y > a:
                m0, n0 = max(m0, hi[1, r - 1, x]), min(n0, lo[1, r - 1, x])
            if y + 1 < z:
                m0, n0 = max(m0, hi[1, r + 1, x]), min(n0, lo[1, r + 1, x])
            if m0 == none:  # no visible pixel around
                f = one
            else:
                tmp[0] = m0 - n0  # the range in the dtype (rounded as torch's .to)
                f = one - (tmp[0] * unit - low) / span
                f = min(max(f, floor), one)
            if not factor_only:
                f = f * strength
                if not (all_vis or vis[y, x]):
                    f = zero
            out[y - y0, x] = f


_strength = None if numba is None else numba.njit(cache=True, nogil=True, boundscheck=False,
                                                  error_model="numpy")(_strength_py)


def strength_cpu(rgb: np.ndarray, vis: np.ndarray, y0: int, y1: int, dtype: torch.dtype,
                 ce: np.ndarray, factor_only: bool = False) -> np.ndarray:
    """The per-pixel strength (or edge factor) of rows ``y0:y1`` of one image ``rgb [3, H,
    W]`` (numpy uint8 or float sRGB), ``vis [H, W]`` bool (empty: all visible) -> ``[y1 - y0,
    W]`` numpy of ``dtype``, equal to :mod:`torchpalette._dither.strength`'s."""
    nd = np.float32 if dtype == torch.float32 else np.float64
    rows = min(rgb.shape[1], y1 + 1) - max(0, y0 - 1)
    kind = np.int64 if rgb.dtype == np.uint8 else nd
    hi = np.empty((2, rows + 2, rgb.shape[2]), kind)
    lo = np.empty_like(hi)
    big = np.iinfo(np.int64).max // 4 if kind == np.int64 else np.inf
    hi[1, 0, 0], lo[1, 0, 0] = -big, big  # what a hidden pixel holds
    out = np.empty((y1 - y0, rgb.shape[2]), nd)
    lw = luma_weights(dtype).numpy()
    _strength(rgb, vis, lw, ce, y0, y1, hi, lo, np.empty(1, nd), out, factor_only)
    return out
