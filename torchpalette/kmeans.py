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

References:
    D. Arthur, S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
    S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory 28(2), 1982.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import NamedTuple

import torch
from torch import Tensor

from . import _validate as v

__all__ = ["KMeansResult", "kmeans"]

_CHECK_EVERY = 4  # Lloyd steps between host-side "all converged?" checks (GPU)
_SMALL_WORK = 1 << 21  # distances per Lloyd step below which a CPU k-means runs on 1 thread


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`.

    Attributes:
        centroids: ``[..., k, D]`` cluster centres (points' dtype).
        labels: ``[..., N]`` int64 index of each point's centroid.
        inertia: ``[...]`` weighted sum of squared distances to the nearest centroid.
        n_iter: ``[...]`` int64 Lloyd steps run for each batch element.
    """

    centroids: Tensor
    labels: Tensor
    inertia: Tensor
    n_iter: Tensor


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
    v.check_float_dtype(points, "points")
    if points.ndim < 2:
        raise ValueError(f"points: expected shape [..., N, D], got {v.shape_str(points.shape)}")
    v.check_nonempty(points, "points")
    v.check_finite(points, "points")
    k = v.check_int(k, "k", low=1)
    _check_options(max_iter=max_iter, tol=tol, n_init=n_init)
    if weights is not None:
        v.check_tensor(weights, "weights")
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
        n_pos = int((weights > 0).sum(-1).min())
    else:
        n_pos = points.shape[-2]
    if k > n_pos:
        raise ValueError(
            f"k: expected at most the number of points with positive weight ({n_pos}), got {k}"
        )
    _check_init(init, points.shape, k, n_init)
    result, degenerate = _kmeans(
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


def _check_options(*, max_iter: int = 100, tol: float = 1e-4, n_init: int = 1) -> None:
    """Validate the scalar k-means options (shared with :func:`torchpalette.palette`)."""
    v.check_int(max_iter, "max_iter", low=0)
    v.check_int(n_init, "n_init", low=1)
    v.check_positive(tol, "tol", allow_zero=True)


def _check_init(init: str | Tensor, shape: tuple[int, ...], k: int, n_init: int) -> None:
    """Validate ``init`` against points of ``shape [..., N, D]``."""
    if isinstance(init, Tensor):
        v.check_float_dtype(init, "init")
        want = (*shape[:-2], k, shape[-1])
        try:
            torch.broadcast_shapes(init.shape, want)
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


def _kmeans(
    points: Tensor,
    k: int,
    *,
    weights: Tensor | None = None,
    init: str | Tensor = "k-means++",
    max_iter: int = 100,
    tol: float = 1e-4,
    n_init: int = 1,
    generator: torch.Generator | None = None,
) -> tuple[KMeansResult, Tensor]:
    """Unchecked k-means core behind :func:`kmeans`, for internal callers (palette, layers).

    Same arguments as :func:`kmeans` but nothing is validated and ``k`` may exceed the number
    of distinct (or positive-weight) points. Returns ``(result, degenerate)`` where
    ``degenerate [...]`` bool marks elements with fewer distinct points than ``k`` (no host
    sync is done for it; the caller decides whether to warn).
    """
    batch = points.shape[:-2]
    n, d = points.shape[-2:]
    x = points.reshape(-1, n, d)
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    b = x.shape[0]
    w = (
        torch.ones(b, n, dtype=x.dtype, device=x.device)
        if weights is None
        else torch.broadcast_to(weights, (*batch, n)).reshape(b, n).to(x.dtype)
    )
    xx = (x * x).sum(-1)  # [B, N]
    # tol relative to the spread of the data (as scikit-learn): mean per-dim weighted variance
    wsum = w.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    mean = (w.unsqueeze(-1) * x).sum(1, keepdim=True) / wsum.unsqueeze(-1)
    var = (w.unsqueeze(-1) * (x - mean).square()).sum(1) / wsum  # [B, D]
    thr = (tol * tol) * var.mean(-1)  # squared-shift threshold [B]

    with _few_threads(x, n_init * b * n * k):
        return _kmeans_body(x, batch, k, w, xx, thr, init, max_iter, n_init, generator)


@contextlib.contextmanager
def _few_threads(x: Tensor, work: int, limit: int | None = None):
    """One CPU thread for small problems (``work`` < ``limit``; default: distances per Lloyd
    step < 2**21). Also used by :mod:`torchpalette.palette` for small pixel counts.

    A k-means on histogram bins is hundreds of mid-size ops; each opens a parallel region,
    and on a loaded machine (or next to DataLoader workers) every region waits for a
    descheduled thread: a batch of 8 palettes took 2-4 s on 2 threads against 0.1 s on one.
    scikit-learn limits its BLAS threads inside KMeans for the same reason. The previous
    setting is restored on exit.
    """
    old = torch.get_num_threads()
    if x.device.type != "cpu" or old <= 1 or work >= (_SMALL_WORK if limit is None else limit):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _kmeans_body(
    x: Tensor,
    batch: tuple[int, ...],
    k: int,
    w: Tensor,
    xx: Tensor,
    thr: Tensor,
    init: str | Tensor,
    max_iter: int,
    n_init: int,
    generator: torch.Generator | None,
) -> tuple[KMeansResult, Tensor]:
    """Seeding, Lloyd steps and the final assignment of :func:`_kmeans` (``x [B, N, D]``)."""
    b, n, d = x.shape
    if isinstance(init, Tensor):
        c0 = torch.broadcast_to(init.to(x), (*batch, k, d)).reshape(b, k, d)
        degenerate = torch.zeros(b, dtype=torch.bool, device=x.device)
        xr, xxr, wr, thrr = x, xx, w, thr
    else:
        # n_init runs side by side: replicate the batch to [n_init * B]
        xr, xxr, wr, thrr = (t.repeat((n_init,) + (1,) * (t.ndim - 1)) for t in (x, xx, w, thr))
        c0, degenerate = _kmeans_pp(xr, xxr, wr, k, n_init, generator)
        degenerate = degenerate.view(n_init, b).any(0)
    cent, n_iter = _lloyd(xr, xxr, wr, c0, thrr, max_iter)
    labels, mind = _assign(xr.transpose(1, 2), xxr, cent)
    inertia = (wr * mind).sum(-1)
    if not isinstance(init, Tensor) and n_init > 1:
        best = inertia.view(n_init, b).argmin(0)  # [B]
        ar = torch.arange(b, device=x.device)
        cent = cent.view(n_init, b, k, d)[best, ar]
        labels = labels.view(n_init, b, n)[best, ar]
        inertia = inertia.view(n_init, b)[best, ar]
        n_iter = n_iter.view(n_init, b)[best, ar]
    res = KMeansResult(
        cent.reshape(*batch, k, d),
        labels.reshape(*batch, n),
        inertia.reshape(batch),
        n_iter.reshape(batch),
    )
    return res, degenerate.reshape(batch)


def _nearest(c: Tensor, xt: Tensor, fused: bool | None = None) -> tuple[Tensor, Tensor]:
    """Nearest centroid without ``|x|^2``: centroids ``c [B, k, D]``, points transposed
    ``xt [B, D, N]`` -> (labels ``[B, N]`` int64, ``min_j |c_j|^2 - 2 x.c_j`` ``[B, N]``).

    Distances are laid out ``[B, k, N]``. On CPU they are reduced with ``amin`` over dim 1
    plus an equality mask for the index, several times faster than ``argmin``/``min`` over a
    short dim there (ties pick the highest index); on other devices with one ``min(1)``
    (values and indices in one pass). Shared with :mod:`torchpalette.quantize`.
    """
    cc = (c * c).sum(-1, keepdim=True)  # [B, k, 1]
    return _argmin_k(torch.baddbmm(cc, c, xt, alpha=-2.0), fused)  # distances [B, k, N]


def _argmin_k(dist: Tensor, fused: bool | None = None) -> tuple[Tensor, Tensor]:
    """``dist [B, k, N]`` -> (index of the minimum over k ``[B, N]`` int64, minimum ``[B, N]``)
    (see :func:`_nearest`; ``fused`` forces the GPU reduction, None = by device)."""
    k = dist.shape[1]
    if dist.device.type != "cpu" if fused is None else fused:  # one value+index reduction
        m, labels = dist.min(1)
        return labels, m
    m = dist.amin(1, keepdim=True)
    small = torch.uint8 if k <= 256 else torch.int32
    ar = torch.arange(k, device=dist.device, dtype=small).view(1, k, 1)
    labels = ((dist == m).to(small) * ar).amax(1)
    return labels.long(), m.squeeze(1)


def _assign(xt: Tensor, xx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid: ``xt [B, D, N]`` points transposed, ``xx = |x|^2 [B, N]``,
    ``c [B, k, D]`` -> (labels ``[B, N]`` int64, squared distance ``[B, N]``)."""
    labels, m = _nearest(c, xt)
    return labels, (m + xx).clamp_min_(0.0)


def _draw(p: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draws: rows of non-negative ``p [R, N]``, uniforms ``u [R, L]`` in [0, 1)
    -> indices ``[R, L]`` of points with ``p > 0`` (rows of zeros fall back to index 0)."""
    cdf = p.cumsum(-1)
    total = cdf[:, -1:].contiguous()
    idx = torch.searchsorted(cdf, u * total, right=True)  # cdf steps up there: p > 0
    # u * total may round up to total: fall back to the first index where the cdf reaches
    # its total, the last drawable point (index 0 for a row of zeros)
    return torch.minimum(idx, torch.searchsorted(cdf, total))


def _kmeans_pp(
    x: Tensor, xx: Tensor, w: Tensor, k: int, n_init: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Greedy k-means++ seeds for ``x [R, N, D]`` (R = n_init * B, run-major) -> (centroids
    ``[R, k, D]``, degenerate ``[R]`` bool: the potential reached 0 before k seeds)."""
    r, n, d = x.shape
    trials = 2 + int(math.log(k))
    gen_device = generator.device if generator is not None else torch.device("cpu")
    # One set of uniforms per run, shared by the batch, so element i never depends on B.
    u = torch.rand(n_init, k, trials, generator=generator, device=gen_device, dtype=torch.float64)
    u = u.to(device=x.device, dtype=x.dtype).repeat_interleave(r // n_init, dim=0)  # [R, k, L]
    rows = torch.arange(r, device=x.device)
    first = _draw(w, u[:, 0, :1])[:, 0]  # [R]
    cent = x.new_empty(r, k, d)
    cent[:, 0] = x[rows, first]
    d2 = (xx - 2 * (x @ cent[:, 0].unsqueeze(-1)).squeeze(-1) + xx[rows, first, None]).clamp_min_(0)
    degenerate = torch.zeros(r, dtype=torch.bool, device=x.device)
    for j in range(1, k):
        p = w * d2
        total = p.sum(-1, keepdim=True)
        flat = total <= 0  # every point sits on a seed already
        degenerate |= flat[:, 0]
        p = torch.where(flat, w, p)
        cand = _draw(p, u[:, j])  # [R, L]
        cx = x.gather(1, cand.unsqueeze(-1).expand(-1, -1, d))  # [R, L, D]
        dc = torch.baddbmm(
            xx.unsqueeze(1) + xx.gather(1, cand).unsqueeze(-1), cx, x.transpose(1, 2), alpha=-2.0
        ).clamp_min_(0)  # [R, L, N]
        dc = torch.minimum(dc, d2.unsqueeze(1))
        best = (dc * w.unsqueeze(1)).sum(-1).argmin(-1)  # [R]
        cent[:, j] = cx[rows, best]
        d2 = dc[rows, best]
    return cent, degenerate


def _lloyd(
    x: Tensor,
    xx: Tensor,
    w: Tensor,
    cent: Tensor,
    thr: Tensor,
    max_iter: int,
    gpu_style: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Weighted Lloyd steps from ``cent [R, k, D]``; returns (centroids, n_iter ``[R]``).

    Converged elements are frozen; once at most half of the live ones are still moving, the
    batch is compacted to those (a batch of photos has a long tail: at k=16 the median image
    converges in ~12 steps, the slowest of 256 in ~50). ``gpu_style`` forces the sync-free
    one-hot variant (None = on non-CPU devices), so the tests run it on CPU too.
    """
    r, n, d = x.shape
    k = cent.shape[1]
    xt = x.transpose(1, 2).contiguous()  # [R, D, N]
    xw = torch.cat([xt * w.unsqueeze(1), w.unsqueeze(1)], dim=1)  # [R, D + 1, N]
    on_cpu = x.device.type == "cpu" if gpu_style is None else not gpu_style
    onehot_update = not on_cpu  # GPU: one-hot bmm; CPU: scatter_add (faster)
    # On CPU a host check costs nothing: test convergence every step and skip the re-seeding
    # work when no cluster is empty. On a GPU the loop syncs only every few steps.
    check_every = 1 if on_cpu else _CHECK_EVERY
    active = torch.ones(r, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(r, dtype=torch.int64, device=x.device)
    n_far = min(k, n)
    tiny = torch.finfo(x.dtype).tiny
    rows: Tensor | None = None  # batch index of each live element (None: all of them)
    out_cent, out_iter = cent, n_iter
    for it in range(max_iter):
        rl = x.shape[0]
        labels, m = _nearest(cent, xt, not on_cpu)  # m + xx = squared distance (re-seeding)
        if onehot_update:
            onehot = x.new_zeros(rl, k, n).scatter_(1, labels.unsqueeze(1), 1.0)  # [R, k, N]
            sums = torch.bmm(xw, onehot.transpose(1, 2))  # [R, D + 1, k]
        else:
            sums = xw.new_zeros(rl, d + 1, k)
            sums.scatter_add_(2, labels.unsqueeze(1).expand(-1, d + 1, -1), xw)
        count = sums[:, d]  # [R, k]
        new = (sums[:, :d] / count.clamp_min(tiny).unsqueeze(1)).transpose(1, 2)  # [R, k, D]
        # empty clusters: re-seed from the points farthest from their centroid
        empty = count <= 0  # [R, k]
        if not on_cpu or bool(empty.any()):
            mind = (m + xx).clamp_min_(0.0)
            far = torch.where(w > 0, mind, -1.0).topk(n_far, dim=-1).indices  # [R, n_far]
            rank = (empty.cumsum(-1) - 1).clamp(0, n_far - 1)
            seeds = x.gather(1, far.gather(1, rank).unsqueeze(-1).expand(-1, -1, d))
            new = torch.where(empty.unsqueeze(-1), seeds, new)
        shift = (new - cent).square().sum(-1).amax(-1)  # [R]
        cent = torch.where(active.view(rl, 1, 1), new, cent)
        n_iter = n_iter + active
        active = active & (shift > thr)
        if (it + 1) % check_every == 0:
            n_active = int(active.sum())
            if n_active == 0:
                break
            if n_active <= rl // 2:  # compact the batch to the elements still moving
                out_cent, out_iter = _put_rows(out_cent, out_iter, rows, cent, n_iter)
                keep = active.nonzero().squeeze(1)
                rows = keep if rows is None else rows[keep]
                x, xx, w, xt, xw, cent, thr, n_iter = (
                    t[keep] for t in (x, xx, w, xt, xw, cent, thr, n_iter)
                )
                active = active[keep]
    return _put_rows(out_cent, out_iter, rows, cent, n_iter)


def _put_rows(
    full_cent: Tensor, full_iter: Tensor, rows: Tensor | None, cent: Tensor, n_iter: Tensor
) -> tuple[Tensor, Tensor]:
    """Write the live elements' results back into the full batch (``rows`` None: all live)."""
    if rows is None:
        return cent, n_iter
    full_cent = full_cent.clone()
    full_iter = full_iter.clone()
    full_cent[rows] = cent
    full_iter[rows] = n_iter
    return full_cent, full_iter
