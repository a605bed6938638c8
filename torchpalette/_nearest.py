"""The one nearest-colour search: for each point, the index of its nearest centre.

Used by k-means (points against centroids), by quantization (pixels against a palette, in
chunks of pixels so that at most ``_policy.nearest_chunk`` distances exist at once; a
24-megapixel photo against 64 colours never allocates ``N x K`` floats) and by the refined
look-up-table search that measures distances only for pixels near a decision boundary.

Squared distances are ``|c|^2 - 2 x.c`` (+ ``|x|^2``, constant per point) as one batched
matrix product, laid out ``[B, K, N]``; the chunks loop over pixel positions, never images.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from . import _policy
from ._bins import bin_codes
from ._spaces import srgb_to_lab_cf, to_space_cf


def nearest_centroid(c: Tensor, xt: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest centroid without ``|x|^2``: centroids ``c [B, k, D]``, points transposed
    ``xt [B, D, N]`` -> (labels ``[B, N]`` int64, ``min_j |c_j|^2 - 2 x.c_j`` ``[B, N]``).

    Distances are laid out ``[B, k, N]`` and built in chunks of points, at most
    ``nearest_chunk`` of them at once (:func:`_policy.device_choices`), so memory stays
    bounded at any B, k and N; a point's result does not depend on the chunking.
    """
    b, k, _ = c.shape
    n = xt.shape[-1]
    cc = (c * c).sum(-1, keepdim=True)  # [B, k, 1]
    step = max(1, _policy.device_choices(xt).nearest_chunk // max(1, b * k))
    with _policy.ieee_fp32():
        if step >= n or torch.compiler.is_compiling():
            return argmin_over_k(torch.baddbmm(cc, c, xt, alpha=-2.0))
        labels = torch.empty(b, n, dtype=torch.int64, device=xt.device)
        m = torch.empty(b, n, dtype=torch.result_type(c, xt), device=xt.device)
        for s in range(0, n, step):
            dist = torch.baddbmm(cc, c, xt[..., s : s + step], alpha=-2.0)
            labels[:, s : s + step], m[:, s : s + step] = argmin_over_k(dist)
    return labels, m


def argmin_over_k(dist: Tensor) -> tuple[Tensor, Tensor]:
    """``dist [B, k, N]`` -> (index of the minimum over k ``[B, N]`` int64, minimum ``[B, N]``).
    Ties go to the lowest index on every device (as ``torch.argmin``).

    With ``single_pass_argmin`` (:func:`_policy.device_choices`, off the CPU) one ``min(1)``
    gives values and indices; on the CPU ``amin`` plus an equality mask is several times
    faster than ``argmin``/``min`` over a short dim."""
    k = dist.shape[1]
    if _policy.device_choices(dist).single_pass_argmin:
        m, labels = dist.min(1)
        return labels, m
    m = dist.amin(1, keepdim=True)
    # the lowest index among the minima is k minus the largest of (k - j) where dist == m
    small = torch.uint8 if k < 256 else torch.int32
    rev = torch.arange(k, 0, -1, device=dist.device, dtype=small).view(1, k, 1)
    labels = k - ((dist == m).to(small) * rev).amax(1).long()
    return labels.clamp_max_(k - 1), m.squeeze(1)  # (no minimum found: NaN rows -> k - 1)


def search(rgb: Tensor, ps: Tensor, pa: Tensor, space: str, dtype: torch.dtype) -> Tensor:
    """Chunked nearest-colour search: pixels ``rgb [B, 3, P]`` (uint8 or float sRGB), palette
    ``ps [B, K, 3]`` in ``space`` and ``pa = [-2 ps, |ps|^2] [B, K, 4]`` -> labels ``[B, P]``
    int64. Compiled, one chunk and no Python loop: a loop over ``range(0, P, step)`` would
    guard on the pixel count and recompile for every image size."""
    if torch.compiler.is_compiling():
        with _policy.ieee_fp32():
            return first_of_equal(ps, _search_chunk(rgb, ps, pa, space, dtype))
    b, _, p = rgb.shape
    k = ps.shape[1]
    labels = torch.empty(b, p, dtype=torch.int64, device=rgb.device)
    step = max(1, _policy.device_choices(rgb).nearest_chunk // max(1, b * k))
    with _policy.ieee_fp32():
        for s in range(0, p, step):
            labels[:, s : s + step] = _search_chunk(rgb[..., s : s + step], ps, pa, space, dtype)
    return first_of_equal(ps, labels)


#: Largest palette whose near-duplicate entries :func:`first_of_equal` merges (the test costs
#: ``K**2`` per image; beyond, duplicates keep the plain argmin tie rule).
DEDUP_MAX_K = 1024


def first_of_equal(ps: Tensor, labels: Tensor) -> Tensor:
    """``labels [B, P]`` into palettes ``ps [B, K, 3]`` with each duplicate entry replaced by
    the first entry of the same colour, so the tie rule (the lowest index) holds on every
    device. Entries within float rounding of each other count as the same colour: the
    conversion rounds a duplicate by its position (vectorised and scalar code, matrix-product
    tiles; Lab's a and b, differences of cube roots times 500, by ~30 ulps of L), and then so
    do the distances. Palettes over :data:`DEDUP_MAX_K` colours are left as they are."""
    b, k, _ = ps.shape
    if k > DEDUP_MAX_K or k == 1:
        return labels
    choices = _policy.device_choices(ps)
    compiling = torch.compiler.is_compiling()
    if compiling:  # one table, no loop over images: range(0, B, step) would guard on B
        first = _first_equal(ps)
    else:
        step = max(1, choices.nearest_chunk // (k * k))
        first = torch.empty(b, k, dtype=torch.int64, device=ps.device)
        for s in range(0, b, step):  # [b, K, K] tables within the budget
            first[s : s + step] = _first_equal(ps[s : s + step])
    if choices.kind == "cpu" and not compiling:  # a host check is free here
        if not bool((first != torch.arange(k, device=ps.device)).any()):
            return labels  # no duplicates (the common case): no gather over every pixel
    return first.gather(1, labels)


def _first_equal(p: Tensor) -> Tensor:
    """``p [b, K, 3]`` -> ``[b, K]`` index of the first entry equal to each (see
    :func:`first_of_equal`)."""
    k = p.shape[1]
    tol = 64 * torch.finfo(p.dtype).eps
    gap = torch.zeros(p.shape[0], k, k, dtype=p.dtype, device=p.device)
    for c in range(3):
        gap = torch.maximum(gap, (p[..., c].unsqueeze(2) - p[..., c].unsqueeze(1)).abs_())
    scale = 1 + p.abs().amax(-1)  # [b, K]
    return (gap <= tol * scale.unsqueeze(1)).byte().argmax(-1)


def _search_chunk(x: Tensor, ps: Tensor, pa: Tensor, space: str, dtype: torch.dtype) -> Tensor:
    """One chunk of :func:`search`: ``x [B, 3, p]`` -> labels ``[B, p]`` int64."""
    if x.is_floating_point():
        x = x.to(dtype)
    if space == "lab":  # distances as one bmm against [-2c, |c|^2], no broadcast copy
        return argmin_over_k(torch.bmm(pa, srgb_to_lab_cf(x, dtype, append_one=True)))[0]
    return nearest_centroid(ps, to_space_cf(x, space, dtype))[0]


_PRUNE_BITS = 5  # bins (8 sRGB levels wide) of the refined search's look-up table
_PRUNE_SLACK = 1e-2  # extra distance (space units) a bin must clear, for float32 rounding
# Fraction of a bin's radius its centre must clear from every decision boundary to skip the
# per-pixel search: the trade between pixels searched and mean dE00 against the exact search
# (table in benchmarks/RESULTS.md, "Refined assignment").
REFINE_ALPHA = 0.25


@functools.lru_cache(maxsize=8)
def bin_geometry(bits: int, space: str, dtype: torch.dtype, device: str) -> tuple[Tensor, Tensor]:
    """Every colour bin's centre in ``space`` ``[2**(3 bits), 3]`` and radius ``[2**(3 bits)]``:
    the largest distance from the centre to the bin's 8 corners, the bin covering sRGB levels
    ``[w i - 0.5, w i + w - 0.5]`` (``w = 2**(8 - bits)``; float pixels round into it). For
    Lab, Oklab and sRGB the corners bound the whole cube (checked on a 9x9x9 grid of every
    5-bit bin). Computed once per process and device."""
    n = 1 << bits
    w = 1 << (8 - bits)
    i = torch.arange(n, dtype=torch.float64)
    lo = ((i * w - 0.5).clamp(0, 255) / 255.0).tolist()
    hi = ((i * w + w - 0.5).clamp(0, 255) / 255.0).tolist()
    g = torch.stack(torch.meshgrid(i, i, i, indexing="ij"), 0).reshape(3, -1).long()
    lo_t, hi_t = torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64)
    a, b_ = lo_t[g], hi_t[g]  # [3, n^3]
    cen = to_space_cf(((a + b_) / 2).unsqueeze(0), space, torch.float64)[0]
    rad = torch.zeros(g.shape[1], dtype=torch.float64)
    for corner in range(8):
        pt = torch.stack([b_[c] if corner >> c & 1 else a[c] for c in range(3)])
        pt = to_space_cf(pt.unsqueeze(0), space, torch.float64)[0]
        rad = torch.maximum(rad, (pt - cen).norm(dim=0))
    return cen.T.contiguous().to(device=device, dtype=dtype), rad.to(device=device, dtype=dtype)


def search_near_boundaries(
    rgb: Tensor, ps: Tensor, pa: Tensor, space: str, dtype: torch.dtype,
    alpha: float = REFINE_ALPHA,
) -> Tensor:
    """Nearest-colour search that measures distances only for pixels whose colour bin lies
    near a decision boundary (``reduce_colors(assign="refined")``).

    Pixels are binned (5 bits per channel). For each occupied bin, with centre ``c`` and
    radius ``r`` (:func:`bin_geometry`), the colour ``j*`` nearest to ``c`` is nearest to
    every point of the bin if ``c`` lies farther than ``r`` from each bisector plane between
    ``j*`` and another colour ``j``: ``(|c - p_j|^2 - |c - p_j*|^2) / (2 |p_j - p_j*|) > r``.
    Bins that clear ``alpha * r`` label their pixels through a look-up table, the rest get
    the per-pixel search. ``alpha=1`` gives the exact labels (but at k=16 on photos ~75% of
    the pixels then need the search: no faster than :func:`search`);
    ``alpha=REFINE_ALPHA`` searches ~28% of them, +0.005 mean dE00 against exact on the
    benchmark photos. Duplicate colours never pass the test (ties resolved as the plain
    search does).
    """
    b, _, p = rgb.shape
    k = ps.shape[1]
    dev = rgb.device
    bits = _PRUNE_BITS
    nb = 1 << (3 * bits)
    cen, rad = bin_geometry(bits, space, dtype, str(dev))
    code = bin_codes(rgb, bits).long()  # [B, P]; int64 once offset: no overflow at any B
    if b > 1:
        code += torch.arange(b, device=dev).unsqueeze(-1) * nb
    flat = code.view(-1)
    inverse = None
    if flat.numel() < b * nb:  # fewer pixels than bins: sort the codes, no dense table
        idx, inverse = torch.unique(flat, return_inverse=True)
    else:
        (idx,) = (torch.bincount(flat, minlength=b * nb) > 0).nonzero(as_tuple=True)
    img = idx // nb  # [M] occupied bins, image-major
    c = cen[idx - img * nb]  # [M, 3]
    pal = ps[img]  # [M, K, 3]
    d = (c.unsqueeze(1) - pal).square().sum(-1)  # [M, K]
    dmin, jstar = d.min(-1)
    with _policy.ieee_fp32():
        pd = torch.cdist(ps, ps)  # [B, K, K] distances between palette colours
    gap = pd[img, jstar]  # [M, K]
    margin = (d - dmin.unsqueeze(-1)) / (2.0 * gap).clamp_min(torch.finfo(dtype).tiny)
    margin.scatter_(1, jstar.unsqueeze(-1), float("inf"))  # j* itself never blocks
    sure = margin.amin(-1) > rad[idx - img * nb] * alpha + _PRUNE_SLACK
    bin_label = torch.where(sure, jstar, -1)
    if inverse is not None:
        labels = bin_label[inverse]  # [B * P]
    else:
        lut = torch.full((b * nb,), -1, dtype=torch.int64, device=dev)
        lut[idx] = bin_label
        labels = lut.index_select(0, flat)
    (amb,) = (labels < 0).nonzero(as_tuple=True)
    if amb.numel():
        bi = amb // p
        px = rgb.transpose(0, 1).reshape(3, -1).index_select(1, amb)  # [3, A]
        if px.is_floating_point():
            px = px.to(dtype)
        if b == 1:
            labels[amb] = search(px.unsqueeze(0), ps, pa, space, dtype)[0]
        else:  # each pixel against its own image's palette, in chunks of the budget
            step = max(1, _policy.device_choices(rgb).nearest_chunk // (4 * k))
            with _policy.ieee_fp32():
                for s in range(0, amb.numel(), step):
                    x = to_space_cf(px[:, s : s + step].unsqueeze(0), space, dtype)[0]  # [3, a]
                    xa = torch.cat([x, torch.ones_like(x[:1])], 0).T.unsqueeze(-1)  # [a, 4, 1]
                    dist = torch.bmm(pa[bi[s : s + step]], xa).transpose(0, 2)  # [1, K, a]
                    labels[amb[s : s + step]] = argmin_over_k(dist)[0][0]
    return first_of_equal(ps, labels.view(b, p))
