"""CIEDE2000 kernels (Sharma, Wu & Dalal 2005) and the gradient-safe helpers of ``difference``.

Three formulations of one formula, chosen by :func:`torchpalette.delta_e`:

- :func:`ciede2000`: functional and differentiable (used when an input requires grad): square
  roots and ``atan2`` are "safe", so gradients stay finite at greys and identical colours.
- :func:`ciede2000_inplace`: forward-only, on chunks of pairs that stay in the CPU cache, every
  step written into a few reused buffers (``out=``, ``mul_``, ``addcmul_``), no ``where`` and no
  comparisons (the slow elementwise ops on CPU): the branches of the formula are written with
  ``trunc``/``floor``/``sign`` arithmetic instead. Hues are in radians here.
- :func:`ciede2000_rows`: the function handed to ``torch.compile`` (``fast=True``).

Notation follows Sharma et al.: C', h', ΔH', S_L, S_C, S_H, R_T.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

__all__ = ["safe_sqrt", "hue_deg", "ciede2000", "ciede2000_rows", "ciede2000_inplace"]

_25_POW_7 = 25.0**7
_DEG = math.pi / 180.0
_TAU = 2.0 * math.pi


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x > 0, else 0; gradient finite (0) where x <= 0."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), 0.0)


def _safe_atan2(y: Tensor, x: Tensor) -> Tensor:
    """atan2(y, x), 0 at (0, 0) with a finite (0) gradient there."""
    zero = (x == 0) & (y == 0)
    return torch.where(zero, 0.0, torch.atan2(y, torch.where(zero, torch.ones_like(x), x)))


def hue_deg(b: Tensor, a: Tensor, safe: bool = True) -> Tensor:
    """Hue angle in degrees in [0, 360); 0 for a = b = 0 (Sharma eq. 4)."""
    h = torch.remainder((_safe_atan2(b, a) if safe else torch.atan2(b, a)) / _DEG, 360.0)
    return torch.where(h >= 360.0, h - 360.0, h)  # remainder(-tiny, 360) rounds up to 360


def _antipodal_margin(dtype: torch.dtype) -> float:
    """Hue differences within this many degrees of 180 keep the exact-arithmetic branch
    (|Δh'| <= 180): which side of the formula's jump atan2's last-bit rounding lands on
    differs by device (Sharma's pairs 13-15)."""
    return 1440.0 * torch.finfo(dtype).eps


def _chroma_weight(c: Tensor, sqrt) -> Tensor:
    """sqrt(C^7 / (C^7 + 25^7)), written C^3 sqrt(C) / sqrt(C^7 + 25^7): products instead of
    ``pow`` (several times cheaper, fused or not) and no singularity at C = 0."""
    c3 = c * c * c
    return c3 * sqrt(c) * torch.rsqrt(c3 * c3 * c + _25_POW_7)


_COS = {d: math.cos(math.radians(d)) for d in (30, 6, 63)}
_SIN = {d: math.sin(math.radians(d)) for d in (30, 6, 63)}


def _hue_weight(h_deg: Tensor) -> Tensor:
    """T = 1 - 0.17 cos(h - 30) + 0.24 cos 2h + 0.32 cos(3h + 6) - 0.20 cos(4h - 63) (Sharma
    eq. 15), from one sin/cos pair by the multiple-angle identities instead of four cosines."""
    h = _DEG * h_deg
    c1, s1 = torch.cos(h), torch.sin(h)
    c2, s2 = 2.0 * c1 * c1 - 1.0, 2.0 * s1 * c1
    c3, s3 = c1 * (2.0 * c2 - 1.0), s1 * (2.0 * c2 + 1.0)  # 4c^3 - 3c, 3s - 4s^3
    c4, s4 = 2.0 * c2 * c2 - 1.0, 2.0 * s2 * c2
    return (
        1.0
        - 0.17 * (c1 * _COS[30] + s1 * _SIN[30])
        + 0.24 * c2
        + 0.32 * (c3 * _COS[6] - s3 * _SIN[6])
        - 0.20 * (c4 * _COS[63] + s4 * _SIN[63])
    )


def ciede2000(L1, a1, b1, L2, a2, b2, kL: float, kC: float, kH: float, safe: bool = True):
    """CIEDE2000 per Sharma et al. (2005), eqs. 2-22, on per-channel tensors (any shape).

    ``safe=False`` drops the gradient guards (same values) for the compiled forward-only path.
    """
    sqrt = safe_sqrt if safe else torch.sqrt
    # 1. C'_i, h'_i
    c_bar = 0.5 * (sqrt(a1 * a1 + b1 * b1) + sqrt(a2 * a2 + b2 * b2))
    g = 0.5 * (1.0 - _chroma_weight(c_bar, sqrt))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = sqrt(a1p * a1p + b1 * b1), sqrt(a2p * a2p + b2 * b2)
    h1p, h2p = hue_deg(b1, a1p, safe), hue_deg(b2, a2p, safe)
    # 2. ΔL', ΔC', ΔH'
    chroma_zero = (c1p * c2p) == 0
    half = 180.0 + _antipodal_margin(h1p.dtype)
    dl = L2 - L1
    dc = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > half, dh - 360.0, torch.where(dh < -half, dh + 360.0, dh))
    dh = torch.where(chroma_zero, 0.0, dh)
    d_hh = 2.0 * sqrt(c1p * c2p) * torch.sin(0.5 * _DEG * dh)
    # 3. weighting functions
    l_bar = 0.5 * (L1 + L2)
    cp_bar = 0.5 * (c1p + c2p)
    h_sum = h1p + h2p
    far = (h1p - h2p).abs() > half
    hp_bar = torch.where(far, torch.where(h_sum < 360.0, h_sum + 360.0, h_sum - 360.0), h_sum)
    hp_bar = torch.where(chroma_zero, h_sum, 0.5 * hp_bar)
    t = _hue_weight(hp_bar)
    d_theta = 30.0 * torch.exp(-(((hp_bar - 275.0) / 25.0) ** 2))
    r_c = 2.0 * _chroma_weight(cp_bar, sqrt)
    l50 = (l_bar - 50.0) ** 2
    s_l = 1.0 + 0.015 * l50 * torch.rsqrt(20.0 + l50)
    s_c = 1.0 + 0.045 * cp_bar
    s_h = 1.0 + 0.015 * cp_bar * t
    r_t = -torch.sin(_DEG * 2.0 * d_theta) * r_c
    tl, tc, th = dl / (kL * s_l), dc / (kC * s_c), d_hh / (kH * s_h)
    return sqrt(tl * tl + tc * tc + th * th + r_t * tc * th)


def ciede2000_rows(x1: Tensor, x2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    """Forward-only CIEDE2000 on Lab ``[3, N]`` (channel rows) or ``[N, 3]`` tensors (``N != 3``
    decides which); the function handed to ``torch.compile``. Taking whole tensors, not six row
    views, keeps the compiled graph free of guards on the views' storage offsets."""
    ch = 0 if x1.shape[0] == 3 and x1.ndim == 2 and x1.shape[1] != 3 else -1
    l1, a1, b1 = x1.unbind(ch)
    l2, a2, b2 = x2.unbind(ch)
    return ciede2000(l1, a1, b1, l2, a2, b2, kL, kC, kH, safe=False)


# ------------------------------------------------------------------ in-place, chunked
def _norm(a: Tensor, b: Tensor, out: Tensor) -> Tensor:
    return torch.mul(a, a, out=out).addcmul_(b, b).sqrt_()


def _chroma_weight_(c: Tensor, tmp: Tensor) -> Tensor:
    """c <- sqrt(c^7 / (c^7 + 25^7)) in place (0 at c = 0: no gradient needed here)."""
    torch.mul(c, c, out=tmp).mul_(c).square_().mul_(c)  # c^7 by products: pow is much slower
    return c.copy_(tmp).div_(tmp.add_(_25_POW_7)).sqrt_()


def _mod_tau_(h: Tensor, tmp: Tensor) -> Tensor:
    """h <- h - 2π floor(h / 2π): ``remainder`` by three fast ops (remainder is slow on CPU)."""
    return h.sub_(torch.mul(h, 1.0 / _TAU, out=tmp).floor_(), alpha=_TAU)


def _hue_(b: Tensor, a: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
    """h' in [0, 2π] (2π only where b is a tiny negative: the rounded 2π - tiny, as in
    scikit-image). ``a`` holds no negative zero, so a = b = 0 gives 0 (Sharma eq. 4)."""
    return _mod_tau_(torch.atan2(b, a, out=out), tmp)


def _hue_weight_(h: Tensor, out: Tensor, tmp: Tensor) -> Tensor:
    """out <- T (Sharma eq. 15) from h̄' in radians."""
    out.fill_(1.0)
    for k, shift, weight in ((1, -30, -0.17), (2, 0, 0.24), (3, 6, 0.32), (4, -63, -0.20)):
        out.add_(torch.mul(h, float(k), out=tmp).add_(shift * _DEG).cos_(), alpha=weight)
    return out


def _ciede2000_chunk(x1: Tensor, x2: Tensor, out: Tensor, buf: Tensor, kL, kC, kH) -> None:
    """CIEDE2000 of one chunk: ``x1``, ``x2`` ``[3, n]`` channel rows (views), result into
    ``out`` ``[n]``; ``buf`` ``[>= 13 n]`` scratch. Each line is one or two passes over data
    that stays in cache."""
    n = out.shape[0]
    buf = buf[: 13 * n].view(13, n)
    L1, a1, b1, L2, a2, b2, c1, c2, h1, h2, t, u, w = buf.unbind(0)
    # stack gathers the strided channels much faster than copy_ from a transposed view
    torch.stack(x1.unbind(0), out=buf[0:3]), torch.stack(x2.unbind(0), out=buf[3:6])
    # 1. G, a'_i (+0.0 turns -0 into +0, so a grey's hue is 0), C'_i, h'_i
    _norm(a1, b1, c1), _norm(a2, b2, c2)
    _chroma_weight_(torch.add(c1, c2, out=t).mul_(0.5), u)
    t.mul_(-0.5).add_(1.5)  # 1 + G
    a1.mul_(t).add_(0.0), a2.mul_(t).add_(0.0)
    _norm(a1, b1, c1), _norm(a2, b2, c2)
    _hue_(b1, a1, h1, u), _hue_(b2, a2, h2, u)
    # 2. Δh' wrapped into [-π, π] (u = -1, 0, 1: the turns taken off; |u| = 1: hues > π apart)
    torch.sub(h2, h1, out=t)
    torch.mul(t, 1.0 / (math.pi + _DEG * _antipodal_margin(t.dtype)), out=u).trunc_()
    t.sub_(u, alpha=_TAU)
    torch.mul(c1, c2, out=w).sqrt_()
    t.mul_(0.5).sin_().mul_(w).mul_(2.0)  # ΔH' = 2 sqrt(C'1 C'2) sin(Δh' / 2)
    # h̄' = (h'1 + h'2) / 2 (+ π when far apart), in [0, 2π); h'1 + h'2 where C'1 C'2 = 0
    h1.add_(h2)
    torch.mul(h1, 0.5, out=h2).add_(u.abs_(), alpha=math.pi)
    _mod_tau_(h2, u)
    w.sign_()  # 1, or 0 where a chroma is 0: blend by exact products, not where()
    h2.mul_(w)
    h2.addcmul_(h1, w.neg_().add_(1.0))
    # 3. weighting functions; tc = ΔC' / (kC S_C), th = ΔH' / (kH S_H), tl = ΔL' / (kL S_L)
    torch.sub(c2, c1, out=u)
    c1.add_(c2).mul_(0.5)  # C̄'
    _hue_weight_(h2, w, h1)
    t.div_(w.mul_(c1).mul_(0.015 * kH).add_(kH))
    u.div_(torch.mul(c1, 0.045 * kC, out=w).add_(kC))
    # R_T = -sin(2Δθ) R_C, 2Δθ = 60° exp(-((h̄' - 275°) / 25°)²); clamped to stay off
    # denormals, on which exp is very slow (exp(-80) is already 0 at the precision of ΔE)
    h2.sub_(275.0 * _DEG).mul_(1.0 / (25.0 * _DEG)).square_().clamp_max_(80.0)
    h2.neg_().exp_().mul_(math.pi / 3.0).sin_()
    _chroma_weight_(c1, w).mul_(h2).mul_(-2.0)
    torch.add(L1, L2, out=w).mul_(0.5).sub_(50.0).square_()
    w.div_(torch.add(w, 20.0, out=h1).sqrt_()).mul_(0.015 * kL).add_(kL)
    L2.sub_(L1).div_(w)
    c1.mul_(u).mul_(t).addcmul_(L2, L2).addcmul_(u, u).addcmul_(t, t)
    torch.sqrt(c1, out=out)


def ciede2000_inplace(x1: Tensor, x2: Tensor, kL: float, kC: float, kH: float, *,
                      chunk: int = 24576, workers: int = 1) -> Tensor:
    """Forward-only CIEDE2000 of Lab channel rows ``x1``, ``x2`` ``[3, N]`` (any strides),
    ``chunk`` pairs at a time by ``workers`` threads; returns ``[N]``.

    Threads take chunks from one queue, each op on a chunk single-threaded: torch's own
    threading would split every op (~100 per chunk) with a barrier each, and a barrier waits
    for the slowest thread, which on a busy machine is one the OS has descheduled. The default
    chunk (13 buffers of 24K values) stays in L2 and below torch's 32K-element grain, so
    binary ops do not split themselves.
    """
    n = x1.shape[1]
    out = torch.empty(n, dtype=x1.dtype, device=x1.device)
    starts = iter(range(0, n, chunk))  # shared: next() on it is atomic under the GIL

    def work() -> None:
        buf = torch.empty(13 * min(chunk, n), dtype=x1.dtype, device=x1.device)
        with torch.no_grad():  # grad mode is per thread; out= ops refuse grad
            for i in starts:
                j = min(i + chunk, n)
                _ciede2000_chunk(x1[:, i:j], x2[:, i:j], out[i:j], buf, kL, kC, kH)

    workers = min(workers, -(-n // chunk))
    if workers <= 1:
        work()
        return out
    with ThreadPoolExecutor(workers - 1) as pool:
        helpers = [pool.submit(work) for _ in range(workers - 1)]
        work()
        for f in helpers:
            f.result()
    return out
