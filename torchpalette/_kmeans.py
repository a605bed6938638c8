"""Engine of :func:`torchpalette.kmeans`: batched weighted k-means, unchecked.

Used by the public :func:`torchpalette.kmeans` (after its checks), by palettes and by dataset
palettes. Every batch element of ``points [B, N, D]`` is clustered independently in one pass:
greedy k-means++ seeding whose uniforms do not depend on the batch size, then Lloyd steps as
batched matrix products with converged elements frozen (and compacted away once half of them
have stopped), so ``cluster(x)[i] == cluster(x[i])`` for the same generator state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _policy
from ._nearest import nearest_centroid


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


def cluster(
    points: Tensor,
    k: int,
    **kw: Any,
) -> tuple[KMeansResult, Tensor]:
    """Unchecked k-means behind :func:`torchpalette.kmeans`, for internal callers; keywords
    as there. Runs in float32 (float64 for float64 points) also under ``torch.autocast``:
    bf16 distances stall Lloyd and change the result. See :func:`_cluster`."""
    with _policy.no_autocast(points):
        return _cluster(points, k, **kw)


def _cluster(
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
    """Unchecked k-means behind :func:`torchpalette.kmeans`, for internal callers.

    Same arguments as :func:`torchpalette.kmeans` but nothing is validated and ``k`` may
    exceed the number of distinct (or positive-weight) points. Returns ``(result,
    degenerate)`` where ``degenerate [...]`` bool marks elements with fewer distinct points
    than ``k`` (no host sync is done for it; the caller decides whether to warn).
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
    thr = _threshold(x, w, tol)

    work = n_init * b * n * k
    with _policy.single_thread_if_small(x, work, _policy.KMEANS_SMALL_WORK), _policy.ieee_fp32():
        return _cluster_batch(x, batch, k, w, xx, thr, init, max_iter, n_init, generator)


def _threshold(x: Tensor, w: Tensor, tol: float) -> Tensor:
    """Squared-shift threshold ``[B]`` of ``tol``, relative to the spread of the data (as
    scikit-learn): ``tol**2`` times the mean per-dimension weighted variance."""
    wsum = w.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    mean = (w.unsqueeze(-1) * x).sum(1, keepdim=True) / wsum.unsqueeze(-1)
    var = (w.unsqueeze(-1) * (x - mean).square()).sum(1) / wsum  # [B, D]
    return (tol * tol) * var.mean(-1)


def _cluster_batch(
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
    """Seeding, Lloyd steps and the final assignment of :func:`cluster` (``x [B, N, D]``)."""
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


def _assign(xt: Tensor, xx: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid: ``xt [B, D, N]`` points transposed, ``xx = |x|^2 [B, N]``,
    ``c [B, k, D]`` -> (labels ``[B, N]`` int64, squared distance ``[B, N]``)."""
    labels, m = nearest_centroid(c, xt)
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
    # rows per block of candidate distances; a row is never split, so that its sums (and
    # seeds) do not depend on the batch
    group = max(1, _policy.device_choices(x).nearest_chunk // (trials * n))
    for j in range(1, k):
        p = w * d2
        total = p.sum(-1, keepdim=True)
        flat = total <= 0  # every point sits on a seed already
        degenerate |= flat[:, 0]
        p = torch.where(flat, w, p)
        cand = _draw(p, u[:, j])  # [R, L]
        cx = x.gather(1, cand.unsqueeze(-1).expand(-1, -1, d))  # [R, L, D]
        for r0 in range(0, r, group):  # rows of [R, L, N] distances within the budget
            sl = slice(r0, r0 + group)
            dc = torch.baddbmm(xx[sl].unsqueeze(1) + xx[sl].gather(1, cand[sl]).unsqueeze(-1),
                               cx[sl], x[sl].transpose(1, 2), alpha=-2.0).clamp_min_(0)
            dc = torch.minimum(dc, d2[sl].unsqueeze(1))  # [g, L, N]
            best = (dc * w[sl].unsqueeze(1)).sum(-1).argmin(-1)  # [g]
            ar = torch.arange(dc.shape[0], device=x.device)
            cent[sl, j] = cx[sl][ar, best]
            d2[sl] = dc[ar, best]
    return cent, degenerate


def _lloyd(
    x: Tensor,
    xx: Tensor,
    w: Tensor,
    cent: Tensor,
    thr: Tensor,
    max_iter: int,
    active: Tensor | None = None,
    valid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Weighted Lloyd steps from ``cent [R, k, D]``; returns (centroids, n_iter ``[R]``).
    ``active [R]`` bool: the elements to move (None: all); the others keep ``cent``.
    ``valid [R, k]`` bool: the slots in use (None: all); the others never win a point, are
    never re-seeded and keep their value (a different k per element in one batch).

    Converged elements are frozen; once at most half of the live ones are still moving, the
    batch is compacted to those (a batch of photos has a long tail: at k=16 the median image
    converges in ~12 steps, the slowest of 256 in ~50). Off the CPU the steps never sync
    (``sync_free_kmeans`` of :func:`_policy.device_choices`, which the tests force on CPU).
    """
    r, n, d = x.shape
    k = cent.shape[1]
    xt = x.transpose(1, 2).contiguous()  # [R, D, N]
    xw = torch.cat([xt * w.unsqueeze(1), w.unsqueeze(1)], dim=1)  # [R, D + 1, N]
    choices = _policy.device_choices(x)
    on_cpu = not choices.sync_free_kmeans
    onehot_update = not on_cpu  # GPU: one-hot bmm; CPU: scatter_add (faster)
    # On CPU a host check costs nothing: test convergence every step and skip the re-seeding
    # work when no cluster is empty. On a GPU the loop syncs only every few steps.
    check_every = choices.kmeans_check_every
    if active is None:
        active = torch.ones(r, dtype=torch.bool, device=x.device)
    n_iter = torch.zeros(r, dtype=torch.int64, device=x.device)
    n_far = min(k, n)
    rows: Tensor | None = None  # batch index of each live element (None: all of them)
    out_cent, out_iter = cent, n_iter
    for it in range(max_iter):
        rl = x.shape[0]
        labels, m = nearest_centroid(_masked(cent, valid), xt)  # m + xx: squared distance
        new, empty = _weighted_means(xw, labels, k, onehot_update)
        if valid is not None:
            empty = empty & valid
        if not on_cpu or bool(empty.any()):  # re-seed empty clusters from the farthest points
            far = torch.where(w > 0, (m + xx).clamp_min_(0.0), -1.0).topk(n_far, dim=-1).indices
            # the i-th empty cluster takes the i-th farthest point, among points with weight
            # only (so padding of a batch never becomes a centroid)
            n_pos = (w > 0).sum(-1, keepdim=True).clamp(1, n_far)
            rank = torch.minimum((empty.cumsum(-1) - 1).clamp_min(0), n_pos - 1)
            seeds = x.gather(1, far.gather(1, rank).unsqueeze(-1).expand(-1, -1, d))
            new = torch.where(empty.unsqueeze(-1), seeds, new)
        if valid is not None:
            new = torch.where(valid.unsqueeze(-1), new, cent)
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
                valid = None if valid is None else valid[keep]
                active = active[keep]
    return _put_rows(out_cent, out_iter, rows, cent, n_iter)


# Coordinate of a slot not in use: far outside Lab/Oklab/sRGB, small enough for float32.
_FAR = 1.0e4


def _masked(cent: Tensor, valid: Tensor | None) -> Tensor:
    """Centroids with the slots not in use moved far away, where no point is nearest to them."""
    if valid is None:
        return cent
    return torch.where(valid.unsqueeze(-1), cent, torch.full_like(cent, _FAR))


def _weighted_means(xw: Tensor, labels: Tensor, k: int, onehot: bool) -> tuple[Tensor, Tensor]:
    """Weighted cluster means of ``xw = [x w, w] [R, D + 1, N]`` by ``labels [R, N]`` ->
    (means ``[R, k, D]``, empty ``[R, k]`` bool). ``onehot``: one ``bmm`` against a one-hot
    matrix (no atomics, fast on GPUs); else ``scatter_add_`` (faster on the CPU)."""
    r, d1, n = xw.shape
    if onehot:  # in blocks of rows and of points within the budget; points in fixed blocks
        budget = _policy.device_choices(xw).nearest_chunk
        step = max(1, min(n, budget // k))  # never depends on R: same sums at any batch size
        rows = max(1, budget // (k * step))
        sums = xw.new_zeros(r, d1, k)
        for r0 in range(0, r, rows):
            for s in range(0, n, step):
                lab = labels[r0 : r0 + rows, s : s + step].unsqueeze(1)
                hot = xw.new_zeros(lab.shape[0], k, lab.shape[2]).scatter_(1, lab, 1.0)
                sums[r0 : r0 + rows].baddbmm_(xw[r0 : r0 + rows, :, s : s + step],
                                              hot.transpose(1, 2))
    else:
        sums = xw.new_zeros(r, d1, k)
        sums.scatter_add_(2, labels.unsqueeze(1).expand(-1, d1, -1), xw)
    count = sums[:, -1]  # [R, k]
    tiny = torch.finfo(xw.dtype).tiny
    means = (sums[:, :-1] / count.clamp_min(tiny).unsqueeze(1)).transpose(1, 2)
    return means, count <= 0


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


def refine(
    points: Tensor, weights: Tensor, cent: Tensor, tol: float, max_iter: int,
    active: Tensor | None = None, valid: Tensor | None = None,
) -> Tensor:
    """Lloyd steps on ``points [B, N, D]`` (weights ``[B, N]``) from ``cent [B, k, D]`` for the
    elements marked ``active [B]`` (None: all; the others keep ``cent``) and the slots marked
    ``valid [B, k]`` (None: all; see :func:`_lloyd`), stopping as :func:`cluster` does at
    ``tol``: the fine stage of coarse-to-fine palettes, and palettes with a k per image.
    Returns the centroids."""
    x = points
    w = weights.to(x.dtype)
    xx = (x * x).sum(-1)
    thr = _threshold(x, w, tol)
    with _policy.single_thread_if_small(x, x.shape[0] * x.shape[1] * cent.shape[1],
                                        _policy.KMEANS_SMALL_WORK), _policy.no_autocast(x), \
            _policy.ieee_fp32():
        return _lloyd(x, xx, w, cent.to(x.dtype), thr, max_iter, active=active, valid=valid)[0]


def seed(points: Tensor, weights: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Greedy k-means++ seeds of ``points [B, N, D]`` (weights ``[B, N]``) -> ``[B, k, D]``.
    Greedy, so the first ``j`` of ``k`` seeds are a k-means++ seeding of ``j``."""
    w = weights.to(points.dtype)
    return _kmeans_pp(points, (points * points).sum(-1), w, k, 1, generator)[0]


def nearest(points: Tensor, cent: Tensor, valid: Tensor | None = None) -> Tensor:
    """Label ``[B, N]`` int64 of each of ``points [B, N, D]``: its nearest centroid of
    ``cent [B, k, D]`` among the ``valid [B, k]`` slots (None: all)."""
    return nearest_centroid(_masked(cent, valid), points.transpose(1, 2))[0]

