"""Soft assignment of pixels to palette colours, shared by the learnable layers
(:class:`~torchpalette.nn.PaletteQuantizer` with ``temperature``, and
:class:`~torchpalette.nn.PaletteVQ`), and the distance unit of each colour space.

Temperatures are in squared units of :data:`SPACE_UNIT` (about one just-noticeable
difference in each space), so ``temperature=1`` means the same in every space: two colours one
JND apart share a pixel between them (weights ``e^-1`` apart), a pixel several JNDs nearer to
one colour takes it almost alone. Weights: ``softmax_j(-|x - c_j|^2 / (tau * unit^2))``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _policy
from .._image import like_input, merge_alpha, split_alpha, to_float
from .._spaces import to_space, to_space_cf

#: One distance unit per space: ``tp.JND`` (2.3) in CIELAB; Oklab and sRGB in [0, 1] are
#: about Lab / 100, so 0.023 there.
SPACE_UNIT = {"lab": 2.3, "oklab": 0.023, "srgb": 0.023}


def soft_assign(image: Tensor, palette: Tensor, space: str, temperature: float) -> Tensor:
    """Soft quantization: every pixel of ``image [..., 3|4, H, W]`` (in [0, 1]) becomes
    ``sum_j w_j c_j`` with ``w = softmax_j(-|x - c_j|^2 / (temperature * unit^2))``,
    distances in ``space`` between the pixel and palette ``[..., K, 3]`` (``unit``:
    :data:`SPACE_UNIT`) -> image of the input's dtype.
    Differentiable in the image and the palette; float32 (float64) even under autocast."""
    rgb, alpha = split_alpha(image)
    h, w = rgb.shape[-2:]
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    x = to_float(rgb, dtype).reshape(-1, 3, h * w)  # [B, 3, P]
    b, k = x.shape[0], palette.shape[-2]
    pal = torch.broadcast_to(palette, (*rgb.shape[:-3], k, 3)).reshape(b, k, 3)
    with _policy.no_autocast(x):
        pal = pal.to(dtype)
        xs, ps = to_space_cf(x, space, dtype), to_space(pal, space)  # [B, 3, P], [B, K, 3]
        dist = ((ps * ps).sum(-1, keepdim=True) - 2.0 * torch.bmm(ps, xs)
                + (xs * xs).sum(1, keepdim=True))  # [B, K, P]
        weights = torch.softmax(-dist / (temperature * SPACE_UNIT[space] ** 2), dim=1)
        out = torch.bmm(pal.transpose(1, 2), weights)  # [B, 3, P]
    out = like_input(out.reshape(*rgb.shape[:-3], 3, h, w), image)
    return merge_alpha(out, alpha)


def hard_soft(hard: Tensor, soft: Tensor) -> Tensor:
    """``hard``'s values with ``soft``'s gradient: ``soft - soft.detach()`` is exactly 0, so
    the forward pass is the hard assignment (training sees what eval sees) and the backward
    pass the soft one's."""
    if not soft.requires_grad:
        return hard
    return hard.detach() + (soft - soft.detach()).to(hard.dtype)
