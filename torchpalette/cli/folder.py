"""Resumable quantization of a folder tree of images, on one process or many (torchrun).

The pieces behind ``torchpalette quantize``, which a multi-process run reuses unchanged:
:mod:`~torchpalette.cli.plan` decides the jobs before any decoding (unique output names, folders
that cannot be read, finished and broken outputs, the DST lock), :mod:`~torchpalette.cli.pipeline`
runs them (decode, quantize and encode overlapped, each file failing alone), and
:mod:`~torchpalette.cli.quantizers` turns images into palette indices, alpha included. This
module re-exports them and fits the one palette of ``--fit-palette``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .errors import UsageError
from .pipeline import Progress, QuantizeStats, decode_loader, encode_and_write, run_jobs
from .plan import DstLock, Job, Plan, output_names, pending_jobs, plan_jobs, shard, walk_images
from .quantizers import Quantizer

__all__ = ["Job", "Plan", "QuantizeStats", "Quantizer", "Progress", "UsageError", "DstLock",
           "plan_jobs", "output_names", "walk_images", "shard", "pending_jobs", "run_jobs",
           "encode_and_write", "fit_palette", "list_images"]


def list_images(root: Path) -> list[str]:
    """Image files under ``root`` (recursive, hidden ones skipped, directory symlinks followed
    once) as sorted POSIX relative paths."""
    return [j.rel for j in walk_images(root).jobs]


def fit_palette(paths: Sequence[Path], *, colors: int, space: str, seed: int,
                device: torch.device, batch_size: int = 32, workers: int = 0) -> Tensor | None:
    """One palette ``[K, 3]`` for all ``paths`` via ``tp.nn.PaletteQuantizer.fit`` (which
    all-reduces its statistics across ranks under torch.distributed), K <= ``colors``.

    Unreadable files are skipped here and reported by the quantize pass. Fewer distinct colours
    than ``colors`` warns and fits that many instead; no pixel at all (no readable image, or only
    fully transparent ones) returns ``None``.
    """
    from torchpalette import nn as tpnn

    def images():
        for items in decode_loader(paths, batch_size, workers):
            yield from (img for _, _, img, err, _ in items if err is None)

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
