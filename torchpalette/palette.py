"""palette() (placeholder; issue 4)."""
from typing import NamedTuple

from torch import Tensor


class Palette(NamedTuple):
    """A weighted palette: colours ``[..., K, 3]`` sRGB float in [0, 1] and weights ``[..., K]``
    (pixel fractions summing to 1, sorted descending)."""

    colors: Tensor
    weights: Tensor




def palette(image, k=16, *, space="lab", max_pixels=None, seed=0, **kmeans_kw):
    raise NotImplementedError
