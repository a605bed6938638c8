"""RGBA palettes: alpha as a quantized channel (``alpha="quantize"`` of quantization).

Pixels and palette entries are compared as premultiplied points ``(c·α, s·α)`` where ``c`` are
the colour's coordinates in the space and ``s`` the span of that space's lightness (100 for
Lab, 1 for Oklab and sRGB), so a colour error counts in proportion to how visible the pixel is
and alpha is measured on the lightness scale. Three rules keep an image's look:

* fully transparent pixels share one entry ``(0, 0, 0, 0)`` (the entry nearest to nothing);
* opaque pixels map to opaque entries only (where the palette has one), so opaque stays
  opaque: for them the search is the plain colour search;
* semi-transparent pixels map to the nearest of all entries.

An image's own RGBA palette (pngquant's approach): ``colors`` entries in all, one for the
transparent pixels where there are any; the rest split between opaque and semi-transparent
pixels by the square root of their counts (thin anti-aliased edges get a fair share), at least
one each where present; opaque entries are the opaque pixels' k-means palette, semi-transparent
ones the k-means centres of their premultiplied points weighted by count.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _policy
from ._image import to_float, to_levels
from ._kmeans import cluster
from ._nearest import argmin_over_k
from ._palette_core import PaletteOptions, palette_of_pixels
from ._spaces import from_space, to_space

#: Span of each space's lightness: the scale of alpha among the premultiplied coordinates.
ALPHA_SCALE = {"lab": 100.0, "oklab": 1.0, "srgb": 1.0}
_OPAQUE = 1.0 - 0.5 / 255.0  # entries at least this opaque round to alpha 255


def premultiplied(rgba: Tensor, space: str) -> Tensor:
    """Float RGBA ``[..., 4]`` -> premultiplied points ``(c·α, s·α)`` ``[..., 4]``."""
    a = rgba[..., 3:]
    return torch.cat([to_space(rgba[..., :3], space) * a, a * ALPHA_SCALE[space]], -1)


def from_premultiplied(points: Tensor, space: str) -> Tensor:
    """Inverse of :func:`premultiplied` for semi-transparent points -> float RGBA ``[..., 4]``
    (alpha kept within (0, 1), so an entry of semi-transparent pixels stays one)."""
    a = (points[..., 3:] / ALPHA_SCALE[space]).clamp(1 / 255, 254 / 255)
    return torch.cat([from_space(points[..., :3] / a, space).clamp(0, 1), a], -1)


def nearest_entry(rgba: Tensor, palette: Tensor, space: str) -> Tensor:
    """Index ``[B, P]`` int64 of each pixel's entry, by the rules of the module docstring.

    Args:
        rgba: ``[B, 4, P]`` uint8 or float RGBA pixels.
        palette: ``[B, K, 4]`` float RGBA entries in [0, 1].
        space: ``"lab"``, ``"oklab"`` or ``"srgb"``.

    Distances are ``|e|^2 - 2 e.x`` as one batched product per chunk of pixels (at most
    :func:`_policy.nearest_chunk` distances at once); ties take the lower index.
    """
    b, _, p = rgba.shape
    k = palette.shape[1]
    dtype = torch.float64 if torch.float64 in (rgba.dtype, palette.dtype) else torch.float32
    entries = premultiplied(palette.to(dtype), space)  # [B, K, 4]
    ee = entries.square().sum(-1, keepdim=True)  # [B, K, 1]
    opaque = palette[..., 3] >= _OPAQUE  # [B, K]
    # opaque pixels may use only opaque entries, where the image's palette has some
    barred = (~opaque & opaque.any(-1, keepdim=True)).unsqueeze(-1)  # [B, K, 1]
    labels = torch.empty(b, p, dtype=torch.int64, device=rgba.device)
    step = max(1, _policy.nearest_chunk(rgba) // max(1, b * k))
    with _policy.ieee_fp32():
        for s in range(0, p, step):
            x = to_float(rgba[..., s : s + step], dtype).transpose(1, 2)  # [B, c, 4]
            pts = premultiplied(x, space)
            dist = torch.baddbmm(ee, entries, pts.transpose(1, 2), alpha=-2.0)  # [B, K, c]
            solid = (x[..., 3] >= 1.0).unsqueeze(1)  # [B, 1, c]
            dist = dist.masked_fill(barred & solid, float("inf"))
            labels[:, s : s + step] = argmin_over_k(dist)[0]  # ties: the lower index
    return labels


def _share(budget: int, n_solid: int, n_part: int) -> int:
    """Entries for semi-transparent pixels out of ``budget``: by the square root of the pixel
    counts, at least 1 for each kind present (0 for an absent one)."""
    if n_part == 0:
        return 0
    if n_solid == 0 or budget < 2:
        return budget if n_solid == 0 else 0
    share = math.sqrt(n_part) / (math.sqrt(n_part) + math.sqrt(n_solid))
    return min(max(round(budget * share), 1), budget - 1)


def own_entries(rgba: Tensor, opt: PaletteOptions) -> Tensor:
    """One image's own RGBA palette (module docstring): ``[K', 4]`` float32/64 entries,
    ``K' <= max(opt.k, 2)`` (a transparent entry plus at least one other).

    Args:
        rgba: ``[4, P]`` uint8 or float pixels of one image.
        opt: checked palette options (``opt.k`` entries in all).
    """
    levels = to_levels(rgba[3])
    clear, solid = levels == 0, levels == 255
    part = ~(clear | solid)
    n_clear, n_solid, n_part = (int(m.sum()) for m in (clear, solid, part))
    dtype = torch.float64 if rgba.dtype == torch.float64 else torch.float32
    dev = rgba.device
    if n_clear == rgba.shape[-1]:
        return torch.zeros(1, 4, dtype=dtype, device=dev)
    budget = max(opt.k - (n_clear > 0), 1)  # k=1 with transparency: 2 entries
    k_part = _share(budget, n_solid, n_part)
    entries = [torch.zeros(1, 4, dtype=dtype, device=dev)] if n_clear else []
    gen = torch.Generator().manual_seed(opt.seed)
    if n_solid:
        cols, wts, _, _ = palette_of_pixels(
            rgba[None, :3], budget - k_part, weights=solid[None].to(dtype), space=opt.space,
            method=opt.method, bits=opt.bits, generator=gen, **opt.kmeans)
        keep = wts[0] > 0  # weight-0 duplicates would waste entries
        keep[0] = True
        cols = cols[0][keep].to(dtype)
        entries.append(torch.cat([cols, torch.ones_like(cols[:, :1])], 1))
    if n_part:
        px = to_levels(rgba[:, part]).to(torch.int64)  # [4, M] distinct RGBA levels, counted
        key = px[0] << 24 | px[1] << 16 | px[2] << 8 | px[3]
        uniq, counts = torch.unique(key, return_counts=True)
        levels4 = torch.stack([(uniq >> s) & 255 for s in (24, 16, 8, 0)], 1).to(dtype) / 255
        points = premultiplied(levels4, opt.space)
        k = min(k_part, len(points))
        if k > 0:  # else (no entry left) they take the nearest other entry
            res, _ = cluster(points[None], k, weights=counts[None].to(dtype), generator=gen,
                             **opt.kmeans)
            entries.append(from_premultiplied(res.centroids[0], opt.space))
    return torch.cat(entries)


def quantize_rgba(
    image: Tensor, space: str, *, opt: PaletteOptions | None = None,
    palette: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Labels ``[B, P]`` (one search for every pixel) and RGBA palettes ``[B, K, 4]`` of
    checked images ``[B, 4, P]`` (or RGB ``[B, 3, P]``, taken as opaque) with each image's own
    palette (``opt``: K = ``max(opt.k, 2)``, unused entries repeat entry 0) or the given
    ``palette [B, K, 4]``."""
    b, c, p = image.shape
    if c == 3:
        one = 255 if image.dtype == torch.uint8 else 1
        image = torch.cat([image, torch.full_like(image[:, :1], one)], 1)
    if palette is None:
        if opt is None:
            raise TypeError("quantize_rgba: expected opt or palette, got neither")
        k = max(opt.k, 2)
        rows = []
        with _policy.single_thread_if_small(image, b * p, _policy.SMALL_PIXELS):
            for i in range(b):  # each image's own budget split; the search below is batched
                e = own_entries(image[i], opt)
                rows.append(torch.cat([e, e[:1].expand(k - len(e), 4)]))
        palette = torch.stack(rows)
    return nearest_entry(image, palette, space), palette


def opaque_substitutes(palette: Tensor) -> Tensor:
    """``[B, K]`` int64: each entry's index if it is opaque, else the first opaque entry's
    (entry 0 where none is): a dither over the colours ``palette.gather(sub)`` can only pick
    opaque entries, and its labels map back through ``sub``."""
    opaque = palette[..., 3] >= _OPAQUE
    k = palette.shape[-2]
    idx = torch.arange(k, device=palette.device).expand_as(opaque)
    first = torch.where(opaque, idx, k).amin(-1, keepdim=True) % k
    return torch.where(opaque, idx, first)
