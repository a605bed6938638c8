"""Colour difference (ΔE) between colours, as differentiable batched tensor ops.

A colour difference ΔE is a distance between two colours meant to follow how different they
look. The plain Euclidean distance in CIELAB (CIE76) overstates differences between saturated
colours, so later formulas weight lightness, chroma and hue separately: CIE94, CMC l:c (textile
industry) and CIEDE2000, the current CIE recommendation, which also corrects blue hues and
near-neutral colours. A ΔE of about 2.3 (``JND``) is a just-noticeable difference
(Sharma & Trussell 1997); 1 is the threshold of the weighting in CIEDE2000 and CMC.

All functions broadcast ``[..., 3]`` inputs (``delta_e(..., dim=-3)`` takes ``[..., 3, H, W]``
images), work on any device, keep float32/float64 (float32 under autocast) and are
differentiable with finite gradients everywhere -- identical colours, greys (a = b = 0) and the
hue wrap-around included -- so ΔE can be used as a training loss. Square roots and ``atan2`` are
"safe": their argument is replaced where the function is singular (sqrt at 0, atan2 at (0, 0)),
and the result there is set by ``torch.where``, so the unused branch never produces inf/NaN
gradients (0 * inf). The gradient at those points is 0, a valid subgradient.

Speed: CIEDE2000 is ~60 elementwise ops. Without gradients, the CPU computes it on chunks of
pairs that stay in cache, every step in place on reused buffers, which reads and writes main
memory about once; with gradients, the functional form keeps autograd's graph. For very large
calls a fused kernel is faster still (``fast=``): on the CPU an AOTInductor package compiled
once per machine and kept on disk (a later process loads it in milliseconds, see ``_aot``), on
GPUs ``torch.compile``. By default it is used for large calls once a package is on disk, or
after a process has spent about a cold compile's time in large eager calls (see
``_policy.CIEDE2000``). Measured speeds are in ``benchmarks/RESULTS.md``.

References:
    G. Sharma, W. Wu, E. N. Dalal, "The CIEDE2000 color-difference formula: implementation
    notes, supplementary test data, and mathematical observations", Color Res. Appl. 30(1),
    21-30, 2005 (their notation C', h', S_L, S_C, S_H, R_T is
    used in ``_ciede2000``).
    CIE 116-1995 (CIE94). F. J. J. Clarke, R. McDonald, B. Rigg, "Modification to the JPC79
    colour-difference formula", J. Soc. Dyers Colour. 100, 128-132, 1984 (CMC l:c).
    G. Sharma, H. J. Trussell, "Digital color imaging", IEEE Trans. Image Process. 6(7), 1997.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._aot import MIN_SIZE
from ._ciede2000 import ciede2000, ciede2000_inplace, ciede2000_rows, hue_deg, safe_sqrt
from .color import srgb_to_lab

__all__ = ["JND", "delta_e", "adjacent_delta_e"]

JND = 2.3
"""Just-noticeable difference in ΔE units (Sharma & Trussell 1997)."""

METHODS = ("cie76", "cie94", "ciede2000", "cmc")
SPACES = ("srgb", "lab")
_DEG = math.pi / 180.0

def _cie76(lab1: Tensor, lab2: Tensor) -> Tensor:
    d = lab1 - lab2
    return safe_sqrt((d * d).sum(-1))


def _dh2(a1, b1, a2, b2, c1, c2) -> Tensor:
    """ΔH² = Δa² + Δb² - ΔC², clamped at 0 (it is >= 0 exactly; rounding can dip below)."""
    da, db, dc = a1 - a2, b1 - b2, c1 - c2
    return (da * da + db * db - dc * dc).clamp_min(0.0)


def _cie94(lab1: Tensor, lab2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    (L1, a1, b1), (L2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
    c1, c2 = safe_sqrt(a1 * a1 + b1 * b1), safe_sqrt(a2 * a2 + b2 * b2)
    s_c, s_h = 1.0 + 0.045 * c1, 1.0 + 0.015 * c1  # graphic arts: K1 = 0.045, K2 = 0.015
    tl, tc = (L1 - L2) / kL, (c1 - c2) / (kC * s_c)
    return safe_sqrt(tl * tl + tc * tc + _dh2(a1, b1, a2, b2, c1, c2) / (kH * s_h) ** 2)


def _cmc(lab1: Tensor, lab2: Tensor, kL: float, kC: float, kH: float) -> Tensor:
    (L1, a1, b1), (L2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
    c1, c2 = safe_sqrt(a1 * a1 + b1 * b1), safe_sqrt(a2 * a2 + b2 * b2)
    h1 = hue_deg(b1, a1)
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
    return safe_sqrt(tl * tl + tc * tc + _dh2(a1, b1, a2, b2, c1, c2) / (kH * s_h) ** 2)


def _check_k(value: float | None, name: str, default: float) -> float:
    return default if value is None else v.check_positive(value, name)


def _channels_last(a: Tensor, b: Tensor, dim: int, space: str) -> tuple[Tensor, Tensor]:
    """Check ``a`` and ``b`` and move their channel dim ``dim`` last. ``dim`` counts from the
    end for both inputs (as broadcasting aligns shapes), a non-negative ``dim`` from the start
    of the broadcast shape."""
    for x, name in ((a, "a"), (b, "b")):
        v.check_tensor(x, name)
        v.check_float_dtype(x, name)
    dim = v.check_int(dim, "dim")
    ndim = max(a.ndim, b.ndim, 1)
    if not -ndim <= dim < ndim:
        raise ValueError(f"dim: expected an int in [{-ndim}, {ndim - 1}], got {dim}")
    dim = dim - ndim if dim >= 0 else dim
    want = "[..., 3" + ", *" * (-1 - dim) + "]"
    for x, name in ((a, "a"), (b, "b")):
        if x.ndim < -dim or x.shape[dim] != 3:
            raise ValueError(f"{name}: expected shape {want}, got {v.shape_str(x.shape)}")
    if a.device != b.device:
        raise ValueError(f"b: expected device {a.device} (as a), got {b.device}")
    try:
        v.broadcast_shape(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(
            f"b: expected a shape broadcastable with a {v.shape_str(a.shape)}, "
            f"got {v.shape_str(b.shape)}"
        ) from None
    rng = (0.0, 1.0) if space == "srgb" else None
    a, b = a.movedim(dim, -1), b.movedim(dim, -1)
    return v.check_colors(a, "a", value_range=rng), v.check_colors(b, "b", value_range=rng)


def _float32_autocast(device: torch.device):
    """Autocast off: ΔE's cancellations (ΔH'² = Δa² + Δb² - ΔC², hues near 180° apart) need
    float32; in bfloat16 ΔE is off by up to tens of units."""
    if torch.amp.is_autocast_available(device.type) and torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _channel_rows(lab: Tensor, shape: torch.Size) -> Tensor:
    """``[3, N]`` channel rows of ``lab`` broadcast to ``shape`` ``[..., 3]``: a view where the
    strides allow (``[N, 3]`` contiguous, one channel-first image), else one copy."""
    return lab.expand(shape).movedim(-1, 0).reshape(3, -1)


def _run_compiled(kernel, lab1: Tensor, lab2: Tensor, shape, kL, kC, kH) -> Tensor:
    """The compiled CIEDE2000 kernel on broadcast ``[..., 3]`` Lab; returns ``[...]``."""
    n = shape.numel() // 3
    if _policy.device_choices(lab1).kind == "cpu":
        # inductor vectorizes contiguous [3, N] rows, not stride-3 loads (stack gathers them
        # ~2x faster than a transposing copy); at least MIN_SIZE columns, the package's
        # shortest ([3, 3] would also read as [N, 3])
        x1, x2 = (torch.stack(_channel_rows(x, shape).unbind(0)) for x in (lab1, lab2))
        if n < MIN_SIZE:
            x1, x2 = (torch.cat([x, x[:, :1].expand(-1, MIN_SIZE - n)], 1) for x in (x1, x2))
        return kernel(x1, x2, kL, kC, kH)[:n].reshape(shape[:-1])
    # GPU: [N, 3] as is; the stride-3 loads coalesce through the cache, no extra pass
    x1, x2 = (x.expand(shape).reshape(-1, 3).contiguous() for x in (lab1, lab2))
    return kernel(x1, x2, kL, kC, kH).reshape(shape[:-1])


def _ciede2000(lab1: Tensor, lab2: Tensor, kL, kC, kH, fast: bool | None) -> Tensor:
    """CIEDE2000 on ``[..., 3]`` Lab: compiled, in place on CPU chunks, or differentiable."""
    needs_grad = torch.is_grad_enabled() and (lab1.requires_grad or lab2.requires_grad)
    shape = v.broadcast_shape(lab1.shape, lab2.shape)
    policy = _policy.CIEDE2000
    prebuilt = lambda: policy.prebuilt(ciede2000_rows, lab1.device, lab1.dtype)  # noqa: E731
    if policy.use_compiled(fast, lab1.device, shape, needs_grad, prebuilt):
        try:
            return _run_compiled(policy.compiled(ciede2000_rows), lab1, lab2, shape, kL, kC, kH)
        except Exception as err:  # no C++ compiler / triton: eager from now on
            policy.failed = True
            msg = f"delta_e: compiled path unavailable ({err!r}); using eager"
            warnings.warn(msg, stacklevel=3)
    gpu = _policy.device_choices(lab1).kind != "cpu"
    if needs_grad or gpu or torch.compiler.is_compiling():
        # the functional form: autograd's graph, one pass per op on GPUs, traceable
        (L1, a1, b1), (L2, a2, b2) = lab1.unbind(-1), lab2.unbind(-1)
        return ciede2000(L1, a1, b1, L2, a2, b2, kL, kC, kH)
    x1, x2 = _channel_rows(lab1, shape), _channel_rows(lab2, shape)
    workers = torch.get_num_threads()
    return ciede2000_inplace(x1, x2, kL, kC, kH, workers=workers).reshape(shape[:-1])


def delta_e(
    a: Tensor,
    b: Tensor,
    method: str = "ciede2000",
    space: str = "srgb",
    kL: float | None = None,
    kC: float = 1.0,
    kH: float = 1.0,
    *,
    dim: int = -1,
    fast: bool | None = None,
) -> Tensor:
    """Colour difference ΔE between colours ``a`` and ``b``.

    Args:
        a: ``[..., 3]`` float colours (the channels at ``dim``), the reference colour for the
            asymmetric cie94 / cmc.
        b: ``[..., 3]`` float colours, broadcastable with ``a``, same device.
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
        dim: the channel dim, e.g. ``-3`` for ``[..., 3, H, W]`` images. Negative dims count
            from the end of each input (as broadcasting aligns them); a non-negative one is an
            index into the broadcast shape.
        fast: use the compiled forward-only CIEDE2000 kernel: ``None`` decides (large calls
            without grad, not on a single CPU thread, where eager is as fast; once compiled
            or its CPU package is on disk, or after amortizing the compile), ``True`` forces
            it, ``False`` never. On the CPU it is an AOTInductor package kept under
            ``TORCHINDUCTOR_CACHE_DIR`` (default ``<tmp>/torchinductor_<user>``): the first
            call on a machine compiles it (about half a minute of CPU), a later process
            loads it in milliseconds. On GPUs ``torch.compile``: each process compiles or
            loads from inductor's cache. Without it, large no-grad CPU calls run ~5x
            scikit-image per thread (1M pairs).

    Returns:
        ``[...]`` ΔE: the broadcast shape without ``dim``. float64 for float64 inputs, else
        float32 (float16/bfloat16 inputs, and under ``torch.autocast``, compute and return
        float32: half precision is off by up to tens of ΔE units).

    Raises:
        TypeError: ``a``/``b`` not float tensors; ``method``/``space`` not strings; ``dim``
            not an int.
        ValueError: no 3 channels at ``dim``, ``dim`` out of range, empty, NaN/inf, sRGB values
            outside [0, 1], shapes that do not broadcast, different devices, unknown
            method/space, k <= 0, or ``fast=True`` with grad, another method or a device
            other than cpu/cuda.

    Note:
        CIEDE2000 follows Sharma, Wu & Dalal (2005) including their edge cases (hue of a
        neutral colour is 0, ΔH' = 0 and h̄' = h'1 + h'2 when C'1 C'2 = 0, mean hue across the
        0/360 wrap); it matches their 34 pairs to 1e-4 in float32 and float64, and
        scikit-image to ~1e-12 in float64. In float32 it agrees with the float64 result to
        1e-4 (relative above ΔE = 1) except for pairs whose hues lie within float32 rounding of
        180° apart, where the formula itself jumps (~3 in 1M random Lab pairs). CIE94 and CMC
        take the chroma and hue of ``a`` as the reference, so they are not symmetric.
        Gradients are finite everywhere (0 at the singular points).

    Example:
        >>> import torch, torchpalette as tp
        >>> lab1 = torch.tensor([50.0, 2.6772, -79.7751])
        >>> lab2 = torch.tensor([50.0, 0.0, -82.7485])
        >>> tp.delta_e(lab1, lab2, space="lab").round(decimals=4)
        tensor(2.0425)
        >>> red, orange = tp.parse_colors(["red", "orange"])
        >>> tp.delta_e(red, orange, method="cie76").round()
        tensor(61.)
        >>> images = torch.rand(2, 3, 4, 4)  # [B, 3, H, W]
        >>> tp.delta_e(images, images.flip(-1), dim=-3).shape
        torch.Size([2, 4, 4])
    """
    method = v.check_choice(method, "method", METHODS)
    space = v.check_choice(space, "space", SPACES)
    if fast is not None and not isinstance(fast, bool):
        raise TypeError(f"fast: expected True, False or None, got {type(fast).__name__}")
    if fast and method != "ciede2000":
        raise ValueError(f"fast: expected method 'ciede2000' for fast=True, got {method!r}")
    kL = _check_k(kL, "kL", 2.0 if method == "cmc" else 1.0)
    kC, kH = _check_k(kC, "kC", 1.0), _check_k(kH, "kH", 1.0)
    a, b = _channels_last(a, b, dim, space)
    dtype = torch.promote_types(a.dtype, b.dtype)
    if dtype not in (torch.float32, torch.float64):
        dtype = torch.float32
    with _float32_autocast(a.device):
        a, b = a.to(dtype), b.to(dtype)
        lab1, lab2 = (srgb_to_lab(a), srgb_to_lab(b)) if space == "srgb" else (a, b)
        if method == "cie76":
            return _cie76(lab1, lab2)
        if method == "cie94":
            return _cie94(lab1, lab2, kL, kC, kH)
        if method == "cmc":
            return _cmc(lab1, lab2, kL, kC, kH)
        return _ciede2000(lab1, lab2, kL, kC, kH, fast)


def adjacent_delta_e(colors: Tensor, method: str = "ciede2000", space: str = "srgb") -> Tensor:
    """ΔE between each colour and the next one along the list.

    Args:
        colors: ``[..., K, 3]`` float colours, K >= 1.
        method: as in :func:`delta_e`.
        space: as in :func:`delta_e`.

    Returns:
        ``[..., K - 1]``: ``delta_e(colors[..., i, :], colors[..., i + 1, :])``; empty
        ``[..., 0]`` for a single colour (a one-colour palette has no neighbours).

    Raises:
        TypeError, ValueError: as :func:`delta_e`.

    Example:
        >>> import torch, torchpalette as tp
        >>> grey = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0]])
        >>> tp.adjacent_delta_e(grey, method="cie76").round(decimals=2)
        tensor([53.3900, 46.6100])
    """
    v.check_colors(colors, "colors", min_ndim=2, check_values=False)
    if colors.shape[-2] == 1:  # nothing to compare; the values are still checked
        single = delta_e(colors, colors, method=method, space=space)  # [..., 1], zeros
        return single[..., :0]
    return delta_e(colors[..., :-1, :], colors[..., 1:, :], method=method, space=space)
