"""Unchecked conversions between sRGB and the clustering spaces (CIELAB, Oklab, sRGB).

The one sRGB -> CIELAB implementation of the package lives here: it works on channel-first
pixels ``[B, 3, P]`` (the layout images already have), linearises uint8 pixels through a
256-entry table instead of ``pow(2.4)``, and applies the two linear steps as 3x3 matrix
products. Its formulas and constants are ``kornia.color.rgb_to_lab``'s (the tests compare the
two). Channel-last colours ``[..., 3]`` take the same path through a transpose. The inverse
(CIELAB -> sRGB) and the sRGB transfer functions are kornia's.

Nothing here validates its input: :mod:`torchpalette.color` is the checked public face.

References:
    IEC 61966-2-1:1999 (sRGB). CIE 15:2004 (CIELAB).
    B. Ottosson, "A perceptual color space for image processing", 2020.
"""

from __future__ import annotations

import kornia.color as kc
import torch
from torch import Tensor

from . import _policy

SPACES = ("lab", "oklab", "srgb")

# sRGB (linear) -> XYZ, rows divided by the D65 white (0.95047, 1, 1.08883), as kornia.color
SRGB_TO_XYZ = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
D65_WHITE = (0.95047, 1.0, 1.08883)
F_TO_LAB = ((0.0, 116.0, 0.0), (500.0, -500.0, 0.0), (0.0, 200.0, -200.0))
LAB_EPSILON = 0.008856

# Ottosson (2020): linear sRGB -> LMS, and non-linear LMS -> Lab, with their inverses.
OKLAB_M1 = (
    (0.4122214708, 0.5363325363, 0.0514459929),
    (0.2119034982, 0.6806995451, 0.1073969566),
    (0.0883024619, 0.2817188376, 0.6299787005),
)
OKLAB_M2 = (
    (0.2104542553, 0.7936177850, -0.0040720468),
    (1.9779984951, -2.4285922050, 0.4505937099),
    (0.0259040371, 0.7827717662, -0.8086757660),
)
OKLAB_M2_INV = (
    (1.0, 0.3963377774, 0.2158037573),
    (1.0, -0.1055613458, -0.0638541728),
    (1.0, -0.0894841775, -1.2914855480),
)
OKLAB_M1_INV = (
    (4.0767416621, -3.3077115913, 0.2309699292),
    (-1.2684380046, 2.6097574011, -0.3413193965),
    (-0.0041960863, -0.7034186147, 1.7076147010),
)


def _matrix(m: tuple[tuple[float, ...], ...], like: Tensor) -> Tensor:
    return torch.tensor(m, dtype=like.dtype, device=like.device)


def _linear(rgb: Tensor, dtype: torch.dtype) -> Tensor:
    """``[B, 3, P]`` uint8 or float sRGB -> linear RGB of ``dtype`` (uint8 by table look-up)."""
    if rgb.dtype == torch.uint8:
        levels = torch.arange(256, device=rgb.device, dtype=torch.float64).div(255.0)
        table = kc.rgb_to_linear_rgb(levels.view(1, 1, 256).expand(3, 1, 256))[0, 0].to(dtype)
        # index_select with int32 indices: several times faster than table[rgb.long()] on CPU
        return table.index_select(0, rgb.reshape(-1).int()).view(rgb.shape)
    return kc.rgb_to_linear_rgb(rgb.to(dtype).unsqueeze(-1)).squeeze(-1)


def srgb_to_lab_cf(
    rgb: Tensor, dtype: torch.dtype | None = None, *, append_one: bool = False
) -> Tensor:
    """sRGB pixels ``[B, 3, P]`` (uint8, or float in [0, 1]) -> CIELAB ``[B, 3, P]``.

    Float input is converted in its own dtype (float32 or float64; half -> float32), uint8 in
    ``dtype`` (default float32). With ``append_one`` the result is ``[B, 4, P]`` whose last
    row is 1, so squared distances to colours ``c`` are one ``bmm`` against
    ``[-2 c, |c|^2]`` (no gradient through that form). Differentiable otherwise.
    """
    if dtype is None or rgb.is_floating_point():
        floats = (torch.float32, torch.float64)
        dtype = rgb.dtype if rgb.dtype in floats else (dtype or torch.float32)
    with _policy.ieee_fp32():  # TF32 products move Lab by ~0.05
        return _srgb_to_lab_cf(rgb, dtype, append_one)


def _srgb_to_lab_cf(rgb: Tensor, dtype: torch.dtype, append_one: bool) -> Tensor:
    lin = _linear(rgb, dtype)
    m = _matrix(SRGB_TO_XYZ, lin) / _matrix((D65_WHITE,), lin).T
    t = torch.matmul(m, lin)
    eps = LAB_EPSILON
    # cube root as exp(log(t) / 3): ~2x faster than pow(1/3) on the CPU; in place unless
    # autograd needs the intermediates (the same ops either way, so the same values)
    root = t.clamp(min=eps)
    if torch.is_grad_enabled() and t.requires_grad:
        root = root.log().mul(1.0 / 3.0).exp()
    else:
        root = root.log_().mul_(1.0 / 3.0).exp_()
    f = torch.where(t > eps, root, t * 7.787 + 4.0 / 29.0)
    fm = _matrix(F_TO_LAB, f)
    if torch.compiler.is_compiling():  # dynamo cannot trace out= into a slice: plain ops
        lab = torch.matmul(fm, f)
        lab = torch.cat([lab[..., :1, :] - 16.0, lab[..., 1:, :]], -2)  # L = 116 f(Y) - 16
        return torch.cat([lab, torch.ones_like(lab[:, :1])], 1) if append_one else lab
    if not append_one:
        lab = torch.matmul(fm, f)
        lab[:, 0] -= 16.0
        return lab
    out = torch.empty(f.shape[0], 4, f.shape[2], dtype=dtype, device=f.device)
    torch.matmul(fm, f, out=out[:, :3])
    out[:, 0] -= 16.0
    out[:, 3] = 1.0
    return out


def srgb_to_lab(colors: Tensor) -> Tensor:
    """Colours ``[..., 3]`` float sRGB -> CIELAB ``[..., 3]`` (through :func:`srgb_to_lab_cf`)."""
    flat = colors.reshape(1, -1, 3).transpose(1, 2)
    return srgb_to_lab_cf(flat).transpose(1, 2).reshape(colors.shape)


def lab_to_srgb(lab: Tensor, clip: bool = True) -> Tensor:
    """CIELAB ``[..., 3]`` -> sRGB ``[..., 3]`` (kornia's; clamped to [0, 1] by ``clip``)."""
    with _policy.ieee_fp32():  # kornia's colour matrices are einsums/convolutions
        return kc.lab_to_rgb(lab[..., None, None], clip=clip)[..., 0, 0]


def srgb_to_oklab(colors: Tensor) -> Tensor:
    """sRGB ``[..., 3]`` -> Oklab ``[..., 3]``."""
    lin = kc.rgb_to_linear_rgb(colors[..., None, None])[..., 0, 0]
    with _policy.ieee_fp32():
        lms = lin @ _matrix(OKLAB_M1, lin).T
        return (torch.sign(lms) * lms.abs().pow(1.0 / 3.0)) @ _matrix(OKLAB_M2, lms).T


def oklab_to_srgb(oklab: Tensor, clip: bool = True) -> Tensor:
    """Oklab ``[..., 3]`` -> sRGB ``[..., 3]`` (clamped to [0, 1] by ``clip``)."""
    with _policy.ieee_fp32():
        lms = (oklab @ _matrix(OKLAB_M2_INV, oklab).T).pow(3)
        linear = lms @ _matrix(OKLAB_M1_INV, oklab).T
    if clip:
        linear = linear.clamp(0.0, 1.0)
    return kc.linear_rgb_to_rgb(linear[..., None, None])[..., 0, 0]


def to_space(colors: Tensor, space: str) -> Tensor:
    """Float sRGB ``[..., 3]`` -> ``space`` (``"lab"``, ``"oklab"`` or ``"srgb"``)."""
    if space == "lab":
        return srgb_to_lab(colors)
    if space == "oklab":
        return srgb_to_oklab(colors)
    return colors


def to_space_cf(rgb: Tensor, space: str, dtype: torch.dtype = torch.float32) -> Tensor:
    """Channel-first pixels ``[B, 3, P]`` uint8 or float sRGB -> ``[B, 3, P]`` in ``space``
    (float ``dtype`` for uint8 input, else the input's float dtype)."""
    if space == "lab":
        return srgb_to_lab_cf(rgb, dtype)
    x = rgb.to(dtype) / 255.0 if rgb.dtype == torch.uint8 else rgb
    return to_space(x.transpose(1, 2), space).transpose(1, 2)


def from_space(values: Tensor, space: str) -> Tensor:
    """``space`` ``[..., 3]`` -> sRGB ``[..., 3]`` in [0, 1] (out-of-gamut values clipped)."""
    if space == "lab":
        return lab_to_srgb(values)
    if space == "oklab":
        return oklab_to_srgb(values)
    return values.clamp(0.0, 1.0)
