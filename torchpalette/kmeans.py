"""Batched k-means (placeholder; issue 4)."""
from typing import NamedTuple

from torch import Tensor


class KMeansResult(NamedTuple):
    centroids: Tensor
    labels: Tensor
    inertia: Tensor
    n_iter: Tensor


def kmeans(points, k, *, weights=None, init="k-means++", max_iter=100, tol=1e-4, n_init=1,
           generator=None):
    raise NotImplementedError
