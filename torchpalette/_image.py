"""Internal image helpers shared by every module that reads pixels.

"dtype defines the range": uint8 images hold 0..255, float images hold sRGB in [0, 1]. These
helpers move between the two and split off alpha, so that
no public function repeats that bookkeeping.
"""

from __future__ import annotations

import torch
from torch import Tensor


def to_float(image: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """uint8 [0, 255] or float [0, 1] -> float in [0, 1] (float32 for uint8 unless ``dtype``)."""
    if image.dtype == torch.uint8:
        return image.to(dtype or torch.float32).div_(255.0)
    if dtype is not None and image.dtype != dtype:
        return image.to(dtype)
    if image.dtype in (torch.float16, torch.bfloat16):
        return image.float()
    return image


def like_input(image: Tensor, reference: Tensor) -> Tensor:
    """Convert a float image in [0, 1] back to ``reference``'s dtype (uint8 is rounded)."""
    if image.dtype == reference.dtype:  # already there (e.g. uint8 -> uint8): no rescaling
        return image
    if reference.dtype == torch.uint8:
        return image.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    return image.to(reference.dtype)


def split_alpha(image: Tensor) -> tuple[Tensor, Tensor | None]:
    """``[..., 3|4, H, W]`` -> (rgb ``[..., 3, H, W]``, alpha ``[..., 1, H, W]`` or None)."""
    if image.shape[-3] == 4:
        return image[..., :3, :, :], image[..., 3:, :, :]
    return image, None


def merge_alpha(rgb: Tensor, alpha: Tensor | None) -> Tensor:
    """Inverse of :func:`split_alpha`; alpha passes through unchanged."""
    return rgb if alpha is None else torch.cat([rgb, alpha.to(rgb.dtype)], dim=-3)


def float_to_uint8(x: Tensor) -> Tensor:
    """Float values in [0, 1] (colours or images, any shape) -> uint8 ``round(255 x)``.

    The one 8-bit rounding rule of the package, for palettes and pixels alike (apply_palette's
    uint8 output, write_image's indexed PNG entries, the 8-bit levels that histograms and bins
    count): the product is taken in float64, where ``255 x`` of a float32/float16 value is
    exact, so a value like 102.49999 never becomes a float32 tie at 102.5 that one caller
    rounds up and another down. Ties round half to even.
    """
    return x.to(torch.float64).mul(255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def to_levels(image: Tensor) -> Tensor:
    """uint8 image (as is) or float image in [0, 1] -> uint8 levels by :func:`float_to_uint8`."""
    return image if image.dtype == torch.uint8 else float_to_uint8(image)
