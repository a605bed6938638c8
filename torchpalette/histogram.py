"""Image histograms and dominant colours.

Both functions count 8-bit colour levels. uint8 images are used as they are; float images in
[0, 1] are first rounded to the nearest of the 256 levels (``round(x * 255)``), so a float image
and the uint8 image it came from give identical counts and identical colours. Pixels whose alpha
is 0 are not counted (alpha is not a colour, see DESIGN.md).

Counting is one fused pass: every (image, channel or colour bin) pair gets its own slot in one
flat index, and a single ``bincount`` / ``index_add_`` over that index counts a whole batch.
Transparent pixels are sent to one spare slot per image that is dropped afterwards.

``dominant_colors`` reproduces the "top colours" of the Elixir Image library's notebook with one
change: each colour is the mean of the pixels that fell into its 3-D bin, not the bin's centre
(which can be off by half a bin). The mean is exact: bin lower edge + (integer sum of the
pixels' offsets from that edge) / count. It takes two counting passes: one ``bincount`` of the
bin index gives every bin's count; then, for the ``top_n`` winners only, a look-up table sends
each pixel to its winner's slot (or a spare one), and one more ``bincount`` over
(slot, r/g/b offsets) yields all three offset sums. Bin keys are built with shifts on the uint8
levels in the narrowest integer type (int16 where it fits), which is what makes counting fast.
On the CPU, large images (>= 512K pixels) run both passes over chunks of 256K pixels of one
image: each chunk's index arrays stay in L2 and no image-sized temporary is allocated (fresh
memory costs a page fault per 4 KiB, which cost more than the counting itself); counts and sums
add up over chunks, so the result is the same to the bit.
On CUDA with Triton installed, both passes run as Triton kernels that count each block of
pixels in on-chip memory first (see ``_histogram_triton``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _histogram_triton as _tri
from . import _validate as v
from .palette import Palette

__all__ = ["histogram", "dominant_colors", "LUMA_WEIGHTS"]

#: ITU-R BT.601 luma weights, applied to the gamma-encoded 8-bit R', G', B' values, in the
#: 16-bit fixed point Pillow uses for ``Image.convert("L")``: luminance = (19595 R + 38470 G +
#: 7471 B + 32768) >> 16. BT.601 on gamma-encoded values is what image editors and Pillow show
#: as the "luminosity" histogram; using the same integers makes our luminance channel equal to
#: the histogram of ``PIL.Image.convert("L")`` exactly, so it can be checked against Pillow.
LUMA_WEIGHTS = (19595, 38470, 7471)

#: Largest (slot, offset triple) table for the one-pass sums; larger ones use per-channel sums.
_JOINT_MAX = 2**24
#: Pixels per chunk of images in the torch path (bounds the per-pixel index temporaries).
_CHUNK_PIXELS = 2**26
#: Pixels per chunk on the CPU for large images: a chunk's int16/int32 index arrays (0.5-1 MiB)
#: stay in L2 between the passes over it.
_CPU_CHUNK = 2**18
#: Largest (slot, offsets) table that the chunked CPU path keeps per image across chunks.
_JOINT_CHUNKED = 2**18

def _levels(rgb: Tensor) -> Tensor:
    """``[..., 3, H, W]`` uint8 or float in [0, 1] -> uint8 levels 0..255 (same shape)."""
    if rgb.dtype == torch.uint8:
        return rgb
    return rgb.to(torch.float32 if rgb.dtype != torch.float64 else rgb.dtype).mul(255.0).round_().to(
        torch.uint8
    )


def _flat(image: Tensor) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
    """Image -> (levels ``[B, 3, N]`` uint8, opaque mask ``[B, N]`` bool or None, batch shape)."""
    batch = tuple(image.shape[:-3])
    flat = image.reshape(-1, image.shape[-3], image.shape[-2] * image.shape[-1])
    opaque = None
    if flat.shape[1] == 4:
        opaque = flat[:, 3] > 0
        flat = flat[:, :3]
    return _levels(flat), opaque, batch


def histogram(image: Tensor, bins: int = 256) -> Tensor:
    """Count the R, G, B and luminance levels of an image.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1] (rounded to 8-bit levels
            first, so uint8 and float give the same counts). With 4 channels, pixels whose
            alpha is 0 are not counted.
        bins: number of equal-width bins over the 256 levels, 2..256; level ``x`` falls in
            bin ``floor(x * bins / 256)``.

    Returns:
        ``[..., 4, bins]`` int64 counts; rows are R, G, B and luminance
        (:data:`LUMA_WEIGHTS`, BT.601 luma as in Pillow's ``convert("L")``). Each row sums to
        the number of counted pixels.

    Raises:
        TypeError: not a tensor, a dtype other than uint8/float, or ``bins`` not an int.
        ValueError: shape not ``[..., 3|4, H, W]``, empty, NaN/inf or float values outside
            [0, 1], or ``bins`` outside 2..256.

    Note:
        One ``bincount`` over the flat index ``(image * 4 + row) * bins + bin`` counts the whole
        batch; transparent pixels go to a spare slot that is dropped.

    Example:
        >>> import torch, torchpalette as tp
        >>> image = torch.zeros(3, 2, 2, dtype=torch.uint8)
        >>> image[0] = 255  # four red pixels
        >>> tp.histogram(image, bins=4)
        tensor([[0, 0, 0, 4],
                [4, 0, 0, 0],
                [4, 0, 0, 0],
                [0, 4, 0, 0]])
    """
    v.check_image(image, "image")
    bins = v.check_int(bins, "bins", low=2, high=256)
    q, opaque, batch = _flat(image)
    n_img, _, n_pix = q.shape
    q32 = q.to(torch.int32)  # [B, 3, N]
    w = torch.tensor(LUMA_WEIGHTS, dtype=torch.int32, device=q.device)
    luma = (q32 * w[:, None]).sum(1, dtype=torch.int32).add_(32768).bitwise_right_shift_(16)
    levels = torch.cat([q32, luma[:, None]], dim=1)  # [B, 4, N]
    bin_of = levels.mul_(bins).bitwise_right_shift_(8)  # floor(x * bins / 256), exact
    offset = torch.arange(n_img * 4, dtype=torch.int32, device=q.device).view(n_img, 4, 1) * bins
    index = bin_of.add_(offset)
    spare = n_img * 4 * bins
    if opaque is not None:
        index = torch.where(opaque[:, None, :], index, spare)
    counts = torch.bincount(index.flatten(), minlength=spare + 1)[:spare]
    return counts.view(*batch, 4, bins)


def _bin_edges(bins: int, device: torch.device) -> Tensor:
    """Lower level of every 1-D bin: the smallest x with floor(x * bins / 256) == b."""
    b = torch.arange(bins, dtype=torch.int64, device=device)
    return (b * 256 + bins - 1) // bins


def _int_type(limit: int) -> torch.dtype:
    """The narrowest integer dtype that holds 0..limit (narrow indices count fastest)."""
    return torch.int16 if limit < 2**15 else torch.int32 if limit < 2**31 else torch.int64


def _pack3(q: Tensor, shift: int, bits: int, mask: int | None, itype: torch.dtype) -> Tensor:
    """``[B, 3, N]`` uint8 -> ``((f(r) << 2 bits) | (f(g) << bits) | f(b))`` as ``itype``,
    where ``f(x) = x >> shift`` (the bin of a level) or ``x & mask`` (its offset in the bin).
    Built in place from uint8 fields: one pass per operation, no wide copy per channel."""
    field = [(c >> shift) if mask is None else (c & mask) for c in q.unbind(1)]
    key = field[0].to(itype)
    key.bitwise_left_shift_(bits).bitwise_or_(field[1])
    return key.bitwise_left_shift_(bits).bitwise_or_(field[2])


def _bin_index(q: Tensor, opaque: Tensor | None, bins: int, limit: int) -> Tensor:
    """Levels ``[B, 3, N]`` uint8 -> colour bin index ``[B, N]`` (``(r_bin * bins + g_bin) *
    bins + b_bin``; transparent pixels -> ``bins**3``) in an integer type that holds ``limit``."""
    itype = _int_type(limit)
    if bins & (bins - 1) == 0:  # shifts on the uint8 levels
        bits = bins.bit_length() - 1
        key = _pack3(q, 8 - bits, bits, None, itype)
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
    use_joint = pow2 and n_img * joint <= min(_JOINT_MAX, max(2**18, 4 * n_img * n_pix))
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
        at += _pack3(q, 0, bits, width - 1, _int_type(width**3))
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


def _top_bins(q: Tensor, opaque: Tensor | None, top_n: int, bins: int,
              use_triton: bool | None) -> tuple[Tensor, Tensor, Tensor]:
    """Levels ``[B, 3, N]`` uint8 -> (counts ``[B, bins**3]``, the ``K`` most frequent bins
    ``[B, K]`` (stable: ties keep ascending bin order), their offset sums ``[B, K, 3]``).

    ``use_triton``: None picks the Triton kernels where :func:`_tri.supported`; False forces
    the torch path (benchmarks compare both). The torch path runs over chunks of images so
    that its per-pixel temporaries stay bounded (a few bytes per pixel of a chunk).
    """
    n_img, _, n_pix = q.shape
    dev = q.device
    tri = use_triton is not False and _tri.supported(dev, bins, min(top_n, bins**3))
    step = max(1, _CHUNK_PIXELS // n_pix)
    flat = None
    if tri:
        q = q.contiguous()
        counts = _tri.bin_counts(q, opaque, bins)
    elif dev.type == "cpu" and n_pix >= 2 * _CPU_CHUNK:
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
        return counts, order, _tri.slot_sums(q, opaque, slot, bins, k)
    if flat is not None:
        return counts, order, _slot_sums(q, flat, order, bins)
    sums = [_slot_sums(q[i:i + step], _flat_index(q[i:i + step], _part(opaque, i, step), bins),
                       order[i:i + step], bins) for i in range(0, n_img, step)]
    return counts, order, torch.cat(sums)


def _pixel_chunks(q: Tensor, opaque: Tensor | None, bins: int, wide: bool = False):
    """Yield ``(image, bin index of one chunk of its pixels [C], its levels [1, 3, C])``; the
    index in the narrowest integer type that holds it, or int32 if ``wide``."""
    for i in range(q.shape[0]):  # chunks of one image's pixels (bounds the temporaries)
        for s in range(0, q.shape[2], _CPU_CHUNK):
            qc = q[i:i + 1, :, s:s + _CPU_CHUNK]
            oc = None if opaque is None else opaque[i:i + 1, s:s + _CPU_CHUNK]
            limit = 2**16 if wide else bins**3 + 1  # 2**16: int32
            yield i, _bin_index(qc, oc, bins, limit)[0], qc


def _top_bins_chunked(q: Tensor, opaque: Tensor | None, top_n: int,
                      bins: int) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_top_bins` for large images on the CPU: both passes run over chunks of
    :data:`_CPU_CHUNK` pixels, so each chunk's index and slot arrays stay in cache and no
    image-sized temporary is allocated (page faults on fresh memory cost more than counting).
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
    if bins & (bins - 1) or joint > _JOINT_CHUNKED:
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
        at += _pack3(qc, 0, bits, width - 1, torch.int32)[0]
        hist[i] += torch.bincount(at, minlength=joint)
    hist = hist.view(n_img, k + 1, width, width, width)[:, :k]
    w = torch.arange(width, dtype=torch.int64)
    marg = [hist.sum((3, 4)), hist.sum((2, 4)), hist.sum((2, 3))]  # [B, k, width] each
    return counts, order, torch.stack([(m * w).sum(-1) for m in marg], -1)


def _part(opaque: Tensor | None, i: int, step: int) -> Tensor | None:
    return None if opaque is None else opaque[i:i + step]


def dominant_colors(image: Tensor, top_n: int = 32, *, bins: int = 16) -> Palette:
    """The ``top_n`` most frequent colours of an image, as mean colours of 3-D histogram bins.

    Each channel's 8-bit level ``x`` is put in bin ``floor(x * bins / 256)`` (float images are
    rounded to 8-bit levels first); the colour bin index is
    ``(r_bin * bins + g_bin) * bins + b_bin``. Bins are ranked by pixel count, descending, ties
    broken by the lower bin index, so the result is deterministic. Each returned colour is the
    exact mean of the pixels in its bin; its weight is the bin's share of the counted pixels.

    Args:
        image: ``[..., 3|4, H, W]`` uint8 or float sRGB in [0, 1]. With 4 channels, pixels
            whose alpha is 0 are not counted.
        top_n: how many colours to return, >= 1.
        bins: levels per channel, 2..256 (``bins ** 3`` colour bins).

    Returns:
        :class:`~torchpalette.Palette` with ``colors [..., K, 3]`` (sRGB in [0, 1]; float32 for
        uint8 input, otherwise the input's float dtype) and ``weights [..., K]`` (fractions of
        the counted pixels, descending). ``K = min(top_n, most occupied bins of any image)``:
        an image with fewer occupied bins than ``top_n`` returns only those (no batch dims),
        or, in a batch, is padded at the end with black colours of weight 0 so that shapes
        stay rectangular. The weights of an image sum to 1 over its ``top_n`` bins only when
        those cover all its pixels. A fully transparent image has all weights 0.

    Raises:
        TypeError: not a tensor, a dtype other than uint8/float, or non-int ``top_n``/``bins``.
        ValueError: shape not ``[..., 3|4, H, W]``, empty, NaN/inf or float values outside
            [0, 1], ``top_n < 1``, or ``bins`` outside 2..256.

    Note:
        Two passes over the pixels: a ``bincount`` of the batch-offset bin index gives the
        counts; a table maps each of the ``top_n`` bins to a slot, and a second ``bincount``
        over (slot, offsets from the bin's lower edge) gives exact integer sums for those
        bins only. Memory is bounded: large batches are processed in chunks of images, and
        large images on the CPU in chunks of pixels.

    Example:
        >>> import torch, torchpalette as tp
        >>> image = torch.zeros(3, 2, 2, dtype=torch.uint8)
        >>> image[:, 0, :] = 200  # top row light grey, bottom row black
        >>> image[:, 0, 0] = 206  # a slightly lighter pixel in the same bin (192..207)
        >>> colors, weights = tp.dominant_colors(image, top_n=4)
        >>> (colors * 255).round(), weights
        (tensor([[  0.,   0.,   0.],
                [203., 203., 203.]]), tensor([0.5000, 0.5000]))
    """
    v.check_image(image, "image")
    top_n = v.check_int(top_n, "top_n", low=1)
    bins = v.check_int(bins, "bins", low=2, high=256)
    return _dominant(image, top_n, bins, use_triton=None)


def _dominant(image: Tensor, top_n: int, bins: int, use_triton: bool | None) -> Palette:
    """:func:`dominant_colors` without the input checks; ``use_triton`` as in :func:`_top_bins`."""
    out_dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    q, opaque, batch = _flat(image)
    counts, order, top_sums = _top_bins(q, opaque, top_n, bins, use_triton)
    k = order.shape[1]
    dev = q.device
    top_counts = counts.gather(1, order)
    edges = _bin_edges(bins, dev)
    lower = torch.stack(
        [edges[order // (bins * bins)], edges[(order // bins) % bins], edges[order % bins]], -1
    )
    safe = top_counts.clamp(min=1)[..., None].to(torch.float64)
    mean = lower.to(torch.float64) + top_sums.to(torch.float64) / safe
    colors = torch.where(top_counts[..., None] > 0, mean / 255.0, 0.0).to(out_dtype)
    n_counted = counts.sum(-1, keepdim=True).clamp(min=1).to(torch.float64)
    weights = (top_counts.to(torch.float64) / n_counted).to(out_dtype)
    return Palette(colors.view(*batch, k, 3), weights.view(*batch, k))
