"""Resumable quantization of a folder tree of images, on one process or many (torchrun).

The pipeline behind ``torchpalette quantize``, in pieces that a multi-process run reuses
unchanged:

* :func:`plan_jobs` lists the sorted ``(source, output)`` pairs of SRC mirrored under DST;
* :func:`shard` takes a deterministic, disjoint slice for a ``(rank, world_size)`` pair (every
  ``world_size``-th job, so shards cover every job exactly once and differ by at most one);
* :func:`pending_jobs` drops finished outputs (and stale temp files of a killed run);
* :func:`run_jobs` decodes in DataLoader workers, quantizes equal-shaped images as one batch on
  the device, and writes each output atomically (temp file + ``os.replace``) from a thread pool,
  so an interrupted run never leaves a partial output and a re-run finishes only what is
  missing; it returns :class:`QuantizeStats`, which ranks :meth:`~QuantizeStats.merge`.

Under torchrun, :mod:`torchpalette.cli.torchrun` supplies the rank, a progress object whose counts are
all-reduced periodically, and the final gather of every rank's stats.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torchpalette import io

from .errors import UsageError, one_line

__all__ = ["Job", "QuantizeStats", "UsageError", "plan_jobs", "shard", "pending_jobs",
           "run_jobs", "write_atomic", "fit_palette"]


@dataclass(frozen=True)
class Job:
    """One image to quantize: ``src`` under SRC, ``dst`` its PNG under DST, ``rel`` for messages."""

    src: Path
    dst: Path
    rel: str


@dataclass
class QuantizeStats:
    """Counts, failures and the time split of one :func:`run_jobs` (decode and encode seconds
    are summed over workers/threads, so they can exceed the wall time)."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    decode_s: float = 0.0
    quantize_s: float = 0.0
    encode_s: float = 0.0
    wall_s: float = 0.0

    def merge(self, other: QuantizeStats) -> QuantizeStats:
        """Combine the stats of two ranks (wall time: the slower one)."""
        return QuantizeStats(
            self.total + other.total, self.done + other.done, self.skipped + other.skipped,
            sorted(self.failures + other.failures), self.decode_s + other.decode_s,
            self.quantize_s + other.quantize_s, self.encode_s + other.encode_s,
            max(self.wall_s, other.wall_s))


# ----------------------------------------------------------------------------- planning
def list_images(root: Path) -> list[str]:
    """Image files under ``root`` (recursive, by suffix, hidden ones skipped, as
    :func:`torchpalette.io.iter_image_files`), as sorted POSIX relative paths."""
    return [p.relative_to(root).as_posix() for p in io.iter_image_files(root)]


def plan_jobs(src: Path, dst: Path) -> list[Job]:
    """Every image under ``src`` paired with its ``.png`` output mirrored under ``dst``.

    ``a.jpg`` becomes ``a.png``; where two sources would share an output (``a.jpg`` and
    ``a.png``), the non-PNG ones keep their suffix (``a.jpg.png``).

    Raises:
        UsageError: SRC is not a folder, DST is inside SRC (or the same), or an output would land
            inside SRC.
    """
    if not src.is_dir():
        raise UsageError(f"SRC: expected an existing folder, got {str(src)!r}")
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise UsageError(f"DST: expected a folder outside SRC, got {str(dst)!r} inside {str(src)!r}")
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"DST: expected a folder, got the file {str(dst)!r}")
    rels = list_images(src)
    outs = [str(Path(r).with_suffix(".png").as_posix()) for r in rels]
    count: dict[str, int] = defaultdict(int)
    for o in outs:
        count[o] += 1
    jobs = []
    for rel, out in zip(rels, outs):
        if count[out] > 1 and Path(rel).suffix.lower() != ".png":
            out = rel + ".png"
        target = d / out
        if s in target.parents:
            raise UsageError(f"DST: output {target} would be written inside SRC {str(src)!r}")
        jobs.append(Job(src / rel, target, rel))
    return jobs


def shard(jobs: Sequence[Job], rank: int, world_size: int) -> list[Job]:
    """Rank ``rank``'s share of the sorted job list: every ``world_size``-th job, so the shards
    are disjoint, cover every job exactly once, and differ in size by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank: expected an int in [0, {world_size - 1}], got {rank}")
    return list(jobs[rank::world_size])


def _temp_path(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}.{os.getpid()}.tmp.png")


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def pending_jobs(jobs: Sequence[Job], overwrite: bool) -> list[Job]:
    """Jobs whose output is missing (all with ``overwrite``); stale temp files of an earlier,
    killed run for these outputs are removed."""
    todo = []
    for job in jobs:
        if job.dst.parent.is_dir():
            for stale in job.dst.parent.glob(f".{glob_escape(job.dst.name)}.*.tmp.png"):
                stale.unlink(missing_ok=True)
        if overwrite or not job.dst.exists():
            todo.append(job)
    return todo


# ----------------------------------------------------------------------------- running
class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes one file per item in a DataLoader worker; errors become a reason string."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = [str(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        t0 = time.perf_counter()
        try:
            image, error = io.read_image(self.paths[i]), None
        except Exception as exc:  # an unreadable file is reported, never fatal
            image, error = None, one_line(exc)
        return i, image, error, time.perf_counter() - t0


def _as_list(items):
    return items


def _loader(paths: Sequence[Path], batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(_DecodeDataset(paths), batch_size=batch_size,
                                       num_workers=workers, collate_fn=_as_list)


def write_atomic(image: Tensor, dst: Path, palette: Tensor | None) -> float:
    """Write ``image`` to ``dst`` through a temp file + ``os.replace``; return the seconds."""
    t0 = time.perf_counter()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_path(dst)
    try:
        io.write_image(image, tmp, palette=palette)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return time.perf_counter() - t0


class Progress:
    """This process's progress bar: ``add`` per finished image, ``batch_done`` per decoded
    batch (a no-op here; the distributed twin all-reduces counts there), ``finish`` at the end."""

    def __init__(self, total: int, show: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="img", disable=not show, file=sys.stderr,
                        dynamic_ncols=True)

    def add(self, n: int) -> None:
        self.bar.update(n)

    def batch_done(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        self.bar.close()


def run_jobs(
    jobs: Sequence[Job],
    quantize_fn: Callable[[Tensor], tuple[Tensor, Tensor]],
    *,
    device: torch.device,
    batch_size: int = 32,
    workers: int = 0,
    progress: bool = True,
    ranks: Any = None,
) -> QuantizeStats:
    """Decode ``jobs`` in DataLoader workers, quantize equal-shaped images as one batch on
    ``device`` with ``quantize_fn(uint8 [B, C, H, W]) -> (image [B, C, H, W], palettes
    [B, K, 3])``, and write each output atomically from a thread pool.

    ``ranks`` (a :class:`torchpalette.cli.torchrun.Ranks`, under torchrun) makes the progress bar show
    the images of all ranks; every rank must then call this, whatever its number of jobs.
    """
    stats = QuantizeStats(total=len(jobs))
    start = time.perf_counter()
    loader = _loader([j.src for j in jobs], batch_size, workers)
    bar = (Progress(len(jobs), progress) if ranks is None
           else ranks.progress(len(jobs), len(loader), progress))
    inflight: deque = deque()

    def settle(limit: int) -> None:
        while len(inflight) > limit:
            i, fut = inflight.popleft()
            try:
                stats.encode_s += fut.result()
                stats.done += 1
            except Exception as exc:
                stats.failures.append((jobs[i].rel, one_line(exc)))
            bar.add(1)

    pool = ThreadPoolExecutor(max_workers=max(2, min(8, os.cpu_count() or 2)))
    try:
        for items in loader:
            groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = defaultdict(list)
            for i, image, error, seconds in items:
                stats.decode_s += seconds
                if error is not None:
                    stats.failures.append((jobs[i].rel, error))
                    bar.add(1)
                else:
                    groups[tuple(image.shape)].append((i, image))
            for members in groups.values():
                t0 = time.perf_counter()
                try:
                    x = torch.stack([img for _, img in members]).to(device, non_blocking=True)
                    out, pals = quantize_fn(x)
                    out, pals = out.cpu(), pals.cpu()
                except Exception as exc:
                    stats.failures += [(jobs[i].rel, one_line(exc)) for i, _ in members]
                    bar.add(len(members))
                    continue
                stats.quantize_s += time.perf_counter() - t0
                for j, (i, _) in enumerate(members):
                    inflight.append((i, pool.submit(write_atomic, out[j], jobs[i].dst, pals[j])))
            settle(2 * batch_size)
            bar.batch_done()
        settle(0)
        bar.finish()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    stats.failures.sort()
    stats.wall_s = time.perf_counter() - start
    return stats


# ----------------------------------------------------------------------------- palettes
def fit_palette(paths: Sequence[Path], *, colors: int, space: str, seed: int,
                device: torch.device, batch_size: int = 32, workers: int = 0) -> Tensor:
    """One palette ``[colors, 3]`` for all ``paths`` (decoded in DataLoader workers; unreadable
    ones skipped here and reported by the quantize pass) via ``tp.nn.PaletteQuantizer.fit``,
    which all-reduces its statistics across ranks when torch.distributed is initialised, so
    every rank gets the palette of all ranks' images."""
    from torchpalette import nn as tpnn

    loader = _loader(paths, batch_size, workers)
    images = (img for items in loader for _, img, err, _ in items if err is None)
    q = tpnn.PaletteQuantizer.fit(images, colors=colors, space=space, seed=seed, device=device)
    return q.palette.detach().float()
