"""Batched, weighted k-means with greedy k-means++ seeding.

Every batch element of ``points [..., N, D]`` is clustered independently, all in one pass: the
Lloyd steps are batched matrix products, not a Python loop over the batch. Points carry weights
(``weight 0`` = ignored), so padded or masked pixels and histogram bins (a bin = its pixels'
mean, weighted by their count) are clustered like repeated points.

Algorithm (the vocabulary is scikit-learn's: ``inertia``, ``n_iter``, ``k-means++``):

1. **Seeding**: greedy k-means++ (Arthur & Vassilvitskii 2007): the first centroid is drawn
   with probability proportional to the weight, every next one from ``2 + ln k`` candidates
   drawn with probability proportional to ``weight * D(x)^2``, keeping the candidate that
   lowers the potential most. Draws are inverse-CDF look-ups of uniforms taken from the
   generator with a shape that does not depend on the batch, so ``kmeans(x)[i] ==
   kmeans(x[i])`` for the same seed.
2. **Lloyd steps**: squared distances as ``|x|^2 - 2 x.c + |c|^2`` (one ``baddbmm``), weighted
   means as a one-hot ``bmm``; empty clusters are re-seeded from the points farthest from their
   centroid; an element stops once its largest centroid move is below ``tol`` times the
   data's standard deviation (converged elements are frozen, so batching never changes a
   result). The host checks for "all converged" only every few steps.

The engine is ``torchpalette._kmeans`` (shared with palettes); this module checks the input.

References:
    D. Arthur, S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
    S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from . import _validate as v
from ._kmeans import KMeansResult, cluster

__all__ = ["KMeansResult", "kmeans"]


def kmeans(
    points: Tensor,
    k: int,
    *,
    weights: Tensor | None = None,
    init: str | Tensor = "k-means++",
    max_iter: int = 100,
    tol: float = 1e-4,
    n_init: int = 1,
    generator: torch.Generator | None = None,
) -> KMeansResult:
    """Cluster each batch element of ``points`` into ``k`` weighted k-means clusters.

    Args:
        points: ``[..., N, D]`` float points; leading dims are independent batch elements.
        k: number of clusters, 1 <= k <= number of positive-weight points of every element.
        weights: ``[..., N]`` non-negative weights (broadcastable); 0 ignores a point.
            Default: all 1.
        init: ``"k-means++"`` or a tensor ``[..., k, D]`` of starting centroids
            (broadcastable to the batch; then ``n_init`` must be 1).
        max_iter: most Lloyd steps (>= 0; 0 returns the seeds).
        tol: stop when the largest centroid move is below ``tol`` times the data's standard
            deviation (root of the weighted per-dimension variance, averaged over dims).
        n_init: independent seedings; the lowest-inertia run is kept per batch element.
        generator: source of randomness; the same generator state gives the same result on
            a given device (draws are taken on the generator's device).

    Returns:
        :class:`KMeansResult` with centroids ``[..., k, D]``, labels ``[..., N]`` int64,
        inertia ``[...]`` and n_iter ``[...]`` int64.

    Raises:
        TypeError: ``points``/``weights``/``init`` not float tensors, or non-int ``k``.
        ValueError: wrong shapes, empty input, NaN/inf, negative weights, ``k < 1``, ``k``
            larger than the number of positive-weight points, or bad ``init``/``n_init``.

    Warns:
        UserWarning: an element has fewer distinct points than ``k`` (k centroids are still
            returned; some are duplicates with no points).

    Example:
        >>> import torch, torchpalette as tp
        >>> x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
        >>> res = tp.kmeans(x, 2, generator=torch.Generator().manual_seed(0))
        >>> res.centroids[res.centroids[:, 0].argsort()]
        tensor([[ 0.0000,  0.5000],
                [10.0000,  0.5000]])
        >>> res.inertia
        tensor(1.)
    """
    v.check_tensor(points, "points")
    _check_has_data(points, "points")
    v.check_float_dtype(points, "points")
    if points.ndim < 2:
        raise ValueError(f"points: expected shape [..., N, D], got {v.shape_str(points.shape)}")
    v.check_nonempty(points, "points")
    v.check_finite(points, "points")
    span = _check_magnitude(points)
    k = v.check_int(k, "k", low=1)
    v.check_kmeans_options(max_iter=max_iter, tol=tol, n_init=n_init)
    if weights is not None:
        v.check_tensor(weights, "weights")
        _check_has_data(weights, "weights")
        v.check_float_dtype(weights, "weights")
        try:
            weights = torch.broadcast_to(weights, points.shape[:-1])
        except RuntimeError:
            raise ValueError(
                f"weights: expected shape {v.shape_str(points.shape[:-1])} (broadcastable), "
                f"got {v.shape_str(weights.shape)}"
            ) from None
        v.check_finite(weights, "weights")
        if bool((weights < 0).any()):
            raise ValueError(f"weights: expected values >= 0, got minimum {float(weights.min()):g}")
        _check_weight_sums(weights, span, points.dtype)
        n_pos = int((weights > 0).sum(-1).min())
    else:
        n_pos = points.shape[-2]
    if k > n_pos:
        raise ValueError(
            f"k: expected at most the number of points with positive weight ({n_pos}), got {k}"
        )
    _check_init(init, points.shape, k, n_init)
    result, degenerate = cluster(
        points, k, weights=weights, init=init, max_iter=max_iter, tol=tol, n_init=n_init,
        generator=generator,
    )
    if bool(degenerate.any()):
        warnings.warn(
            f"kmeans: fewer distinct points than k={k} in some batch element; "
            "duplicate centroids with no points were returned",
            UserWarning,
            stacklevel=2,
        )
    return result


def _check_has_data(x: Tensor, name: str) -> None:
    if x.device.type == "meta":
        raise ValueError(f"{name}: expected a tensor with data (cpu, cuda, ...), got a meta "
                         f"tensor {v.shape_str(x.shape)}")


def _check_magnitude(points: Tensor) -> float:
    """Largest ``|x|`` of ``points``; raises when squared distances would overflow the dtype
    (Lloyd compares ``sum((x - c)**2)``, which reaches ``4 D max|x|**2``)."""
    if not v.checks_enabled():  # value checks off, or compiling: no host sync
        return 0.0
    span = float(points.detach().abs().amax())
    limit = (torch.finfo(points.dtype).max / (4 * points.shape[-1])) ** 0.5
    if span > limit:
        raise ValueError(f"points: expected values with |x| <= {limit:.3g} (squared distances "
                         f"must fit {points.dtype}), got max |x| = {span:.3g}; rescale them")
    return span


def _check_weight_sums(weights: Tensor, span: float, dtype: torch.dtype) -> None:
    """Raises when weighted sums (cluster totals, weight x point) would overflow ``dtype``:
    only the ratios of weights matter, so rescaling them loses nothing."""
    if not v.checks_enabled():
        return
    total = float(weights.detach().double().sum(-1).max())
    limit = torch.finfo(dtype).max / max(4.0, 4.0 * span)
    if total > limit:
        raise ValueError(f"weights: expected a total per batch element <= {limit:.3g} (weighted "
                         f"sums must fit {dtype}), got {total:.3g}; rescale them (only their "
                         f"ratios matter)")


def _check_init(init: str | Tensor, shape: tuple[int, ...], k: int, n_init: int) -> None:
    """Validate ``init`` against points of ``shape [..., N, D]``."""
    if isinstance(init, Tensor):
        v.check_float_dtype(init, "init")
        want = (*shape[:-2], k, shape[-1])
        try:
            v.broadcast_shape(init.shape, want)
            ok = tuple(init.shape[-2:]) == tuple(want[-2:])
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"init: expected shape {v.shape_str(want)} (broadcastable), "
                f"got {v.shape_str(init.shape)}"
            )
        v.check_finite(init, "init")
        if n_init != 1:
            raise ValueError(f"n_init: expected 1 when init is a tensor, got {n_init}")
    else:
        v.check_choice(init, "init", ["k-means++"])
