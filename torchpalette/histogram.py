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
(which can be off by half a bin). The per-bin sums are integer and exact: each pixel adds its
offset from its bin's lower edge, packed two channels per int64 (plus the count), so two
``index_add_`` passes give counts and all three sums for every bin of every image at once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _validate as v
from .palette import Palette

__all__ = ["histogram", "dominant_colors", "LUMA_WEIGHTS"]

#: ITU-R BT.601 luma weights, applied to the gamma-encoded 8-bit R', G', B' values, in the
#: 16-bit fixed point Pillow uses for ``Image.convert("L")``: luminance = (19595 R + 38470 G +
#: 7471 B + 32768) >> 16. BT.601 on gamma-encoded values is what image editors and Pillow show
#: as the "luminosity" histogram; using the same integers makes our luminance channel equal to
#: the histogram of ``PIL.Image.convert("L")`` exactly, so it can be checked against Pillow.
LUMA_WEIGHTS = (19595, 38470, 7471)

_SHIFT = 31  # bit offset of the second field in the packed int64 sums


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


def _lanes(device: torch.device, total: int) -> int:
    """Private copies per bin for the accumulation. On CUDA, neighbouring pixels (one warp)
    mostly fall in the same bin, and atomic adds to one address serialise; spreading pixel
    ``p`` over copy ``p % lanes`` removes that contention for a small ``lanes``-fold larger
    accumulator (summed afterwards). On CPU the adds are sequential: one copy."""
    if device.type != "cuda":
        return 1
    return 32 if total * 32 <= 2**26 else 1


def _bin_sums(q: Tensor, opaque: Tensor | None, bins: int, lanes: int) -> tuple[Tensor, Tensor]:
    """Levels ``[B, 3, N]`` uint8 -> (counts ``[B, bins**3]`` int64, offset sums
    ``[B, bins**3, 3]`` int64: per bin, the sum of each pixel's offset from the bin's lower
    edge). Transparent pixels (``opaque`` False) go to a spare slot that is dropped."""
    n_img, _, n_pix = q.shape
    dev = q.device
    n_bins = bins**3
    slots = n_bins + 1  # + one spare slot per image for transparent pixels
    total = n_img * slots * lanes

    pow2 = bins & (bins - 1) == 0
    itype = torch.int16 if pow2 and total <= 2**15 and dev.type == "cpu" else torch.int32
    if total >= 2**31:
        itype = torch.int64
    if pow2:  # shifts and masks on the uint8 levels, then widen
        shift = 8 - (bins.bit_length() - 1)
        cbin = (q >> shift).to(itype)
        rem = (q & ((1 << shift) - 1)).to(itype)
    else:
        qi = q.to(itype)  # [B, 3, N]
        cbin = (q.to(torch.int32) * bins >> 8).to(itype)
        rem = qi - _bin_edges(bins, dev).to(itype)[cbin.long()]
    index = (cbin[:, 0] * bins + cbin[:, 1]).mul_(bins).add_(cbin[:, 2])  # [B, N]
    if opaque is not None:
        index = torch.where(opaque, index, n_bins)
    index += torch.arange(n_img, dtype=itype, device=dev)[:, None] * slots
    if lanes > 1:
        lane = torch.arange(n_pix, device=dev, dtype=itype) % lanes
        index = index.mul_(lanes).add_(lane)
    index = count_index = index.flatten()  # bincount is fastest on the narrow int16 index
    if index.dtype == torch.int16:  # index_add_ takes int32/int64 indices
        index = index.to(torch.int32)

    # Packed exact sums: a 31-bit field holds (bin width - 1) * N for N up to ~16 M pixels
    # per image even at bins=2; larger images take separate passes so nothing can overflow.
    width = -(-256 // bins)
    if lanes == 1 and dev.type == "cpu" and (width - 1) * n_pix < 2**_SHIFT:
        # CPU: int32 sums need no 8-byte copy of every pixel (the costly part on CPU);
        # counts from one bincount, sums from one int32 index_add_ per channel.
        counts = torch.bincount(count_index, minlength=total)
        rem32 = rem.to(torch.int32)
        sums = torch.stack([torch.zeros(total, dtype=torch.int32, device=dev).index_add_(
            0, index, rem32[:, c].flatten()) for c in range(3)], -1).to(torch.int64)
        return counts.view(n_img, slots)[:, :n_bins], sums.view(n_img, slots, 3)[:, :n_bins]
    rem64 = rem.to(torch.int64)  # [B, 3, N]
    if (width - 1) * n_pix < 2**_SHIFT and n_pix < 2**31:
        rg = (rem64[:, 0] + (rem64[:, 1] << _SHIFT)).flatten()
        bc = (rem64[:, 2] + (1 << _SHIFT)).flatten()
        acc_rg = torch.zeros(total, dtype=torch.int64, device=dev).index_add_(0, index, rg)
        acc_bc = torch.zeros(total, dtype=torch.int64, device=dev).index_add_(0, index, bc)
        if lanes > 1:  # sum the private copies (fields cannot carry: totals fit as above)
            acc_rg, acc_bc = acc_rg.view(-1, lanes).sum(-1), acc_bc.view(-1, lanes).sum(-1)
        mask = (1 << _SHIFT) - 1
        sums = torch.stack([acc_rg & mask, acc_rg >> _SHIFT, acc_bc & mask], -1)
        counts = acc_bc >> _SHIFT
    else:
        zeros = torch.zeros(total, 3, dtype=torch.int64, device=dev)
        sums = zeros.index_add_(0, index, rem64.transpose(1, 2).reshape(-1, 3))
        counts = torch.bincount(index, minlength=total)
        if lanes > 1:
            sums, counts = sums.view(-1, lanes, 3).sum(1), counts.view(-1, lanes).sum(-1)
    counts = counts.view(n_img, slots)[:, :n_bins]
    sums = sums.view(n_img, slots, 3)[:, :n_bins]
    return counts, sums


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
        Sums are exact integers: each pixel adds its offset from the lower edge of its bin;
        (r, g) offsets are packed into one int64 and (b offset, 1) into another, so two
        ``index_add_`` passes over a batch-offset index give counts and sums of every bin.
        Only the ``top_n`` bins are divided into means.

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
    out_dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    q, opaque, batch = _flat(image)
    n_img, _, n_pix = q.shape
    dev = q.device
    counts, sums = _bin_sums(q, opaque, bins, _lanes(dev, n_img * (bins**3 + 1)))

    occupied = int((counts > 0).sum(-1).max())  # one sync per call, to size the output
    k = max(1, min(top_n, occupied))
    # Stable descending sort: equal counts keep ascending bin order (the tie rule).
    order = torch.sort(counts, dim=-1, descending=True, stable=True).indices[:, :k]
    top_counts = counts.gather(1, order)
    top_sums = sums.gather(1, order[..., None].expand(-1, -1, 3))
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
