"""Histograms and dominant colours (placeholder; issue 5)."""
from typing import NamedTuple

from torch import Tensor


class Palette(NamedTuple):
    """A weighted palette: colours ``[..., K, 3]`` sRGB float in [0, 1] and weights ``[..., K]``
    (pixel fractions summing to 1, sorted descending)."""

    colors: Tensor
    weights: Tensor


def histogram(image, bins=256):
    raise NotImplementedError


def dominant_colors(image, top_n=32, *, bins=16):
    raise NotImplementedError
