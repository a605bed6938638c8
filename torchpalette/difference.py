"""Colour difference (ΔE) between colours, as differentiable batched tensor ops.

A colour difference ΔE is a distance between two colours meant to follow how different they
look. The plain Euclidean distance in CIELAB (CIE76) overstates differences between saturated
colours, so later formulas weight lightness, chroma and hue separately: CIE94, CMC l:c (textile
industry) and CIEDE2000, the current CIE recommendation, which also corrects blue hues and
near-neutral colours. A ΔE of about 2.3 (``JND``) is a just-noticeable difference
(Sharma & Trussell 1997); 1 is the threshold of the weighting in CIEDE2000 and CMC.

All functions broadcast ``[..., 3]`` inputs, work on any device, keep float32/float64 and are
differentiable with finite gradients everywhere -- identical colours, greys (a = b = 0) and the
hue wrap-around included -- so ΔE can be used as a training loss. Square roots and ``atan2`` are
"safe": their argument is replaced where the function is singular (sqrt at 0, atan2 at (0, 0)),
and the result there is set by ``torch.where``, so the unused branch never produces inf/NaN
gradients (0 * inf). The gradient at those points is 0, a valid subgradient.

Speed: CIEDE2000 is ~60 elementwise ops; eager PyTorch runs each over the whole input. For large
calls without gradient a fused forward-only kernel made by ``torch.compile`` is ~10x faster on
CPU (on contiguous per-channel rows, which inductor vectorizes) and near memory bandwidth on
CUDA. Compiling costs tens of seconds once per process, so it is never used for small inputs,
and by default (``fast=None``) only after the process has already spent about that much time in
large eager calls (a "ski-rental" rule: total cost at most about twice the best choice in
hindsight). ``fast=True`` compiles at once; ``fast=False`` never does.

References:
    G. Sharma, W. Wu, E. N. Dalal, "The CIEDE2000 color-difference formula: implementation
    notes, supplementary test data, and mathematical observations", Color Res. Appl. 30(1),
    21-30, 2005 (notation: C', h', S_L, S_C, S_H, R_T below).
    CIE 116-1995 (CIE94). F. J. J. Clarke, R. McDonald, B. Rigg, "Modification to the JPC79
    colour-difference formula", J. Soc. Dyers Colour. 100, 128-132, 1984 (CMC l:c).
    G. Sharma, H. J. Trussell, "Digital color imaging", IEEE Trans. Image Process. 6(7), 1997.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import Tensor

from . import _validate as v
from .color import srgb_to_lab

__all__ = ["JND", "delta_e", "adjacent_delta_e"]

JND = 2.3
"""Just-noticeable difference in ΔE units (Sharma & Trussell 1997)."""

METHODS = ("cie76", "cie94", "ciede2000", "cmc")
SPACES = ("srgb", "lab")

# Fast path policy (see module docstring). Below _FAST_MIN_PAIRS the compiled kernel is never
# used automatically; _AUTO_COMPILE_PAIRS is about how many pairs eager CIEDE2000 handles in the
# time a cold compile takes (~20 s at ~10M pairs/s on 2 cores).
_FAST_MIN_PAIRS = 1 << 20
_AUTO_COMPILE_PAIRS = 200_000_000
_eager_pairs_seen = 0  # large no-grad CIEDE2000 pairs computed eagerly in this process
_compile_failed = False

_25_POW_7 = 25.0**7
_DEG = math.pi / 180.0


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x > 0, else 0; gradient finite (0) where x <= 0."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), 0.0)


def _safe_atan2(y: Tensor, x: Tensor) -> Tensor:
    """atan2(y, x), 0 at (0, 0) with a finite (0) gradient there."""
    zero = (x == 0) & (y == 0)
    return torch.where(zero, 0.0, torch.atan2(y, torch.where(zero, torch.ones_like(x), x)))


def _hue_deg(b: Tensor, a: Tensor, safe: bool) -> Tensor:
    """Hue angle in degrees in [0, 360); 0 for a = b = 0 (Sharma eq. 4)."""
    h = torch.remainder((_safe_atan2(b, a) if safe else torch.atan2(b, a)) / _DEG, 360.0)
    return torch.where(h >= 360.0, h - 360.0, h)  # remainder(-tiny, 360) rounds up to 360


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


def _ciede2000(L1, a1, b1, L2, a2, b2, kL: float, kC: float, kH: float, safe: bool = True):
    """CIEDE2000 per Sharma et al. (2005), eqs. 2-22, on per-channel tensors (any shape).

    ``safe=False`` drops the gradient guards (same values) for the compiled forward-only path.
    """
    sqrt = _safe_sqrt if safe else torch.sqrt
    # 1. C'_i, h'_i
    c_bar = 0.5 * (sqrt(a1 * a1 + b1 * b1) + sqrt(a2 * a2 + b2 * b2))
    # sqrt(C^7 / (C^7 + 25^7)) written as C^3.5 / sqrt(C^7 + 25^7): no sqrt singularity at C = 0
    g = 0.5 * (1.0 - _chroma_weight(c_bar, sqrt))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = sqrt(a1p * a1p + b1 * b1), sqrt(a2p * a2p + b2 * b2)
    h1p, h2p = _hue_deg(b1, a1p, safe), _hue_deg(b2, a2p, safe)
    # 2. ΔL', ΔC', ΔH'
    chroma_zero = (c1p * c2p) == 0
    # Hue differences of exactly 180 degrees sit on the formula's jump (Sharma's pairs 13-15):
    # which side atan2's last-bit rounding lands on differs by device, so within a few ulps of
    # 180 we keep the exact-arithmetic branch (|h'1 - h'2| <= 180).
    half = 180.0 + 1440.0 * torch.finfo(h1p.dtype).eps
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


def _ciede2000_rows(x1: Tensor, x2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    """Forward-only CIEDE2000 on Lab ``[3, N]`` (channel rows) or ``[N, 3]`` tensors (``N != 3``
    decides which); the function handed to ``torch.compile``. Taking whole tensors, not six row
    views, keeps the compiled graph free of guards on the views' storage offsets."""
    ch = 0 if x1.shape[0] == 3 and x1.ndim == 2 and x1.shape[1] != 3 else -1
    return _ciede2000(*x1.unbind(ch), *x2.unbind(ch), kL, kC, kH, safe=False)


@functools.lru_cache(maxsize=None)
def _compiled():
    """The compiled kernel, created lazily once per process (compiles on first call)."""
    return torch.compile(_ciede2000_rows, dynamic=True, fullgraph=True)


def _cie76(lab1: Tensor, lab2: Tensor) -> Tensor:
    d = lab1 - lab2
    return _safe_sqrt((d * d).sum(-1))


def _dh2(a1, b1, a2, b2, c1, c2) -> Tensor:
    """ΔH² = Δa² + Δb² - ΔC², clamped at 0 (it is >= 0 exactly; rounding can dip below)."""
    da, db, dc = a1 - a2, b1 - b2, c1 - c2
    return (da * da + db * db - dc * dc).clamp_min(0.0)


def _cie94(lab1: Tensor, lab2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    (L1, a1, b1), (L2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
    c1, c2 = _safe_sqrt(a1 * a1 + b1 * b1), _safe_sqrt(a2 * a2 + b2 * b2)
    s_c, s_h = 1.0 + 0.045 * c1, 1.0 + 0.015 * c1  # graphic arts: K1 = 0.045, K2 = 0.015
    tl, tc = (L1 - L2) / kL, (c1 - c2) / (kC * s_c)
    return _safe_sqrt(tl * tl + tc * tc + _dh2(a1, b1, a2, b2, c1, c2) / (kH * s_h) ** 2)


def _cmc(lab1: Tensor, lab2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    (L1, a1, b1), (L2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
    c1, c2 = _safe_sqrt(a1 * a1 + b1 * b1), _safe_sqrt(a2 * a2 + b2 * b2)
    h1 = _hue_deg(b1, a1, safe=True)
    t = torch.where(
        (h1 >= 164.0) & (h1 <= 345.0),
        0.56 + (0.2 * torch.cos(_DEG * (h1 + 168.0))).abs(),
        0.36 + (0.4 * torch.cos(_DEG * (h1 + 35.0))).abs(),
    )
    c1_4 = c1**4
    f = c1**2 * torch.rsqrt(c1_4 + 1900.0)  # sqrt(C^4 / (C^4 + 1900)), safe at C = 0
    s_l = torch.where(L1 < 16.0, 0.511, 0.040975 * L1 / (1.0 + 0.01765 * L1))
    s_c = 0.0638 * c1 / (1.0 + 0.0131 * c1) + 0.638
    s_h = s_c * (f * t + 1.0 - f)
    tl, tc = (L1 - L2) / (kL * s_l), (c1 - c2) / (kC * s_c)
    return _safe_sqrt(tl * tl + tc * tc + _dh2(a1, b1, a2, b2, c1, c2) / (kH * s_h) ** 2)


def _fast_ciede2000(lab1: Tensor, lab2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    """Compiled CIEDE2000 on broadcast ``[..., 3]`` Lab; returns ``[...]``."""
    lab1, lab2 = torch.broadcast_tensors(lab1, lab2)
    shape = lab1.shape[:-1]
    x1, x2 = lab1.reshape(-1, 3), lab2.reshape(-1, 3)
    if x1.device.type == "cpu" and x1.shape[0] != 3:
        # inductor vectorizes contiguous rows, not stride-3 loads: [N, 3] -> [3, N] (cheap copy)
        x1, x2 = torch.stack(x1.unbind(-1)), torch.stack(x2.unbind(-1))
    # GPU: [N, 3] as is; the stride-3 loads coalesce through the cache, no extra pass
    return _compiled()(x1.contiguous(), x2.contiguous(), kL, kC, kH).reshape(shape)


def _use_fast(fast: bool | None, lab1: Tensor, lab2: Tensor, needs_grad: bool) -> bool:
    """Decide whether this call takes the compiled path (see module docstring)."""
    global _eager_pairs_seen
    if fast is False or _compile_failed or torch.compiler.is_compiling():
        return False
    if lab1.device.type not in ("cpu", "cuda"):
        if fast:
            raise ValueError(f"fast: expected a cpu or cuda device, got {lab1.device.type}")
        return False
    if needs_grad:
        if fast:
            raise ValueError("fast: fast=True is forward-only, got inputs that require grad")
        return False
    if fast:
        return True
    pairs = math.prod(torch.broadcast_shapes(lab1.shape, lab2.shape)[:-1])
    if pairs < _FAST_MIN_PAIRS:
        return False
    if _compiled.cache_info().currsize:  # already compiled in this process: free to use
        return True
    _eager_pairs_seen += pairs
    return _eager_pairs_seen >= _AUTO_COMPILE_PAIRS


def _check_k(value: float | None, name: str, default: float) -> float:
    return default if value is None else v.check_positive(value, name)


def delta_e(
    a: Tensor,
    b: Tensor,
    method: str = "ciede2000",
    space: str = "srgb",
    kL: float | None = None,
    kC: float = 1.0,
    kH: float = 1.0,
    *,
    fast: bool | None = None,
) -> Tensor:
    """Colour difference ΔE between colours ``a`` and ``b``.

    Args:
        a: ``[..., 3]`` float colours, the reference colour for the asymmetric cie94 / cmc.
        b: ``[..., 3]`` float colours, broadcastable with ``a``, same dtype and device.
        method: ``"ciede2000"`` (default), ``"cie94"`` (graphic arts, K1 = 0.045,
            K2 = 0.015), ``"cie76"`` (Euclidean Lab distance) or ``"cmc"`` (CMC l:c).
        space: ``"srgb"`` (default; values in [0, 1], converted with :func:`srgb_to_lab`) or
            ``"lab"`` (CIELAB D65, L in [0, 100]).
        kL: lightness weight, dividing ΔL. ``None`` means the method's standard value: 1, and
            for cmc ``l = 2`` (CMC 2:1, "acceptability"; ``kL=1`` gives CMC 1:1,
            "imperceptibility"). For cmc, ``kL`` is ``l`` and ``kC`` is ``c`` (as in
            scikit-image's ``deltaE_cmc``).
        kC: chroma weight, dividing ΔC (``c`` for cmc).
        kH: hue weight, dividing ΔH (1 for the standard cmc). cie76 ignores kL, kC, kH.
        fast: use the compiled forward-only CIEDE2000 kernel: ``None`` decides (large calls
            without grad, after amortizing the compile; see the module docstring), ``True``
            forces it (compiles now if needed), ``False`` never.

    Returns:
        ``[...]`` ΔE (the broadcast batch shape), float32 or float64 as the inputs
        (float16/bfloat16 inputs give float32).

    Raises:
        TypeError: ``a``/``b`` not float tensors; ``method``/``space`` not strings.
        ValueError: last dim not 3, empty, NaN/inf, sRGB values outside [0, 1], shapes that do
            not broadcast, different devices, unknown method/space, k <= 0, or ``fast=True``
            with grad, another method or a device other than cpu/cuda.

    Note:
        CIEDE2000 follows Sharma, Wu & Dalal (2005) including their edge cases (hue of a
        neutral colour is 0, ΔH' = 0 and h̄' = h'1 + h'2 when C'1 C'2 = 0, mean hue across the
        0/360 wrap). CIE94 and CMC take the chroma and hue of ``a`` as the reference, so they
        are not symmetric. Gradients are finite everywhere (0 at the singular points).

    Example:
        >>> import torch, torchpalette as tp
        >>> lab1 = torch.tensor([50.0, 2.6772, -79.7751])
        >>> lab2 = torch.tensor([50.0, 0.0, -82.7485])
        >>> tp.delta_e(lab1, lab2, space="lab").round(decimals=4)
        tensor(2.0425)
        >>> red, orange = tp.parse_colors(["red", "orange"])
        >>> tp.delta_e(red, orange, method="cie76").round()
        tensor(61.)
    """
    method = v.check_choice(method, "method", METHODS)
    space = v.check_choice(space, "space", SPACES)
    if fast is not None and not isinstance(fast, bool):
        raise TypeError(f"fast: expected True, False or None, got {type(fast).__name__}")
    if fast and method != "ciede2000":
        raise ValueError(f"fast: expected method 'ciede2000' for fast=True, got {method!r}")
    kL = _check_k(kL, "kL", 2.0 if method == "cmc" else 1.0)
    kC, kH = _check_k(kC, "kC", 1.0), _check_k(kH, "kH", 1.0)
    rng = (0.0, 1.0) if space == "srgb" else None
    v.check_colors(a, "a", value_range=rng)
    v.check_colors(b, "b", value_range=rng)
    if a.device != b.device:
        raise ValueError(f"b: expected device {a.device} (as a), got {b.device}")
    try:
        torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"b: expected a shape broadcastable with a {v.shape_str(a.shape)}, "
            f"got {v.shape_str(b.shape)}"
        ) from None
    dtype = torch.promote_types(a.dtype, b.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    a, b = a.to(dtype), b.to(dtype)
    lab1, lab2 = (srgb_to_lab(a), srgb_to_lab(b)) if space == "srgb" else (a, b)
    needs_grad = torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)
    if method == "cie76":
        return _cie76(lab1, lab2)
    if method == "cie94":
        return _cie94(lab1, lab2, kL, kC, kH)
    if method == "cmc":
        return _cmc(lab1, lab2, kL, kC, kH)
    if _use_fast(fast, lab1, lab2, needs_grad):
        try:
            return _fast_ciede2000(lab1, lab2, kL, kC, kH)
        except Exception as err:  # no C++ compiler / triton: eager from now on
            global _compile_failed
            _compile_failed = True
            warnings.warn(f"delta_e: compiled path unavailable ({err!r}); using eager", stacklevel=2)
    (L1, a1, b1), (L2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
    return _ciede2000(L1, a1, b1, L2, a2, b2, kL, kC, kH)


def adjacent_delta_e(colors: Tensor, method: str = "ciede2000", space: str = "srgb") -> Tensor:
    """ΔE between each colour and the next one along the list.

    Args:
        colors: ``[..., K, 3]`` float colours, K >= 2.
        method: as in :func:`delta_e`.
        space: as in :func:`delta_e`.

    Returns:
        ``[..., K - 1]``: ``delta_e(colors[..., i, :], colors[..., i + 1, :])``.

    Raises:
        TypeError, ValueError: as :func:`delta_e`; also for K < 2.

    Example:
        >>> import torch, torchpalette as tp
        >>> grey = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
        >>> tp.adjacent_delta_e(grey, method="cie76").round(decimals=2)
        tensor([53.3900, 46.6100])
    """
    v.check_colors(colors, "colors", min_ndim=2, check_values=False)
    if colors.shape[-2] < 2:
        raise ValueError(
            f"colors: expected at least 2 colours at dim -2 of [..., K, 3], "
            f"got {v.shape_str(colors.shape)}"
        )
    return delta_e(colors[..., :-1, :], colors[..., 1:, :], method=method, space=space)
