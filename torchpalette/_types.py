"""Result types shared by several concepts."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class Palette(NamedTuple):
    """A weighted palette: colours ``[..., K, 3]`` sRGB float in [0, 1] and weights ``[..., K]``
    (pixel fractions, sorted descending)."""

    colors: Tensor
    weights: Tensor
