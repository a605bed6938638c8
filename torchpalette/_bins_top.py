"""Counting engine of :func:`torchpalette.dominant_colors`: the most frequent colour bins.

Two counting passes over the pixels. The first counts every colour bin (one ``bincount`` of the
batch-offset bin index); the second, for the ``top_n`` winners only, sends each pixel through a
table to its winner's slot (or a spare one) and counts (slot, offsets from the bin's lower edge)
in one more ``bincount``, which yields exact integer offset sums. Bin keys are packed with
shifts on the uint8 levels in the narrowest integer type that holds them (int16 where it fits),
which is what makes counting fast. Large CPU images run both passes over chunks of one image's
pixels, so each chunk's index arrays stay in L2; counts and sums add up over chunks, so the
result is the same to the bit. On CUDA with Triton, ``_bins_triton`` runs both passes.
Bins need not be a power of two here (``floor(x * bins / 256)``); for powers of two the keys
are the codes of :func:`torchpalette._bins.pack3`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _bins_triton, _policy
from ._bins import pack3


def bin_edges(bins: int, device: torch.device) -> Tensor:
    """Lower level of every 1-D bin: the smallest x with floor(x * bins / 256) == b."""
    b = torch.arange(bins, dtype=torch.int64, device=device)
    return (b * 256 + bins - 1) // bins


def _int_type(limit: int) -> torch.dtype:
    """The narrowest integer dtype that holds 0..limit (narrow indices count fastest)."""
    return torch.int16 if limit < 2**15 else torch.int32 if limit < 2**31 else torch.int64


def _bin_index(q: Tensor, opaque: Tensor | None, bins: int, limit: int) -> Tensor:
    """Levels ``[B, 3, N]`` uint8 -> colour bin index ``[B, N]`` (``(r_bin * bins + g_bin) *
    bins + b_bin``; transparent pixels -> ``bins**3``) in an integer type that holds ``limit``."""
    itype = _int_type(limit)
    if bins & (bins - 1) == 0:  # shifts on the uint8 levels
        bits = bins.bit_length() - 1
        key = pack3(q, 8 - bits, bits, None, itype)
    else:
        cb = (q.to(torch.int32) * bins).bitwise_right_shift_(8)  # floor(x * bins / 256)
        key = ((cb[:, 0] * bins + cb[:, 1]) * bins + cb[:, 2]).to(itype)
    if opaque is not None:
        key = torch.where(opaque, key, bins**3)
    return key


def _offset(key: Tensor, n_img: int, stride: int) -> Tensor:
    """Per-image index ``[B, N]`` -> flat index over ``B`` blocks of ``stride`` slots."""
    if n_img > 1:
        key = key + torch.arange(n_img, dtype=key.dtype, device=key.device)[:, None] * stride
    return key.reshape(-1)


def _flat_index(q: Tensor, opaque: Tensor | None, bins: int) -> Tensor:
    """Levels ``[B, 3, N]`` uint8 -> flat bin index ``[B * N]``, image ``i`` offset by
    ``i * (bins**3 + 1)`` (the last slot of each image holds its transparent pixels)."""
    n_img = q.shape[0]
    slots = bins**3 + 1
    return _offset(_bin_index(q, opaque, bins, n_img * slots), n_img, slots)


def _bin_counts(flat: Tensor, n_img: int, bins: int) -> Tensor:
    """Flat index of :func:`_flat_index` -> counts ``[B, bins**3]`` int64 (one ``bincount``)."""
    slots = bins**3 + 1
    return torch.bincount(flat, minlength=n_img * slots).view(n_img, slots)[:, : slots - 1]


def _slot_sums(q: Tensor, flat: Tensor, order: Tensor, bins: int) -> Tensor:
    """Sums of each pixel's offset from its bin's lower edge, for the bins in ``order`` only.

    Args:
        q: levels ``[B, 3, N]`` uint8.
        flat: the flat bin index of :func:`_bin_counts`.
        order: ``[B, k]`` the bins whose sums are wanted.

    Returns:
        ``[B, k, 3]`` int64 exact sums.

    A look-up table maps every bin to a slot (its rank in ``order``, or ``k`` for all other
    bins). For power-of-two ``bins`` with width ``w``, one ``bincount`` over
    ``slot * w**3 + (r_off, g_off, b_off)`` counts every (slot, offset triple); the sums are
    that count weighted by the offsets. Otherwise (or where that table would be large) one
    ``index_add_`` per channel adds the offsets into the ``k + 1`` slots.
    """
    n_img, _, n_pix = q.shape
    k = order.shape[1]
    dev = q.device
    width = -(-256 // bins)
    pow2 = bins & (bins - 1) == 0
    joint = (k + 1) * width**3
    limit = min(_policy.DOMINANT_JOINT_MAX, max(2**18, 4 * n_img * n_pix))
    use_joint = pow2 and n_img * joint <= limit
    stride = joint if use_joint else k + 1
    itype = _int_type(n_img * stride)
    slot = torch.full((n_img, bins**3 + 1), k, dtype=itype, device=dev)
    slot.scatter_(1, order, torch.arange(k, dtype=itype, device=dev).expand(n_img, k))
    base = torch.arange(n_img, dtype=itype, device=dev)[:, None] * (k + 1)
    lut = (slot + base).mul_(stride // (k + 1)).view(-1)
    if lut.dtype == torch.int16:  # index_select takes int32/int64 values and indices
        lut = lut.to(torch.int32)
    at = lut.index_select(0, flat if flat.dtype != torch.int16 else flat.to(torch.int32))
    at = at.view(n_img, n_pix)
    if use_joint:
        bits = width.bit_length() - 1
        at += pack3(q, 0, bits, width - 1, _int_type(width**3))
        hist = torch.bincount(at.view(-1), minlength=n_img * joint)
        hist = hist.view(n_img, k + 1, width, width, width)[:, :k]
        w = torch.arange(width, dtype=torch.int64, device=dev)
        marg = [hist.sum((3, 4)), hist.sum((2, 4)), hist.sum((2, 3))]  # [B, k, w] each
        return torch.stack([(m * w).sum(-1) for m in marg], -1)
    # One index_add_ per channel; int32 sums where no total can overflow.
    vtype = torch.int32 if (width - 1) * n_pix < 2**31 else torch.int64
    at = at.view(-1)
    sums = []
    for c in range(3):  # three channels, not a loop over pixels
        level = q[:, c]
        if pow2:
            off = (level & (width - 1)).to(vtype)
        else:
            cb = (level.to(torch.int32) * bins).bitwise_right_shift_(8)
            off = (level.to(torch.int32) - (cb * 256 + bins - 1) // bins).to(vtype)
        acc = torch.zeros(n_img * (k + 1), dtype=vtype, device=dev)
        sums.append(acc.index_add_(0, at, off.view(-1)).to(torch.int64))
    return torch.stack(sums, -1).view(n_img, k + 1, 3)[:, :k]


def top_bins(q: Tensor, opaque: Tensor | None, top_n: int, bins: int,
              use_triton: bool | None) -> tuple[Tensor, Tensor, Tensor]:
    """Levels ``[B, 3, N]`` uint8 -> (counts ``[B, bins**3]``, the ``K`` most frequent bins
    ``[B, K]`` (stable: ties keep ascending bin order), their offset sums ``[B, K, 3]``).

    ``use_triton``: None picks the Triton kernels where :func:`_bins_triton.supported`; False forces
    the torch path (benchmarks compare both). The torch path runs over chunks of images so
    that its per-pixel temporaries stay bounded (a few bytes per pixel of a chunk).
    """
    n_img, _, n_pix = q.shape
    dev = q.device
    tri = use_triton is not False and _bins_triton.supported(dev, bins, min(top_n, bins**3))
    step = max(1, _policy.DOMINANT_IMAGE_CHUNK // n_pix)
    flat = None
    if tri:
        q = q.contiguous()
        counts = _bins_triton.bin_counts(q, opaque, bins)
    elif _policy.device_choices(q).chunk_pixels and n_pix >= 2 * _policy.DOMINANT_PIXEL_CHUNK:
        return _top_bins_chunked(q, opaque, top_n, bins)
    elif step >= n_img:  # one chunk: keep the index for the second pass
        flat = _flat_index(q, opaque, bins)
        counts = _bin_counts(flat, n_img, bins)
    else:
        counts = torch.cat([_bin_counts(_flat_index(q[i:i + step], _part(opaque, i, step), bins),
                                        q[i:i + step].shape[0], bins)
                            for i in range(0, n_img, step)])

    occupied = int((counts > 0).sum(-1).max())  # one sync per call, to size the output
    k = max(1, min(top_n, occupied))
    # Stable descending sort: equal counts keep ascending bin order (the tie rule).
    order = torch.sort(counts, dim=-1, descending=True, stable=True).indices[:, :k]
    if tri:
        slot = torch.full((n_img, bins**3), k, dtype=torch.int32, device=dev)
        slot.scatter_(1, order, torch.arange(k, dtype=torch.int32, device=dev).expand(n_img, k))
        return counts, order, _bins_triton.slot_sums(q, opaque, slot, bins, k)
    if flat is not None:
        return counts, order, _slot_sums(q, flat, order, bins)
    sums = [_slot_sums(q[i:i + step], _flat_index(q[i:i + step], _part(opaque, i, step), bins),
                       order[i:i + step], bins) for i in range(0, n_img, step)]
    return counts, order, torch.cat(sums)


def _pixel_chunks(q: Tensor, opaque: Tensor | None, bins: int, wide: bool = False):
    """Yield ``(image, bin index of one chunk of its pixels [C], its levels [1, 3, C])``; the
    index in the narrowest integer type that holds it, or int32 if ``wide``."""
    step = _policy.DOMINANT_PIXEL_CHUNK
    for i in range(q.shape[0]):  # chunks of one image's pixels (bounds the temporaries)
        for s in range(0, q.shape[2], step):
            qc = q[i:i + 1, :, s:s + step]
            oc = None if opaque is None else opaque[i:i + 1, s:s + step]
            limit = 2**16 if wide else bins**3 + 1  # 2**16: int32
            yield i, _bin_index(qc, oc, bins, limit)[0], qc


def _top_bins_chunked(q: Tensor, opaque: Tensor | None, top_n: int,
                      bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`top_bins` for large images on the CPU: both passes run over chunks of
    ``_policy.DOMINANT_PIXEL_CHUNK`` pixels, so each chunk's index and slot arrays stay in
    cache and no image-sized temporary is allocated (page faults on fresh memory cost more
    than counting).
    Counts and offset sums are additive over chunks, so the result is exactly the same."""
    n_img = q.shape[0]
    counts = torch.zeros(n_img, bins**3, dtype=torch.int64)
    for i, flat, _ in _pixel_chunks(q, opaque, bins):
        counts[i] += _bin_counts(flat, 1, bins)[0]
    occupied = int((counts > 0).sum(-1).max())  # one sync per call, to size the output
    k = max(1, min(top_n, occupied))
    order = torch.sort(counts, dim=-1, descending=True, stable=True).indices[:, :k]
    width = 256 // bins
    joint = (k + 1) * width**3
    if bins & (bins - 1) or joint > _policy.DOMINANT_JOINT_CHUNKED:
        sums = torch.zeros(n_img, k, 3, dtype=torch.int64)
        for i, flat, qc in _pixel_chunks(q, opaque, bins):
            sums[i] += _slot_sums(qc, flat, order[i:i + 1], bins)[0]
        return counts, order, sums
    # As _slot_sums, but with one table per image and the (slot, offsets) histogram summed
    # over chunks before its marginals; int32 throughout (index_select takes int32 indices).
    slot = torch.full((n_img, bins**3 + 1), k * width**3, dtype=torch.int32)
    slot.scatter_(1, order, (torch.arange(k, dtype=torch.int32) * width**3).expand(n_img, k))
    hist = torch.zeros(n_img, joint, dtype=torch.int64)
    bits = width.bit_length() - 1
    for i, flat, qc in _pixel_chunks(q, opaque, bins, wide=True):
        at = slot[i].index_select(0, flat)
        at += pack3(qc, 0, bits, width - 1, torch.int32)[0]
        hist[i] += torch.bincount(at, minlength=joint)
    hist = hist.view(n_img, k + 1, width, width, width)[:, :k]
    w = torch.arange(width, dtype=torch.int64)
    marg = [hist.sum((3, 4)), hist.sum((2, 4)), hist.sum((2, 3))]  # [B, k, width] each
    return counts, order, torch.stack([(m * w).sum(-1) for m in marg], -1)


def _part(opaque: Tensor | None, i: int, step: int) -> Tensor | None:
    return None if opaque is None else opaque[i:i + step]
