"""Image histograms and dominant colours.

Both functions count 8-bit colour levels. uint8 images are used as they are; float images in
[0, 1] are first rounded to the nearest of the 256 levels by the package's one 8-bit rule
(``round(255 x)``), so a float image and the uint8 image it came from give identical counts and
identical colours. Pixels whose alpha is 0 are not counted (alpha is not a colour).

Counting is one fused pass: every (image, channel or colour bin) pair gets its own slot in one
flat index, and a single ``bincount`` over that index counts a whole batch. Transparent pixels
are sent to one spare slot per image that is dropped afterwards.

``dominant_colors`` reproduces the "top colours" of the Elixir Image library's notebook with one
change: each colour is the mean of the pixels that fell into its 3-D bin, not the bin's centre
(which can be off by half a bin). The mean is exact: bin lower edge + (integer sum of the
pixels' offsets from that edge) / count. The counting engine is ``torchpalette._bins_top``
(two passes, chunked on large CPU images, Triton kernels on CUDA).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _bins_top, _policy
from . import _validate as v
from ._image import to_levels
from ._types import Palette

__all__ = ["histogram", "dominant_colors", "LUMA_WEIGHTS"]

#: ITU-R BT.601 luma weights, applied to the gamma-encoded 8-bit R', G', B' values, in the
#: 16-bit fixed point Pillow uses for ``Image.convert("L")``: luminance = (19595 R + 38470 G +
#: 7471 B + 32768) >> 16. BT.601 on gamma-encoded values is what image editors and Pillow show
#: as the "luminosity" histogram; using the same integers makes our luminance channel equal to
#: the histogram of ``PIL.Image.convert("L")`` exactly, so it can be checked against Pillow.
LUMA_WEIGHTS = (19595, 38470, 7471)


def _flat(image: Tensor) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
    """Image -> (levels ``[B, 3, N]`` uint8, opaque mask ``[B, N]`` bool or None, batch shape)."""
    batch = tuple(image.shape[:-3])
    flat = image.reshape(-1, image.shape[-3], image.shape[-2] * image.shape[-1])
    opaque = None
    if flat.shape[1] == 4:
        opaque = flat[:, 3] > 0
        flat = flat[:, :3]
    return to_levels(flat), opaque, batch


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
        batch (over chunks of pixels on large images, to bound memory); transparent pixels go
        to a spare slot that is dropped.

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
    spare = n_img * 4 * bins
    counts = torch.zeros(spare + 1, dtype=torch.int64, device=q.device)
    step = max(1, _policy.HISTOGRAM_CHUNK // n_img)  # bounds the int32 temporaries
    for s in range(0, n_pix, step):
        part = None if opaque is None else opaque[:, s : s + step]
        index = _level_index(q[..., s : s + step], part, bins)
        counts += torch.bincount(index, minlength=spare + 1)
    return counts[:spare].view(*batch, 4, bins)


def _level_index(q: Tensor, opaque: Tensor | None, bins: int) -> Tensor:
    """Levels ``[B, 3, N]`` uint8 -> flat index ``(image * 4 + row) * bins + bin`` of every
    R, G, B and luminance level (transparent pixels -> the spare slot ``B * 4 * bins``)."""
    n_img = q.shape[0]
    q32 = q.to(torch.int32)  # [B, 3, N]
    w = torch.tensor(LUMA_WEIGHTS, dtype=torch.int32, device=q.device)
    luma = (q32 * w[:, None]).sum(1, dtype=torch.int32).add_(32768).bitwise_right_shift_(16)
    levels = torch.cat([q32, luma[:, None]], dim=1)  # [B, 4, N]
    bin_of = levels.mul_(bins).bitwise_right_shift_(8)  # floor(x * bins / 256), exact
    offset = torch.arange(n_img * 4, dtype=torch.int32, device=q.device).view(n_img, 4, 1) * bins
    index = bin_of.add_(offset)
    if opaque is not None:
        index = torch.where(opaque[:, None, :], index, n_img * 4 * bins)
    return index.flatten()


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
    """Unchecked :func:`dominant_colors`; ``use_triton`` as in ``_bins_top.top_bins``."""
    out_dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    q, opaque, batch = _flat(image)
    counts, order, top_sums = _bins_top.top_bins(q, opaque, top_n, bins, use_triton)
    k = order.shape[1]
    dev = q.device
    top_counts = counts.gather(1, order)
    edges = _bins_top.bin_edges(bins, dev)
    lower = torch.stack(
        [edges[order // (bins * bins)], edges[(order // bins) % bins], edges[order % bins]], -1
    )
    safe = top_counts.clamp(min=1)[..., None].to(torch.float64)
    mean = lower.to(torch.float64) + top_sums.to(torch.float64) / safe
    colors = torch.where(top_counts[..., None] > 0, mean / 255.0, 0.0).to(out_dtype)
    n_counted = counts.sum(-1, keepdim=True).clamp(min=1).to(torch.float64)
    weights = (top_counts.to(torch.float64) / n_counted).to(out_dtype)
    return Palette(colors.view(*batch, k, 3), weights.view(*batch, k))
