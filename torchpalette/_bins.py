"""The one 3-D colour binning engine: bin codes, per-bin counts and sums, compaction.

A pixel's 8-bit levels ``(r, g, b)`` (float pixels rounded by the package's one 8-bit rule,
:func:`torchpalette._image.float_to_uint8`) fall in the bin of code
``((r >> s) << 2 bits) | ((g >> s) << bits) | (b >> s)`` with ``s = 8 - bits``: the same codes
for palettes (:func:`bin_pixels`), dataset palettes (:mod:`torchpalette.fit`), dominant colours
(``torchpalette._bins_top``) and the look-up-table assignments of quantization.

Counts and sums over a batch are one pass each: every image's codes are offset by
``image * 2**(3 bits)``, and one ``bincount`` (CPU) or ``scatter_add_`` (other devices, where
``bincount`` syncs to size its output; :func:`_policy.device_choices`) sums them. Counts are
int64 everywhere; on a GPU float sums are integer fixed point, so atomics in any order give
the same bits (same seed, same palette).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from . import _policy
from ._image import to_levels

_FIXED = float(1 << 24)  # fixed-point step of the GPU bin sums (2**-24 of one sRGB unit)
#: Bits per channel of the coarse bins inside which :func:`color_table` finds exact colours.
COARSE_BITS = 5


def pack3(q: Tensor, shift: int, bits: int, mask: int | None, itype: torch.dtype) -> Tensor:
    """Levels ``[B, 3, N]`` uint8 -> ``(f(r) << 2 bits) | (f(g) << bits) | f(b)`` as ``itype``,
    where ``f(x) = x >> shift`` (the bin of a level) or ``x & mask`` (its offset in the bin).
    Built in place from uint8 fields: one pass per operation, no wide copy per channel."""
    field = [(c >> shift) if mask is None else (c & mask) for c in q.unbind(1)]
    key = field[0].to(itype)
    key.bitwise_left_shift_(bits).bitwise_or_(field[1])
    return key.bitwise_left_shift_(bits).bitwise_or_(field[2])


def bin_codes(rgb: Tensor, bits: int) -> Tensor:
    """Pixels ``[B, 3, P]`` uint8 or float sRGB -> int32 bin codes ``[B, P]``."""
    return pack3(to_levels(rgb), 8 - bits, bits, None, torch.int32)


def sum_by(flat: Tensor, w: Tensor | None, size: int, dtype: torch.dtype) -> Tensor:
    """Dense per-code sums of ``w`` (counts when None): ``[size]`` of ``dtype``. By
    ``bincount``, or by ``scatter_add_`` where :func:`_policy.device_choices` says
    ``scatter_bins`` (no host sync).

    Counts are exact on every path (a float32 sum of ones stops at 2**24). On the scatter path
    float ``w`` is summed as int64 fixed point (steps of 2**-24), so atomics in any order give
    the same bits: values up to 255 summed over up to 2**30 pixels cannot overflow."""
    if not _policy.device_choices(flat).scatter_bins:  # float64 weights: float64 sums
        w = None if w is None else w.double()
        return torch.bincount(flat, weights=w, minlength=size).to(dtype)
    flat = flat.long()
    sums = torch.zeros(size, dtype=torch.int64, device=flat.device)
    if w is None:  # counts: exact int64 sums of ones
        ones = torch.ones((), dtype=torch.int64, device=flat.device).expand(flat.shape)
        return sums.scatter_add_(0, flat, ones).to(dtype)
    if not w.is_floating_point():  # integer values (uint8 pixels): exact
        return sums.scatter_add_(0, flat, w.long()).to(dtype)
    sums.scatter_add_(0, flat, torch.round(w * _FIXED).long())
    return sums.to(dtype) / _FIXED


def dense_sums(
    x: Tensor, weights: Tensor | None, bits: int, dtype: torch.dtype
) -> tuple[Tensor, list[Tensor]]:
    """Dense per-bin counts ``[g * 2**(3 bits)]`` and channel sums (three of those) of the
    images ``x [g, 3, P]`` with pixel weights ``[g, P]`` or None, in one pass each."""
    g = x.shape[0]
    nb = 1 << (3 * bits)
    code = bin_codes(x, bits)
    code += torch.arange(g, device=x.device, dtype=torch.int32).unsqueeze(-1) * nb
    flat = code.view(-1)
    w = None if weights is None else weights.to(dtype).reshape(-1)
    counts = sum_by(flat, w, g * nb, dtype)
    sums = []
    for c in range(3):
        xc = x[:, c].reshape(-1)
        if w is not None or x.is_floating_point():
            xc = xc.to(dtype) if w is None else xc.to(dtype) * w
        sums.append(sum_by(flat, xc, g * nb, dtype))
    return counts, sums


def dense_sums_chunked(
    x: Tensor, weights: Tensor | None, bits: int, dtype: torch.dtype
) -> tuple[Tensor, list[Tensor]]:
    """:func:`dense_sums` over chunks of :data:`_policy.BIN_PIXEL_CHUNK` pixels per image (CPU,
    large images): a chunk's codes stay in cache instead of image-sized temporaries. The chunk
    boundaries do not depend on the batch, and the sums accumulate in float64."""
    g, _, p = x.shape
    nb = 1 << (3 * bits)
    step = _policy.BIN_PIXEL_CHUNK
    acc = torch.zeros(4, g * nb, dtype=torch.float64, device=x.device)
    for s in range(0, p, step):
        w = None if weights is None else weights[:, s : s + step]
        counts, sums = dense_sums(x[..., s : s + step], w, bits, torch.float64)
        acc[0] += counts
        for c in range(3):
            acc[c + 1] += sums[c]
    acc = acc.to(dtype)
    return acc[0], [acc[1], acc[2], acc[3]]


def _compact(counts: Tensor, sums: list[Tensor], g: int, nb: int, scale: float,
             dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Dense counts/sums of ``g`` images -> (means ``[g, M, 3]``, counts ``[g, M]``, bin codes
    ``[g, M]``) of the occupied bins, element-major; padding has count 0 and code ``nb``."""
    dev = counts.device
    occ = counts > 0
    (idx,) = occ.nonzero(as_tuple=True)  # sorted: element-major
    row = idx // nb
    n_occ = occ.view(g, nb).sum(-1)
    m = int(n_occ.max())
    pos = torch.arange(idx.numel(), device=dev) - (n_occ.cumsum(0) - n_occ)[row]
    cnt = counts[idx]
    means = torch.zeros(g, m, 3, dtype=dtype, device=dev)
    means[row, pos] = torch.stack([d[idx] for d in sums], -1) * (scale / cnt.unsqueeze(-1))
    out_counts = torch.zeros(g, m, dtype=dtype, device=dev)
    out_counts[row, pos] = cnt
    codes = torch.full((g, m), nb, dtype=torch.int64, device=dev)
    codes[row, pos] = idx - row * nb
    return means, out_counts, codes


def bin_pixels(
    rgb: Tensor, weights: Tensor | None, bits: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Bin pixels into a 3-D colour histogram and compact it to the occupied bins.

    Images are binned in groups whose pixels and dense bins stay under
    :func:`_policy.bin_group` elements: a loop over groups only to bound memory, so a GPU batch
    of 1024 images never holds ``[B, 32768, 4]`` float bins at once.

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB in [0, 1].
        weights: ``[B, P]`` pixel weights (0 = ignored) or None.
        bits: bits per channel.

    Returns:
        ``(means [B, M, 3], counts [B, M], codes [B, M])``: the float32 (float64 for float64
        input) sRGB mean of each occupied bin, its (weighted) pixel count and its bin code
        (int64; ``2**(3 bits)`` for padding). M is the largest number of occupied bins over
        the batch; shorter rows are padded with count 0. Two host syncs per group.
    """
    b, _, p = rgb.shape
    dtype = torch.float64 if rgb.dtype == torch.float64 else torch.float32
    nb = 1 << (3 * bits)
    choices = _policy.device_choices(rgb)
    group = max(1, choices.bin_group // max(p, nb))
    scale = 1.0 / 255.0 if rgb.dtype == torch.uint8 else 1.0
    parts = []
    for g0 in range(0, b, group):
        x = rgb[g0 : g0 + group]
        wg = None if weights is None else weights[g0 : g0 + group]
        chunked = choices.chunk_pixels and p > _policy.BIN_PIXEL_CHUNK >= nb
        counts, sums = (dense_sums_chunked if chunked else dense_sums)(x, wg, bits, dtype)
        parts.append(_compact(counts, sums, x.shape[0], nb, scale, dtype))
    m = max(part[0].shape[1] for part in parts)
    f = torch.nn.functional
    means = torch.cat([f.pad(part[0], (0, 0, 0, m - part[0].shape[1])) for part in parts])
    counts = torch.cat([f.pad(part[1], (0, m - part[1].shape[1])) for part in parts])
    codes = torch.cat([f.pad(part[2], (0, m - part[2].shape[1]), value=nb) for part in parts])
    return means, counts, codes


def recolor_by_bin(
    rgb: Tensor, codes: Tensor, code_labels: Tensor, colors: Tensor, bits: int
) -> Tensor:
    """Give every pixel the colour of its bin's cluster: a per-image look-up table from bin
    code to colour, no per-pixel distances (``reduce_colors(assign="bins")``).

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB, binned as :func:`bin_pixels` did.
        codes: ``[B, M]`` int64 bin code of each slot (``2**(3 bits)`` = padding).
        code_labels: ``[B, M]`` int64 palette index of each slot.
        colors: ``[B, K, 3]`` palette in the output's dtype (uint8 or float).
        bits: bits per channel of ``codes``.

    Returns:
        ``[B, 3, P]`` pixels of ``colors``' dtype. Pixels of bins that carried no weight take
        colour 0, the heaviest. Memory: a table ``[3, B, 2**(3 bits) + 1]`` plus pixel
        temporaries bounded by :func:`_policy.bin_group`.
    """
    b, _, p = rgb.shape
    nb1 = (1 << (3 * bits)) + 1
    slot_col = colors.gather(1, code_labels.unsqueeze(-1).expand(-1, -1, 3))  # [B, M, 3]
    # bins no weighted pixel fell in (alpha 0, or outside a max_pixels subset) take colour 0
    lut = colors[:, :1].permute(2, 0, 1).repeat(1, 1, nb1)  # [3, B, nb + 1], channel-major
    lut.scatter_(2, codes.unsqueeze(0).expand(3, -1, -1), slot_col.permute(2, 0, 1))
    out = torch.empty(b, 3, p, dtype=colors.dtype, device=rgb.device)
    group = max(1, _policy.bin_group(rgb) // p)
    for g0 in range(0, b, group):
        x = rgb[g0 : g0 + group]
        g = x.shape[0]
        code = bin_codes(x, bits).long()
        code += torch.arange(g, device=rgb.device).unsqueeze(-1) * nb1
        for c in range(3):  # lut[c, group] is a contiguous block: a flat view, no copy
            out[g0 : g0 + g, c] = lut[c, g0 : g0 + g].reshape(-1)[code]
    return out


def labels_by_bin(rgb: Tensor, codes: Tensor, code_labels: Tensor, bits: int) -> Tensor:
    """Every pixel's palette index through its bin: a per-image look-up table from bin code to
    label, no per-pixel distances (the look-up-table assignment of quantization).

    Args:
        rgb: ``[B, 3, P]`` uint8 or float sRGB, binned as :func:`bin_pixels` did.
        codes: ``[B, M]`` int64 bin code of each slot (``2**(3 bits)`` = padding).
        code_labels: ``[B, M]`` int64 palette index of each slot.
        bits: bits per channel of ``codes``.

    Returns:
        ``[B, P]`` int64 labels. Pixels of bins that carried no weight (alpha 0) take label 0,
        the heaviest colour. Memory: a table ``[B, 2**(3 bits) + 1]`` plus pixel temporaries
        bounded by :func:`_policy.bin_group`.
    """
    b, _, p = rgb.shape
    nb1 = (1 << (3 * bits)) + 1
    lut = torch.zeros(b, nb1, dtype=torch.int64, device=rgb.device)
    lut.scatter_(1, codes, code_labels)
    lut[:, -1] = 0  # padding slots write the padding code; no pixel has it
    flat = lut.view(-1)
    out = torch.empty(b, p, dtype=torch.int64, device=rgb.device)
    group = max(1, _policy.bin_group(rgb) // max(p, 1))
    for g0 in range(0, b, group):
        x = rgb[g0 : g0 + group]
        code = bin_codes(x, bits).long()
        code += torch.arange(g0, g0 + x.shape[0], device=rgb.device).unsqueeze(-1) * nb1
        out[g0 : g0 + x.shape[0]] = flat[code]
    return out


class ColorTable(NamedTuple):
    """Every image's distinct colours (8-bit levels), rows padded with count 0:
    ``colors [B, U, 3]`` float sRGB (the level / 255 for uint8 pixels, the mean of the pixels
    of the level for float ones); ``counts [B, U]`` weighted pixel counts; ``slot [B, P]``
    int64 index of each pixel's colour in its row; ``distinct [B]`` int64 number of colours
    with weight."""

    colors: Tensor
    counts: Tensor
    slot: Tensor
    distinct: Tensor


def _rows(img: Tensor, b: int) -> tuple[Tensor, int]:
    """Image index of each entry of an image-major list -> (position in its row, row width)."""
    n = torch.bincount(img, minlength=b)
    pos = torch.arange(img.numel(), device=img.device) - (n.cumsum(0) - n)[img]
    return pos, int(n.max()) if b else 0


def color_table(rgb: Tensor, weights: Tensor | None, dtype: torch.dtype) -> ColorTable:
    """Exact colours of images ``rgb [B, 3, P]`` (uint8 or float sRGB), pixel weights
    ``[B, P]`` or None, never through a dense ``2**24`` table (see :func:`_distinct`).
    Weight-0 pixels get a slot (for look-ups) but no count. Images are handled in groups, as
    :func:`bin_pixels`."""
    b, _, p = rgb.shape
    group = max(1, _policy.bin_group(rgb) // max(p, 1 << (3 * COARSE_BITS)))
    parts = [_color_table(rgb[g0 : g0 + group], None if weights is None
                          else weights[g0 : g0 + group], dtype) for g0 in range(0, b, group)]
    if len(parts) == 1:
        return parts[0]
    f = torch.nn.functional
    u = max(t.colors.shape[1] for t in parts)
    return ColorTable(
        torch.cat([f.pad(t.colors, (0, 0, 0, u - t.colors.shape[1])) for t in parts]),
        torch.cat([f.pad(t.counts, (0, u - t.counts.shape[1])) for t in parts]),
        torch.cat([t.slot for t in parts]),
        torch.cat([t.distinct for t in parts]),
    )


def _distinct(q: Tensor) -> tuple[Tensor, Tensor]:
    """Levels ``[g, 3, P]`` uint8 -> (``codes [U]`` int64 ``image * 2**24 + (r << 16 | g << 8 |
    b)`` of every distinct colour, image-major; ``index [g * P]`` int64 of each pixel's colour).

    Few pixels: one sort of the codes. Many: no sort; pixels are counted in the occupied
    coarse bins (:data:`COARSE_BITS`) times the levels inside each, so the passes stay linear
    in the pixels and the table follows the occupied bins."""
    g, _, p = q.shape
    dev = q.device
    if g * p <= _policy.SORT_PIXELS:
        itype = torch.int32 if g < 128 else torch.int64  # int32 sorts several times faster
        code = pack3(q, 0, 8, None, itype)
        code += torch.arange(g, device=dev, dtype=itype).unsqueeze(-1) << 24
        vals, perm = code.view(-1).sort()
        new = torch.ones_like(vals, dtype=torch.bool)
        torch.ne(vals[1:], vals[:-1], out=new[1:])
        rank = new.cumsum(0).sub_(1)
        return vals[new].long(), torch.empty_like(rank).scatter_(0, perm, rank)
    cb, fb = COARSE_BITS, 8 - COARSE_BITS
    nb, sub = 1 << (3 * cb), 1 << (3 * fb)
    code = pack3(q, fb, cb, None, torch.int64)  # coarse bin, offset by image
    code += torch.arange(g, device=dev).unsqueeze(-1) * nb
    (coarse,) = (sum_by(code.view(-1), None, g * nb, torch.float32) > 0).nonzero(as_tuple=True)
    lut = torch.zeros(g * nb, dtype=torch.int64, device=dev)
    lut[coarse] = torch.arange(coarse.numel(), device=dev)
    flat = lut[code].mul_(sub).add_(pack3(q, 0, fb, (1 << fb) - 1, torch.int64)).view(-1)
    nf = coarse.numel() * sub
    (idx,) = (sum_by(flat, None, nf, torch.float32) > 0).nonzero(as_tuple=True)
    lut8 = torch.zeros(nf, dtype=torch.int64, device=dev)
    lut8[idx] = torch.arange(idx.numel(), device=dev)
    c5 = coarse[idx // sub]
    off = idx % sub
    fm = (1 << fb) - 1
    codes = (c5 // nb) << 24
    for c in range(3):  # r, g, b levels: coarse bits above the offset bits
        lv = ((c5 >> (cb * (2 - c))) & ((1 << cb) - 1)) << fb | ((off >> (fb * (2 - c))) & fm)
        codes |= lv << (8 * (2 - c))
    return codes, lut8[flat]


def _color_table(rgb: Tensor, weights: Tensor | None, dtype: torch.dtype) -> ColorTable:
    """:func:`color_table` of one group of images."""
    b, _, p = rgb.shape
    dev = rgb.device
    codes, index = _distinct(to_levels(rgb))
    img = codes >> 24
    pos, u = _rows(img, b)
    n = codes.numel()
    ones = sum_by(index, None, n, dtype)
    cnt = ones if weights is None else sum_by(index, weights.reshape(-1).to(dtype), n, dtype)
    if rgb.dtype == torch.uint8:
        col = torch.stack([(codes >> (8 * (2 - c))) & 255 for c in range(3)], -1).to(dtype) / 255
    else:  # float pixels: the mean of the pixels of each level
        col = torch.stack([sum_by(index, rgb[:, c].reshape(-1).to(dtype), n, dtype)
                           for c in range(3)], -1) / ones.unsqueeze(-1)
    colors = torch.zeros(b, u, 3, dtype=dtype, device=dev)
    colors[img, pos] = col
    out_counts = torch.zeros(b, u, dtype=dtype, device=dev)
    out_counts[img, pos] = cnt
    distinct = torch.zeros(b, dtype=torch.int64, device=dev).index_add_(0, img, (cnt > 0).long())
    return ColorTable(colors, out_counts, pos[index].view(b, p), distinct)
