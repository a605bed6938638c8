"""Images -> (palette indices, palette) for indexed PNGs, with alpha handled like pngquant.

RGB images (and RGBA ones that are fully opaque) are quantized in batches on the device:
``tp.palette`` per image (or one fixed palette) and the nearest entry per pixel.

RGBA images with transparency are quantized one by one with palette entries that carry alpha,
``--colors N`` bounding the number of entries, alpha variants included:

* fully transparent pixels share one entry ``(0, 0, 0, 0)``;
* opaque pixels map to opaque entries only (clustered in Lab by ``tp.palette``), so opaque
  stays opaque;
* partially transparent pixels are clustered with ``tp.kmeans`` as premultiplied points
  ``(L·α, a·α, b·α, 100·α)`` weighted by their count (colour errors matter in proportion to
  how visible the pixel is, and α spans the same 0-100 as L), then each maps to the nearest of
  *all* entries in that space (a nearly opaque pixel may use an opaque entry, a nearly
  transparent one the transparent entry).

The N entries are split between opaque and partial pixels in proportion to the square root of
their pixel counts (thin anti-aliased edges get a fair share), at least one each when present.
With a fixed palette, partial pixels take (nearest colour, alpha) pairs, alpha rounded coarser
until the pairs fit in the 256 entries of a PNG palette. A fully transparent image needs no
clustering at all: one transparent entry.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

import torchpalette as tp

ALPHA_SCALE = 100.0
_CHUNK = 1 << 16  # pixels per distance block: [65536, 256] float32 is 64 MiB


def transparent(h: int, w: int) -> tuple[Tensor, Tensor]:
    """A fully transparent image: indices ``[H, W]`` all 0 into a one-entry palette
    ``[1, 4]`` ``(0, 0, 0, 0)``; no clustering, so it cannot fail."""
    return torch.zeros(h, w, dtype=torch.int64), torch.zeros(1, 4)


class Quantizer:
    """The quantize options of one run: a palette per image of ``colors`` entries, or the
    ``fixed`` palette ``[K, 3]`` for every image."""

    def __init__(self, colors: int, *, space: str = "lab", dither: str = "none", seed: int = 0,
                 fixed: Tensor | None = None, dither_strength: float = 1.0):
        self.colors, self.space, self.dither, self.seed = colors, space, dither, seed
        self.fixed, self.dither_strength = fixed, dither_strength

    def _indices(self, x: Tensor, pal: Tensor) -> Tensor:
        """Nearest (or dithered) palette indices; an RGBA ``x`` keeps what lies under alpha 0
        out of the dither."""
        return tp.palette_indices(x, pal, space=self.space, dither=self.dither,
                                  dither_strength=self.dither_strength)

    def rgb_batch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``[B, 3, H, W]`` -> (indices ``[B, H, W]`` int64, palettes ``[B, K, 3]``)."""
        if self.fixed is None:
            with warnings.catch_warnings():  # few distinct colours is normal in a dataset
                warnings.filterwarnings("ignore", message=".*fewer distinct colours.*")
                pals = tp.palette(x, k=self.colors, space=self.space, seed=self.seed).colors
        else:
            pals = self.fixed.to(x.device).expand(x.shape[0], *self.fixed.shape)
        return self._indices(x, pals), pals

    def rgba_one(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``[4, H, W]`` with some alpha < 255 -> (indices ``[H, W]``, palette
        ``[K, 4]`` float RGBA), K <= ``colors`` (or <= 256 with a fixed palette)."""
        alpha = x[3]
        if not bool(alpha.any()):
            return transparent(*alpha.shape)
        clear, solid = alpha == 0, alpha == 255
        part = ~(clear | solid)
        n_clear, n_solid, n_part = (int(m.sum()) for m in (clear, solid, part))
        if self.fixed is not None:
            return self._rgba_fixed(x, clear, solid, part)
        budget = max(self.colors - (n_clear > 0), 1)  # colors=1 with transparency: 2 entries
        k_part = _share(budget, n_solid, n_part)
        entries, idx = [], torch.zeros(alpha.shape, dtype=torch.int64, device=x.device)
        if n_clear:
            entries.append(torch.zeros(1, 4, device=x.device))
        if n_solid:
            mask = torch.cat([x[:3], (solid.to(torch.uint8) * 255)[None]])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*fewer distinct colours.*")
                pal = tp.palette(mask, k=budget - k_part, space=self.space, seed=self.seed).colors
            pal = torch.unique(pal, dim=0)  # duplicates of weight 0 waste entries
            near = self._indices(x, pal)
            idx = torch.where(solid, near + len(entries), idx)
            entries.append(torch.cat([pal, torch.ones(len(pal), 1, device=x.device)], 1))
        if n_part:
            points, counts, inverse = _unique_points(x, part)
            k = min(k_part, len(points))
            if k > 0:  # else (no entry left) partial pixels take the nearest other entry
                # CPU draws (as tp.palette's): the same entries on every device
                gen = torch.Generator().manual_seed(self.seed)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*fewer distinct.*")
                    cent = tp.kmeans(points, k, weights=counts.float(), generator=gen).centroids
                entries.append(_from_points(cent))
            idx[part] = _nearest(points, _to_points(torch.cat(entries)))[inverse]
        return idx, torch.cat(entries)

    def _rgba_fixed(self, x: Tensor, clear: Tensor, solid: Tensor, part: Tensor):
        if self.fixed is None:
            raise ValueError("fixed: expected a palette, got None")
        pal = self.fixed.to(x.device)
        k = len(pal)
        near = self._indices(x, pal)
        entries = [torch.cat([pal, torch.ones(k, 1, device=x.device)], 1)]
        idx = near.clone()
        if bool(clear.any()) and k < 256:
            entries.append(torch.zeros(1, 4, device=x.device))
            idx[clear] = k
        room = 256 - sum(len(e) for e in entries)
        if bool(part.any()) and room > 0:
            a = x[3][part].to(torch.int64)
            for shift in range(8):  # coarser alpha until the (colour, alpha) pairs fit
                level = ((a >> shift) << shift) + ((1 << shift) - 1) // 2
                pairs, inv = torch.unique(near[part] * 256 + level.clamp(1, 254),
                                          return_inverse=True)
                if len(pairs) <= room:
                    break
            if len(pairs) <= room:
                base = sum(len(e) for e in entries)
                entries.append(torch.cat([pal[pairs // 256], (pairs % 256)[:, None] / 255.0], 1))
                idx[part] = inv + base
        return idx, torch.cat(entries)


def _share(budget: int, n_solid: int, n_part: int) -> int:
    """Entries for partial pixels out of ``budget``: by the square root of the pixel counts,
    at least 1 for each kind present (and 0 for an absent one)."""
    if n_part == 0:
        return 0
    if n_solid == 0 or budget < 2:
        return budget if n_solid == 0 else 0
    share = math.sqrt(n_part) / (math.sqrt(n_part) + math.sqrt(n_solid))
    return min(max(round(budget * share), 1), budget - 1)


def _unique_points(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Distinct RGBA values of the masked pixels as premultiplied Lab-alpha points ``[U, 4]``,
    their counts ``[U]`` and the inverse map ``[M]`` from masked pixels to points."""
    px = x[:, mask].to(torch.int64)  # [4, M]
    key = px[0] << 24 | px[1] << 16 | px[2] << 8 | px[3]
    uniq, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    rgba = torch.stack([(uniq >> s) & 255 for s in (24, 16, 8, 0)], 1).float() / 255.0
    return _to_points(rgba), counts, inverse


def _to_points(rgba: Tensor) -> Tensor:
    """Float RGBA ``[N, 4]`` -> premultiplied points ``(L·α, a·α, b·α, 100·α)`` ``[N, 4]``."""
    a = rgba[:, 3:]
    return torch.cat([tp.srgb_to_lab(rgba[:, :3].float()) * a, a * ALPHA_SCALE], 1)


def _from_points(points: Tensor) -> Tensor:
    """Inverse of :func:`_to_points` -> float RGBA ``[N, 4]`` (alpha kept in (0, 1))."""
    a = (points[:, 3:] / ALPHA_SCALE).clamp(1 / 255, 254 / 255)
    rgb = tp.lab_to_srgb(points[:, :3] / a).clamp(0, 1)
    return torch.cat([rgb, a], 1)


def _nearest(points: Tensor, entries: Tensor) -> Tensor:
    """Index ``[N]`` of the nearest entry ``[K, 4]`` of each point ``[N, 4]``, in blocks."""
    return torch.cat([torch.cdist(p, entries).argmin(1) for p in points.split(_CHUNK)])
