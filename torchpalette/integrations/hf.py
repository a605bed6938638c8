"""Palette tokens for Hugging Face ``datasets``: a callable for
``Dataset.map(batched=True, with_rank=True)`` that returns ``input_ids`` as
``ImageGPTImageProcessor`` does (every pixel's palette index, flattened in raster order), and
each image's palette.

``datasets`` itself is not imported: the callable takes and returns plain dicts of lists, so
it also serves any batched pipeline. With ``with_rank=True`` each process quantizes on GPU
``rank % device_count`` when CUDA is there (``num_proc`` processes sharing the GPUs).
"""

from __future__ import annotations

from typing import Any

import torch

from ._common import as_palette, palette_u8, quantize_images, to_uint8_chw

__all__ = ["PaletteTokenizer"]


class PaletteTokenizer:
    """``batch -> {"input_ids", "palette"}`` for ``datasets.Dataset.map(batched=True)``.

    Args:
        palette: one dataset palette ``[K, 3]`` (float sRGB in [0, 1] or uint8; ImageGPT's
            centres through :func:`torchpalette.integrations.imagegpt_palette`), or ``None``
            for each image's own ``colors``-colour palette.
        colors: palette size per image when ``palette`` is None.
        image_column: the batch's column of images (PIL images, ``[H, W, 3|4]`` uint8 arrays or
            ``[3|4, H, W]`` uint8 tensors; alpha dropped).
        space, dither, seed: as :func:`torchpalette.palette_indices` / ``torchpalette.palette``.
        device: where to quantize; ``None``: ``cuda:{rank % device_count}`` when CUDA is
            available, else the CPU.
        flatten: ``input_ids`` per image ``[H * W]`` (ImageGPT's) instead of ``[H, W]``.
        return_palette: add the ``palette`` column (uint8 ``[K, 3]`` per image).

    Returns (of a call):
        ``{"input_ids": [...], "palette": [...]}``: numpy arrays, uint8 for K <= 256, uint16
        beyond; the other columns are kept by ``map``.

    Example:
        >>> import numpy as np
        >>> tok = PaletteTokenizer(palette=[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
        >>> img = np.zeros((2, 2, 3), dtype=np.uint8); img[0] = 250
        >>> out = tok({"image": [img]}, rank=0)
        >>> out["input_ids"][0], out["palette"][0].tolist()
        (array([1, 1, 0, 0], dtype=uint8), [[0, 0, 0], [255, 255, 255]])
    """

    def __init__(self, palette: Any = None, *, colors: int = 16, image_column: str = "image",
                 space: str = "lab", dither: str = "none", seed: int = 0,
                 device: str | torch.device | None = None, flatten: bool = True,
                 return_palette: bool = True):
        self.palette = as_palette(palette)
        self.colors, self.image_column = colors, image_column
        self.space, self.dither, self.seed, self.device = space, dither, seed, device
        self.flatten, self.return_palette = flatten, return_palette

    def _device(self, rank: int | None) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        if torch.cuda.is_available():
            return torch.device("cuda", (rank or 0) % torch.cuda.device_count())
        return torch.device("cpu")

    def __call__(self, batch: dict[str, list[Any]], rank: int | None = None) -> dict[str, list]:
        if self.image_column not in batch:
            raise KeyError(f"image_column: expected one of {sorted(batch)}, got "
                           f"{self.image_column!r}")
        images = [to_uint8_chw(im) for im in batch[self.image_column]]
        results = quantize_images(images, colors=self.colors, palette=self.palette,
                                  space=self.space, dither=self.dither, seed=self.seed,
                                  device=self._device(rank))
        ids = [a.reshape(-1) if self.flatten else a for a, _ in results]
        out: dict[str, list] = {"input_ids": [a.numpy() for a in ids]}
        if self.return_palette:
            out["palette"] = [palette_u8(p) for _, p in results]
        return out
