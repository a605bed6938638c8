"""Images -> (palette indices, palette) for indexed PNGs, through ``tp.quantize`` (each pixel
searched once), with alpha handled like pngquant.

* RGB images (and RGBA ones that are fully opaque): ``tp.quantize`` with each image's own
  ``--colors`` palette, or the fixed one.
* RGBA images with transparency, own palette: ``tp.quantize(alpha="quantize")``: one
  transparent entry, opaque entries for opaque pixels, premultiplied k-means entries for
  semi-transparent ones, ``max(--colors, 2)`` entries in all.
* RGBA images with transparency, fixed palette (``--palette``, ``--fit-palette``):
  transparency is kept. The RGBA palette given to ``tp.quantize`` is the fixed colours
  (opaque), one transparent entry (always there), and as many
  (colour, alpha) entries as fit the 256 of a PNG palette: the pairs (nearest colour,
  alpha) most frequent among the semi-transparent pixels, alpha rounded coarser until they
  fit. When the fixed colours leave too little room, semi-transparent pixels get a share of
  the 255 entries by the square root of their count against the opaque ones (as an own
  palette splits them), and only the image's most used colours stay. Each pixel then takes
  the nearest of these entries in the library's premultiplied space (opaque ones an opaque
  colour; a nearly transparent one may take the transparent entry). These images are searched
  twice (once to count colours and pairs).
* A fully transparent image needs no palette at all: one transparent entry.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

import torchpalette as tp

from .decode import DEFAULT_QUEUE_MIB, Decoder

PNG_ENTRIES = 256


def transparent(h: int, w: int) -> tuple[Tensor, Tensor]:
    """A fully transparent image: indices ``[H, W]`` all 0 into a one-entry palette
    ``[1, 4]`` ``(0, 0, 0, 0)``; no clustering, so it cannot fail."""
    return torch.zeros(h, w, dtype=torch.uint8), torch.zeros(1, 4)


class Quantizer:
    """The quantize options of one run: a palette per image of ``colors`` entries, or the
    ``fixed`` palette ``[K, 3]`` for every image."""

    def __init__(self, colors: int, *, space: str = "lab", dither: str = "none", seed: int = 0,
                 fixed: Tensor | None = None, dither_strength: float = 1.0):
        self.colors, self.space, self.dither, self.seed = colors, space, dither, seed
        self.fixed, self.dither_strength = fixed, dither_strength

    def _quantize(self, x: Tensor, **kw) -> tp.Quantized:
        with warnings.catch_warnings():  # few distinct colours is normal in a dataset
            warnings.filterwarnings("ignore", message=".*fewer distinct.*")
            if self.fixed is not None and "palette" not in kw:
                kw["palette"] = self.fixed.to(x.device)
            kw.update(space=self.space, dither=self.dither,
                      dither_strength=self.dither_strength)
            if "palette" in kw:
                return tp.quantize(x, **kw)
            return tp.quantize(x, self.colors, seed=self.seed, **kw)

    def rgb_batch(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``[B, 3, H, W]`` -> (indices ``[B, H, W]``, palettes ``[B, K, 3]``)."""
        q = self._quantize(x)
        return q.indices, q.palette.expand(x.shape[0], *q.palette.shape[-2:])

    def rgba_one(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``[4, H, W]`` with some alpha < 255 -> (indices ``[H, W]``, palette
        ``[K, 4]`` float RGBA), K <= max(``colors``, 2) (<= 256 with a fixed palette)."""
        if not bool(x[3].any()):
            return transparent(*x.shape[-2:])
        if self.fixed is None:
            q = self._quantize(x, alpha="quantize")
        else:
            q = self._quantize(x, palette=self._rgba_palette(x))
        return q.indices, q.palette

    def _rgba_palette(self, x: Tensor) -> Tensor:
        """The RGBA palette ``[K', 4]`` (K' <= 256) of the fixed colours for ``x`` (module
        docstring)."""
        assert self.fixed is not None
        full = self.fixed.to(x.device).float()
        a = x[3]
        solid, part = a == 255, (a > 0) & (a < 255)
        near = self._quantize(x[:3], palette=full).indices.long()
        used = torch.bincount(near[solid], minlength=len(full))
        budget = PNG_ENTRIES - 1  # the transparent entry is always there
        n_keep = min(len(full), budget - _share(budget, int(solid.sum()), int(part.sum())))
        # this image's most used colours stay opaque entries; the library remaps the others
        opaque = full if n_keep == len(full) else full[
            used.argsort(descending=True, stable=True)[:n_keep]]
        entries = [torch.cat([opaque, torch.ones(len(opaque), 1, device=x.device)], 1),
                   torch.zeros(1, 4, device=x.device)]
        k_part, n_part, near = budget - len(opaque), int(part.sum()), near[part]
        if n_part and k_part > 0:
            alpha = a[part].long()
            for shift in range(8):  # coarser alpha until the (colour, alpha) pairs fit
                level = (((alpha >> shift) << shift) + ((1 << shift) - 1) // 2).clamp(1, 254)
                pairs, counts = torch.unique(near * 256 + level, return_counts=True)
                if len(pairs) <= k_part:
                    break
            pairs = pairs[counts.argsort(descending=True, stable=True)[:k_part]]
            entries.append(torch.cat([full[pairs // 256], (pairs % 256)[:, None] / 255.0], 1))
        return torch.cat(entries)


def _share(budget: int, n_solid: int, n_part: int) -> int:
    """Entries for semi-transparent pixels out of ``budget``: by the square root of the pixel
    counts (thin anti-aliased edges get a fair share), at least 1 when there are any."""
    if n_part == 0:
        return 0
    if n_solid == 0:
        return budget
    share = math.sqrt(n_part) / (math.sqrt(n_part) + math.sqrt(n_solid))
    return min(max(round(budget * share), 1), budget - 1)


def fit_palette(paths: Sequence[Path], *, colors: int, space: str, seed: int,
                device: torch.device, batch_size: int = 32, workers: int = 0,
                queue_bytes: int = DEFAULT_QUEUE_MIB << 20) -> Tensor | None:
    """One palette ``[K, 3]`` for all ``paths`` via ``tp.nn.PaletteQuantizer.fit`` (which
    all-reduces its statistics across ranks under torch.distributed), K <= ``colors``.

    Unreadable files are skipped here and reported by the quantize pass. Fewer distinct colours
    than ``colors`` warns and fits that many instead; no pixel at all (no readable image, or only
    fully transparent ones) returns ``None``.
    """
    from torchpalette import nn as tpnn

    def images():
        decoder = Decoder(paths, workers=workers, batch_size=batch_size, budget=queue_bytes)
        for batch in decoder:
            yield from (d.image for d in batch if d.error is None and d.image is not None)
            decoder.release(batch)

    try:
        q = tpnn.PaletteQuantizer.fit(images(), colors=colors, space=space, seed=seed,
                                      device=device)
    except ValueError as exc:
        if "at least one pixel" in str(exc):
            return None
        few = re.search(r"colors: expected at most (\d+)", str(exc))
        if few is None:
            raise
        warnings.warn(f"--fit-palette: the images hold only {few.group(1)} distinct colours; "
                      f"fitting {few.group(1)} instead of --colors {colors}", stacklevel=2)
        q = tpnn.PaletteQuantizer.fit(images(), colors=int(few.group(1)), space=space,
                                      seed=seed, device=device)
    return q.palette.detach().float()
