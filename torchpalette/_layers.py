"""Shared plumbing of the quantizer layers (:mod:`torchpalette.nn`): tv_tensors in and out,
the straight-through estimator, palette arguments and the ``fit`` class/instance method."""

from __future__ import annotations

import functools
import sys
from typing import Any

import torch
from torch import Tensor

from . import _validate as v
from ._types import Palette

MAX_COLORS = 256  # one byte per index, as indexed PNG and GIF store them


def unwrap(image: Any) -> Tensor:
    """A plain ``Tensor`` view of ``image`` (tv_tensors would route every op through
    ``__torch_function__``); non-tensors pass on to the functional core's type check."""
    if isinstance(image, Tensor) and type(image) is not Tensor:
        return image.as_subclass(Tensor)
    return image


def rewrap(out: Tensor, like: Any) -> Tensor:
    """Give ``out`` the tv_tensors type (and metadata) of ``like``. torchvision is only looked
    up when ``like`` is a tensor subclass, so importing torchpalette never imports it."""
    if type(like) is Tensor:
        return out
    tvt = sys.modules.get("torchvision.tv_tensors")
    if tvt is not None and isinstance(like, tvt.TVTensor):
        return tvt.wrap(out, like=like)
    return out


def layer_result(out: Tensor, like: Any, rest: tuple) -> Any:
    out = rewrap(out, like)
    return (out, *rest) if rest else out


class StraightThrough(torch.autograd.Function):
    """Forward: the quantized image; backward: the identity (Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx, image: Tensor, quantized: Tensor) -> Tensor:  # noqa: ARG004
        return quantized.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return grad, None


def check_colors_arg(colors: Any, name: str = "colors") -> int:
    return v.check_int(colors, name, low=1, high=MAX_COLORS)


class fitmethod:
    """``PaletteQuantizer.fit(...)`` builds a new layer; ``layer.fit(...)`` refits ``layer``
    in place (keeping its settings and device) and returns it, as scikit-learn users expect."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj, cls):
        return functools.wraps(self.fn)(functools.partial(self.fn, cls, obj))


def as_palette(palette: Any) -> Tensor | None:
    """Tensor ``[..., K, 3]`` / :class:`Palette` / list of colour specs -> float ``[..., K, 3]``."""
    if palette is None:
        return None
    if isinstance(palette, Palette):
        palette = palette.colors
    if not isinstance(palette, Tensor):
        from .color import parse_colors  # colour names, hex strings, 0..255 tuples

        palette = parse_colors(list(palette))
    palette = unwrap(palette)
    v.check_colors(palette, "palette", min_ndim=2)
    v.check_int(palette.shape[-2], "palette colours (K of [..., K, 3])", low=1, high=MAX_COLORS)
    return palette.detach().clone()
