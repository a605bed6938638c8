"""Dataset palettes: one palette for a whole stream of images, on one process or many.

:func:`fit_palette` streams batches into a 3-D colour histogram of pixel counts and colour sums
(integers, so the statistics do not depend on batch order, rank count or all-reduce order),
all-reduces them when ``torch.distributed`` is initialised, and clusters the occupied bins'
mean colours with the same weighted k-means and defaults as :func:`torchpalette.palette`. Rank
0's palette is broadcast, so ranks on different hardware still agree. It is the engine of
``PaletteQuantizer.fit`` and of ``torchpalette quantize --fit-palette``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._bins import bin_codes
from ._dist import all_reduce, broadcast
from ._image import split_alpha
from ._kmeans import cluster
from ._palette_core import DEFAULT_BITS, kmeans_defaults
from ._spaces import SPACES, from_space, to_space

__all__ = ["fit_palette", "color_stats", "palette_from_stats"]


def _plain(x: Any) -> Any:
    """A plain ``Tensor`` view of a tensor subclass (tv_tensors); anything else unchanged."""
    return x.as_subclass(Tensor) if isinstance(x, Tensor) and type(x) is not Tensor else x


def fit_palette(
    images_or_loader: Any,
    colors: int,
    *,
    space: str = "lab",
    max_pixels: int | None = None,
    bits: int = DEFAULT_BITS,
    seed: int = 0,
    device: torch.device | str | None = None,
    process_group: Any = None,
    key: Any = None,
) -> Tensor:
    """One ``colors``-colour palette for every image of a stream, most used colour first.

    Args:
        images_or_loader: an image tensor ``[..., 3|4, H, W]``, an iterable of them, or a
            DataLoader yielding tensors, ``(images, ...)`` tuples or ``{"image": ...}`` dicts.
        colors: palette size (>= 1, no upper cap: ImageGPT used 512).
        space: clustering space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        max_pixels: at most this many evenly spaced pixels per image (``None``: all).
        bits: histogram bits per channel, 1..8.
        seed: k-means seed.
        device: where the statistics and k-means live (default: each batch's device).
        process_group: torch.distributed group to all-reduce over.
        key: the entry of dict batches (or index of tuple batches) that holds the images
            (default: ``"image"`` if present, else the first entry).

    Returns:
        ``[colors, 3]`` float32 sRGB palette in [0, 1], sorted by pixel share.

    Raises:
        ValueError: no pixel with alpha > 0, more colours than colour bins seen, bad options
            or bad images (as :func:`torchpalette.palette`).
        TypeError: a batch that is not an image tensor.

    Example:
        >>> import torch
        >>> import torchpalette as tp
        >>> images = torch.zeros(3, 3, 4, 4, dtype=torch.uint8)
        >>> images[2] = 255  # two black images and a white one
        >>> tp.fit_palette(images, 2).mul(255).round()
        tensor([[  0.,   0.,   0.],
                [255., 255., 255.]])
    """
    colors = v.check_int(colors, "colors", low=1)
    bits = v.check_int(bits, "bits", low=1, high=8)
    if max_pixels is not None:
        max_pixels = v.check_int(max_pixels, "max_pixels", low=1)
    v.check_choice(space, "space", SPACES)
    stats = None
    for batch in _batches(images_or_loader, key):
        batch = v.check_image(_plain(batch), "images_or_loader")
        if stats is None:
            device = torch.device(device) if device is not None else batch.device
            stats = torch.zeros(1 << 3 * bits, 7, dtype=torch.int64, device=device)
        _accumulate(stats, batch.to(device), bits, max_pixels)
    if stats is None:
        stats = torch.zeros(1 << 3 * bits, 7, dtype=torch.int64, device=device or "cpu")
    stats = _carry(all_reduce(stats, process_group))
    with _policy.no_autocast(stats):  # float32 Lab and k-means, as without autocast
        colors_out = _palette_from_stats(stats, colors, space, seed)
    return broadcast(colors_out, process_group)


def color_stats(images: Tensor, *, bits: int = DEFAULT_BITS,
                max_pixels: int | None = None) -> Tensor:
    """The statistics :func:`fit_palette` sums over a dataset, for one batch: to be summed
    across workers (Ray tasks, processes) and given to :func:`palette_from_stats`.

    Args:
        images: ``[..., 3|4, H, W]`` uint8 or float in [0, 1]; alpha-0 pixels not counted.
        bits: histogram bits per channel, 1..8.
        max_pixels: at most this many evenly spaced pixels per image (``None``: all).

    Returns:
        ``[2**(3*bits), 7]`` int64 per colour bin: pixel count, then exact colour sums (R, G,
        B) in whole 8-bit levels and in fractions of a level. Sums of these over any split of
        a dataset are the same integers.

    Example:
        >>> import torch
        >>> from torchpalette.fit import color_stats, palette_from_stats
        >>> a, b = torch.zeros(1, 3, 2, 2, dtype=torch.uint8), torch.full((1, 3, 2, 2), 255)
        >>> stats = 2 * color_stats(a) + color_stats(b.to(torch.uint8))  # summed by a driver
        >>> palette_from_stats(stats, 2).mul(255).round()
        tensor([[  0.,   0.,   0.],
                [255., 255., 255.]])
    """
    bits = v.check_int(bits, "bits", low=1, high=8)
    if max_pixels is not None:
        max_pixels = v.check_int(max_pixels, "max_pixels", low=1)
    images = v.check_image(_plain(images), "images")
    stats = torch.zeros(1 << 3 * bits, 7, dtype=torch.int64, device=images.device)
    _accumulate(stats, images, bits, max_pixels)
    return stats


def palette_from_stats(stats: Tensor, colors: int, *, space: str = "lab",
                       seed: int = 0) -> Tensor:
    """The palette of summed :func:`color_stats` ``[2**(3*bits), 7]`` -> ``[colors, 3]`` float32
    sRGB in [0, 1], most used colour first: the second half of :func:`fit_palette`.

    Raises:
        ValueError: no counted pixel, or more ``colors`` than occupied colour bins.
    """
    colors = v.check_int(colors, "colors", low=1)
    v.check_choice(space, "space", SPACES)
    if not isinstance(stats, Tensor) or stats.ndim != 2 or stats.shape[1] != 7:
        raise ValueError(f"stats: expected a [bins, 7] tensor of color_stats, got "
                         f"{getattr(stats, 'shape', type(stats).__name__)}")
    return _palette_from_stats(_carry(stats.long().clone()), colors, space, seed)


def _batches(images_or_loader: Any, key: Any = None) -> Iterable[Tensor]:
    """Yield image tensors from a tensor, a list of images, or a DataLoader whose batches are
    tensors, ``(images, labels, ...)`` tuples/lists, or dicts (``key``, else ``"image"``, else
    the first entry)."""
    if isinstance(images_or_loader, Tensor):
        yield images_or_loader
        return
    for item in images_or_loader:
        if isinstance(item, dict):
            if key is not None and key not in item:
                raise ValueError(f"key: expected one of {sorted(map(str, item))}, got {key!r}")
            item = item[key] if key is not None else item.get(
                "image", next(iter(item.values()), None)
            )
        elif isinstance(item, (tuple, list)) and not isinstance(item, Tensor):
            item = item[key if isinstance(key, int) else 0] if len(item) else None
        yield item


# Statistics are integers (exact, so sums do not depend on batch order, rank count or
# all-reduce order): per bin the pixel count, the sums of the whole 8-bit levels and the sums
# of their fractions in units of 2**-16 level, carried into the whole part after each batch.
# A bin then overflows only past 2**63 / 255 (3.6e16) pixels, where one int64 sum in units of
# 2**-16 level overflowed past 5.5e11.
_FIX_SHIFT = 16
_FIX_MASK = (1 << _FIX_SHIFT) - 1


def _accumulate(stats: Tensor, images: Tensor, bits: int, max_pixels: int | None) -> None:
    """Add the pixels of ``images`` ``[..., 3|4, H, W]`` to ``stats`` ``[bins**3, 7]`` int64
    (count, whole-level sums R, G, B, fraction sums R, G, B per bin); alpha-0 pixels are not
    counted."""
    c, h, w = images.shape[-3:]
    flat = images.reshape(-1, c, h * w)
    n = h * w
    if max_pixels is not None and n > max_pixels:  # evenly spaced, deterministic subsample
        flat = flat[..., torch.arange(max_pixels, device=flat.device) * n // max_pixels]
        n = max_pixels
    step = max(1, _policy.FIT_CHUNK_PIXELS // n)
    for start in range(0, flat.shape[0], step):  # chunks bound memory; not one pass per image
        rgb, alpha = split_alpha(flat[start : start + step].unsqueeze(-1))
        rgb = rgb.squeeze(-1)
        if rgb.dtype == torch.uint8:
            fixed = rgb.long() << _FIX_SHIFT
        else:
            fixed = (rgb.double() * (255 << _FIX_SHIFT)).round_().long()
        index = bin_codes(rgb, bits).reshape(-1).long()
        keep = torch.ones_like(index) if alpha is None else (alpha.reshape(-1) > 0).long()
        fixed = fixed.transpose(1, 2).reshape(-1, 3) * keep[:, None]
        values = torch.cat([keep[:, None], fixed >> _FIX_SHIFT, fixed & _FIX_MASK], 1)
        stats.index_add_(0, index, values)
    _carry(stats)


def _carry(stats: Tensor) -> Tensor:
    """Move whole levels from the fraction sums into the level sums of ``stats``, in place."""
    stats[:, 1:4] += stats[:, 4:] >> _FIX_SHIFT
    stats[:, 4:] &= _FIX_MASK
    return stats


def _palette_from_stats(stats: Tensor, colors: int, space: str, seed: int) -> Tensor:
    """Weighted k-means on the occupied bins -> sRGB palette ``[colors, 3]``, most used first."""
    occupied = stats[:, 0].nonzero().squeeze(1)
    if occupied.numel() == 0:
        raise ValueError("images_or_loader: expected at least one pixel with alpha > 0, got none")
    if occupied.numel() < colors:
        raise ValueError(
            f"colors: expected at most {occupied.numel()} (the distinct colour bins seen in "
            f"images_or_loader), got {colors}"
        )
    counts = stats[occupied, 0].double()
    sums = stats[occupied, 1:4].double() + stats[occupied, 4:].double() / (1 << _FIX_SHIFT)
    means = sums / (counts[:, None] * 255)
    points = to_space(means.float(), space)
    generator = torch.Generator().manual_seed(seed)  # CPU draws: the same on every device
    result, _ = cluster(
        points, colors, weights=counts.float(), generator=generator, **kmeans_defaults(colors)
    )
    mass = torch.zeros(colors, dtype=torch.float64, device=points.device)
    mass.index_add_(0, result.labels, counts)
    order = torch.sort(mass, descending=True, stable=True).indices
    return from_space(result.centroids[order], space).clamp(0, 1)
