"""Palette tokens on Ray Data: :class:`RayQuantizer`, a callable class for
``ds.map_batches(RayQuantizer, fn_constructor_kwargs=..., concurrency=N, num_gpus=...)`` (built
once per actor, as Ray's batch-inference pattern), and :func:`fit_palette_ray`, the two-pass
dataset palette: colour statistics per batch on the workers, summed and clustered on the
driver (:func:`torchpalette.fit.color_stats`, :func:`torchpalette.fit.palette_from_stats`), so
the palette equals :func:`torchpalette.fit_palette` over the same images, whatever the blocks.

Batches are ``batch_format="numpy"`` dicts; the image column holds ``[B, H, W, 3|4]`` uint8
(``ray.data.read_images``) or an object array of ``[H, W, 3|4]`` images of any sizes.
``ray`` is imported only by :func:`quantize_ray` (``pip install 'torchpalette[ray]'``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._palette_core import DEFAULT_BITS
from ..fit import color_stats, palette_from_stats
from ._common import as_palette, palette_u8, quantize_images, require, to_uint8_chw

__all__ = ["RayQuantizer", "fit_palette_ray", "quantize_ray"]


def _images(batch: dict[str, Any], column: str) -> list[torch.Tensor]:
    if column not in batch:
        raise KeyError(f"image_column: expected one of {sorted(batch)}, got {column!r}")
    return [to_uint8_chw(im) for im in batch[column]]


class RayQuantizer:
    """``batch -> batch + {"indices", "palette"}`` for ``Dataset.map_batches``.

    Args:
        palette: one dataset palette ``[K, 3]`` (float in [0, 1] or uint8), or ``None`` for
            each image's own ``colors``-colour palette.
        colors, space, dither, seed: as ``torchpalette quantize``.
        image_column: the column of images.
        device: ``None``: CUDA when this actor has a GPU (``num_gpus``), else the CPU.

    Returns (of a call):
        The batch with ``indices`` (``[B, H, W]`` uint8 for K <= 256, uint16 beyond; an object
        array when sizes differ) and ``palette`` (``[B, K, 3]`` uint8).

    Example:
        >>> import numpy as np
        >>> q = RayQuantizer(palette=np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8))
        >>> out = q({"image": np.full((2, 1, 3, 3), 200, dtype=np.uint8)})
        >>> out["indices"].shape, out["indices"].dtype, out["palette"].shape
        ((2, 1, 3), dtype('uint8'), (2, 2, 3))
    """

    def __init__(self, palette: Any = None, *, colors: int = 16, image_column: str = "image",
                 space: str = "lab", dither: str = "none", seed: int = 0,
                 device: str | torch.device | None = None):
        self.palette = as_palette(palette)
        self.colors, self.image_column = colors, image_column
        self.space, self.dither, self.seed = space, dither, seed
        self.device = torch.device(device if device is not None
                                   else "cuda" if torch.cuda.is_available() else "cpu")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        results = quantize_images(_images(batch, self.image_column), colors=self.colors,
                                  palette=self.palette, space=self.space, dither=self.dither,
                                  seed=self.seed, device=self.device)
        idx = [a.numpy() for a, _ in results]
        out = dict(batch)
        if len({a.shape for a in idx}) <= 1:
            out["indices"] = np.stack(idx) if idx else np.zeros((0, 0, 0), np.uint8)
        else:
            out["indices"] = np.empty(len(idx), dtype=object)
            out["indices"][:] = idx
        out["palette"] = np.stack([palette_u8(p) for _, p in results]) if results else \
            np.zeros((0, 0, 3), np.uint8)
        return out


class _Stats:
    """Per batch: the occupied colour bins and their statistics (sparse, so a batch sends
    its few thousand bins, not the whole table)."""

    def __init__(self, image_column: str, bits: int, max_pixels: int | None):
        self.image_column, self.bits, self.max_pixels = image_column, bits, max_pixels

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        stats = sum(color_stats(im, bits=self.bits, max_pixels=self.max_pixels)
                    for im in _images(batch, self.image_column))
        if not isinstance(stats, torch.Tensor):  # an empty batch
            return {"bin": np.zeros(0, np.int64), "stats": np.zeros((0, 7), np.int64)}
        occupied = stats[:, 0].nonzero().squeeze(1)
        return {"bin": occupied.numpy(), "stats": stats[occupied].numpy()}


def fit_palette_ray(ds: Any, colors: int, *, image_column: str = "image", space: str = "lab",
                    seed: int = 0, bits: int = DEFAULT_BITS, max_pixels: int | None = None,
                    **map_kw: Any) -> torch.Tensor:
    """Pass 1 of a dataset palette on Ray: statistics on the workers, the fit on the driver.

    Args:
        ds: a ``ray.data.Dataset`` with an image column.
        colors, space, seed, bits, max_pixels: as :func:`torchpalette.fit_palette`.
        map_kw: passed to ``map_batches`` (``batch_size``, ``concurrency``...).

    Returns:
        ``[colors, 3]`` float32 sRGB palette, most used colour first; the palette that
        :func:`torchpalette.fit_palette` gives for the same images.
    """
    part = ds.map_batches(_Stats(image_column, bits, max_pixels), batch_format="numpy",
                          **map_kw)
    total = torch.zeros(1 << 3 * bits, 7, dtype=torch.int64)
    for b in part.iter_batches(batch_format="numpy", batch_size=None):
        # Ray hands read-only arrays: copied, as torch cannot wrap them
        total.index_add_(0, torch.tensor(b["bin"]).long(), torch.tensor(b["stats"]))
    return palette_from_stats(total, colors, space=space, seed=seed)


def quantize_ray(ds: Any, *, colors: int = 16, palette: Any = None, fit: bool = False,
                 image_column: str = "image", space: str = "lab", dither: str = "none",
                 seed: int = 0, concurrency: int = 1, num_gpus: float = 0,
                 batch_size: int | None = 32) -> tuple[Any, torch.Tensor | None]:
    """Tokens of a Ray dataset: with ``fit``, pass 1 fits one ``colors``-colour palette
    (:func:`fit_palette_ray`); pass 2 maps :class:`RayQuantizer` over ``concurrency`` actors.

    Returns:
        ``(dataset with "indices" and "palette" columns (lazy), the dataset palette or None)``.
    """
    require("ray", "ray")
    if fit:
        palette = fit_palette_ray(ds, colors, image_column=image_column, space=space, seed=seed)
    pal = as_palette(palette)
    kwargs = {"palette": None if pal is None else pal.numpy(), "colors": colors,
              "image_column": image_column, "space": space, "dither": dither, "seed": seed}
    out = ds.map_batches(RayQuantizer, fn_constructor_kwargs=kwargs, batch_format="numpy",
                         concurrency=concurrency, num_gpus=num_gpus, batch_size=batch_size)
    return out, pal
