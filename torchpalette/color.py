"""Colour conversion for channel-last colour lists.

sRGB colours are ``[..., 3]`` floats in [0, 1]. CIELAB (D65, 2° observer) has L in [0, 100] and
a, b roughly in [-128, 127]; Oklab (Ottosson 2020) has L in [0, 1] and a, b roughly in
[-0.4, 0.4]. The sRGB <-> CIELAB steps are kornia's (``kornia.color.rgb_to_lab``,
``lab_to_rgb``), which expect channel-first images ``(*, 3, H, W)``: we view ``[..., 3]`` as
``[..., 3, 1, 1]`` instead of re-implementing them. Oklab is not in kornia, so its two matrix
steps are ours, around kornia's sRGB <-> linear-RGB transfer functions.

References:
    IEC 61966-2-1:1999 (sRGB). CIE 15:2004 (CIELAB).
    B. Ottosson, "A perceptual color space for image processing", 2020,
    https://bottosson.github.io/posts/oklab/
"""

from __future__ import annotations

import kornia.color as kc
import torch
from torch import Tensor

from . import _validate as v

__all__ = ["srgb_to_lab", "lab_to_srgb", "srgb_to_oklab", "oklab_to_srgb"]


def _as_image(colors: Tensor) -> Tensor:
    """``[..., 3]`` -> ``[..., 3, 1, 1]`` (a view), the layout kornia.color expects."""
    return colors[..., None, None]


def _from_image(image: Tensor) -> Tensor:
    return image[..., 0, 0]


def _float(colors: Tensor) -> Tensor:
    # kornia silently accepts uint8 and returns garbage (L ~ 4425): never hand it integers.
    return colors if colors.dtype in (torch.float32, torch.float64) else colors.float()


def srgb_to_lab(colors: Tensor) -> Tensor:
    """Convert sRGB colours to CIELAB (D65).

    Args:
        colors: ``[..., 3]`` float sRGB in [0, 1].

    Returns:
        ``[..., 3]`` Lab, L in [0, 100]; float32 or float64 as given (half becomes float32).

    Raises:
        TypeError: not a float tensor.
        ValueError: last dim is not 3, empty, NaN/inf, or values outside [0, 1].

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.srgb_to_lab(torch.tensor([1.0, 1.0, 1.0])).round()
        tensor([100., 0., 0.])
    """
    v.check_colors(colors, "colors")
    return _from_image(kc.rgb_to_lab(_as_image(_float(colors))))


def lab_to_srgb(lab: Tensor, *, clip: bool = True) -> Tensor:
    """Convert CIELAB (D65) colours to sRGB.

    Args:
        lab: ``[..., 3]`` float Lab, L in [0, 100].
        clip: clamp out-of-gamut results to [0, 1] (the default, so the result is valid sRGB).

    Returns:
        ``[..., 3]`` float sRGB.

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.lab_to_srgb(torch.tensor([[100.0, 0.0, 0.0]])).round()
        tensor([[1., 1., 1.]])
    """
    v.check_colors(lab, "lab", value_range=None)
    return _from_image(kc.lab_to_rgb(_as_image(_float(lab)), clip=clip))


# Ottosson (2020): linear sRGB -> LMS, and non-linear LMS -> Lab.
_M1 = (
    (0.4122214708, 0.5363325363, 0.0514459929),
    (0.2119034982, 0.6806995451, 0.1073969566),
    (0.0883024619, 0.2817188376, 0.6299787005),
)
_M2 = (
    (0.2104542553, 0.7936177850, -0.0040720468),
    (1.9779984951, -2.4285922050, 0.4505937099),
    (0.0259040371, 0.7827717662, -0.8086757660),
)
_M2_INV = (
    (1.0, 0.3963377774, 0.2158037573),
    (1.0, -0.1055613458, -0.0638541728),
    (1.0, -0.0894841775, -1.2914855480),
)
_M1_INV = (
    (4.0767416621, -3.3077115913, 0.2309699292),
    (-1.2684380046, 2.6097574011, -0.3413193965),
    (-0.0041960863, -0.7034186147, 1.7076147010),
)


def _matmul3(x: Tensor, m: tuple[tuple[float, float, float], ...]) -> Tensor:
    """``x [..., 3] @ m.T`` with the constant built on x's device and dtype."""
    return x @ torch.tensor(m, dtype=x.dtype, device=x.device).T


def srgb_to_oklab(colors: Tensor) -> Tensor:
    """Convert sRGB colours to Oklab (Ottosson 2020).

    Args:
        colors: ``[..., 3]`` float sRGB in [0, 1].

    Returns:
        ``[..., 3]`` Oklab (L in [0, 1]).

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.srgb_to_oklab(torch.tensor([1.0, 1.0, 1.0])).round(decimals=3).abs()
        tensor([1., 0., 0.])
    """
    v.check_colors(colors, "colors")
    linear = _from_image(kc.rgb_to_linear_rgb(_as_image(_float(colors))))
    lms = _matmul3(linear, _M1)
    return _matmul3(torch.sign(lms) * lms.abs().pow(1.0 / 3.0), _M2)


def oklab_to_srgb(oklab: Tensor, *, clip: bool = True) -> Tensor:
    """Convert Oklab colours to sRGB (clamped to [0, 1] unless ``clip=False``).

    Args:
        oklab: ``[..., 3]`` float Oklab.
        clip: clamp out-of-gamut results to [0, 1].

    Returns:
        ``[..., 3]`` float sRGB.

    Example:
        >>> import torch, torchpalette as tp
        >>> tp.oklab_to_srgb(torch.tensor([1.0, 0.0, 0.0])).round(decimals=4)
        tensor([1., 1., 1.])
    """
    v.check_colors(oklab, "oklab", value_range=None)
    lms = _matmul3(_float(oklab), _M2_INV).pow(3)
    linear = _matmul3(lms, _M1_INV)
    if clip:
        linear = linear.clamp(0.0, 1.0)
    return _from_image(kc.linear_rgb_to_rgb(_as_image(linear)))


def parse_colors(colors):  # placeholder: replaced by the colour-parsing work (issue 3)
    raise NotImplementedError


def to_hex(colors):  # placeholder: replaced by the colour-parsing work (issue 3)
    raise NotImplementedError
