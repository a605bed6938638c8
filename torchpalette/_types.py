"""Result types shared by several concepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from ._image import float_to_uint8, merge_alpha


class Palette(NamedTuple):
    """A weighted palette: colours ``[..., K, 3]`` sRGB float in [0, 1] and weights ``[..., K]``
    (pixel fractions, sorted descending)."""

    colors: Tensor
    weights: Tensor


#: Index dtypes by palette size: the smallest signed-or-byte type that holds every index.
#: ``uint8`` up to 256 colours; ``int16`` up to 32,768 (torch has few ``uint16`` kernels, and
#: the values are the same non-negative numbers a ``uint16`` file holds); ``int32`` beyond.
_INDEX_LIMITS = ((torch.uint8, 256), (torch.int16, 1 << 15), (torch.int32, 1 << 31))


def index_dtype_for(k: int) -> torch.dtype:
    """The smallest index dtype of a ``k``-colour palette (see :data:`_INDEX_LIMITS`)."""
    for dtype, limit in _INDEX_LIMITS:
        if k <= limit:
            return dtype
    return torch.int64


def index_capacity(dtype: torch.dtype) -> int:
    """How many palette entries indices of ``dtype`` can address."""
    if dtype == torch.int64:
        return 1 << 63
    for d, limit in _INDEX_LIMITS:
        if d == dtype:
            return limit
    raise KeyError(dtype)


@dataclass(frozen=True)
class Quantized:
    """An image as palette indices plus its palette: what :func:`torchpalette.quantize` returns.

    Attributes:
        indices: ``[..., H, W]`` index of each pixel's palette entry; ``uint8`` when K <= 256,
            ``int16`` up to 32,768 entries, ``int32`` beyond (or the ``index_dtype`` asked for).
        palette: ``[..., K, 3]`` sRGB float in [0, 1] (float32, or the image's float dtype;
            a given palette keeps its dtype and its autograd history), or ``[..., K, 4]``
            RGBA where alpha is quantized.
        weights: ``[..., K]`` fraction of the visible pixels of each entry (sum 1 per image;
            0 for an image whose pixels are all transparent).
        alpha: ``[..., 1, H, W]`` the input's alpha channel, passed through, or None (no
            alpha, or alpha quantized in the palette).
        dtype: the input image's dtype, which :meth:`image` returns.
    """

    indices: Tensor
    palette: Tensor
    weights: Tensor
    alpha: Tensor | None
    dtype: torch.dtype

    def image(self) -> Tensor:
        """Decode: every pixel takes its palette colour, ``[..., 3|4, H, W]`` of the input's
        dtype (uint8 colours are ``round(255 c)``, the package's one rounding rule); alpha
        passes through. Bit-identical to :func:`torchpalette.reduce_colors` /
        :func:`torchpalette.apply_palette` with the same options."""
        *batch, h, w = self.indices.shape
        k, c = self.palette.shape[-2:]
        pal = self.palette.reshape(-1, k, c)
        pal = float_to_uint8(pal) if self.dtype == torch.uint8 else pal.to(self.dtype)
        labels = self.indices.reshape(pal.shape[0], 1, h * w).long().expand(-1, c, -1)
        out = pal.transpose(1, 2).gather(2, labels).reshape(*batch, c, h, w)
        return merge_alpha(out, self.alpha)
