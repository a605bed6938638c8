"""ΔE as a loss (``torchpalette.nn.DeltaELoss``): one :func:`torchpalette.delta_e` call plus a
reduction, as a module."""

from __future__ import annotations

import inspect

import torch
from torch import Tensor

from .. import _validate as v
from ..difference import METHODS as _DE_METHODS
from ..difference import SPACES as _DE_SPACES
from ..difference import delta_e as _delta_e

_DELTA_E = inspect.signature(_delta_e).parameters
_REDUCTIONS = ("mean", "sum", "none")


class DeltaELoss(torch.nn.Module):
    """Colour difference ΔE between images as a loss: one :func:`torchpalette.delta_e` call,
    then a reduction.

    Args:
        method: ``"ciede2000"`` (default), ``"cie94"``, ``"cie76"`` or ``"cmc"``, as in
            :func:`torchpalette.delta_e`. cie94 and cmc take ``target`` as the reference.
        space: ``"srgb"`` (default; float values in [0, 1], clamp model outputs first) or
            ``"lab"``.
        dim: the channel dim, ``-3`` for ``[..., 3, H, W]`` images (``-1`` for ``[..., 3]``
            colours).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the per-pixel ΔE).

    Shape:
        - input: ``[..., 3, H, W]`` (3 channels at ``dim``), float.
        - target: broadcastable with ``input``, same device.
        - output: a scalar, or for ``"none"`` the broadcast shape without ``dim``
          (``[..., H, W]``). float32 (float64 for float64 inputs), also under autocast.

    Raises:
        TypeError, ValueError: in ``__init__`` for a bad argument, naming it; in ``forward`` as
            :func:`torchpalette.delta_e`.

    Example:
        >>> import torch, torchpalette as tp
        >>> loss = tp.nn.DeltaELoss()
        >>> loss
        DeltaELoss(method='ciede2000', space='srgb', dim=-3, reduction='mean')
        >>> x = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
        >>> value = loss(x, torch.zeros(2, 3, 4, 4))
        >>> value.backward()
        >>> round(float(value.detach()), 2), x.grad.shape
        (39.74, torch.Size([2, 3, 4, 4]))
    """

    def __init__(
        self,
        method: str = _DELTA_E["method"].default,
        space: str = _DELTA_E["space"].default,
        dim: int = -3,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.method = v.check_choice(method, "method", _DE_METHODS)
        self.space = v.check_choice(space, "space", _DE_SPACES)
        self.dim = v.check_int(dim, "dim")
        self.reduction = v.check_choice(reduction, "reduction", _REDUCTIONS)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 (torch's name)
        loss = _delta_e(target, input, method=self.method, space=self.space, dim=self.dim)
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, space={self.space!r}, dim={self.dim}, "
            f"reduction={self.reduction!r}"
        )
