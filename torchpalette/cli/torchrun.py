"""torch.distributed glue for ``torchpalette quantize`` under ``torchrun``.

torchrun starts one process per GPU (or CPU slot) and tells each its place through the
environment: ``RANK`` (0..WORLD_SIZE-1 over all nodes), ``WORLD_SIZE``, ``LOCAL_RANK`` (the
GPU on its node), ``MASTER_ADDR``/``MASTER_PORT``. :func:`session` reads them, initialises the
default process group (``nccl`` for a CUDA device, ``gloo`` for the CPU) on the ``LOCAL_RANK``
GPU, and tears it down afterwards. Without these variables (and without a process group the
caller initialised) it does nothing at all: a plain run stays a plain run.

Collectives must be entered the same number of times, in the same order, on every rank, even
though shards differ in length and a resumed run leaves each rank a different number of files
to do. :class:`Ranks` therefore agrees up front on the largest batch count and pads: a rank
that finishes early keeps answering the periodic progress all-reduce with its final count.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from .errors import UsageError
from .pipeline import Progress, QuantizeStats
from .plan import Job


def env_ranks(environ: Any = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment, or ``None`` outside it.

    Raises:
        ValueError: the variables are there but not integers, or inconsistent.

    Example:
        >>> env_ranks({})
        >>> env_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
        (3, 4, 1)
    """
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
    except ValueError:
        raise ValueError(
            f"RANK, WORLD_SIZE, LOCAL_RANK: expected integers, got {env.get('RANK')!r}, "
            f"{env.get('WORLD_SIZE')!r}, {env.get('LOCAL_RANK')!r}"
        ) from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"RANK, WORLD_SIZE, LOCAL_RANK: expected 0 <= RANK < WORLD_SIZE and "
                         f"LOCAL_RANK >= 0, got {rank}, {world}, {local}")
    return rank, world, local


@dataclass(frozen=True)
class Ranks:
    """This process's place in an initialised process group, and the collectives it runs."""

    rank: int
    world_size: int
    local_rank: int
    group: Any = None

    def _comm_device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def check_same(self, jobs: Sequence[Job]) -> None:
        """Raise :class:`UsageError` on every rank unless all ranks planned the same jobs
        (SRC must look the same from every node, or shards would overlap or miss files)."""
        import torch.distributed as dist

        digest = hashlib.sha256("\n".join(f"{j.rel}\t{j.dst}" for j in jobs).encode()).hexdigest()
        seen: list[Any] = [None] * self.world_size
        dist.all_gather_object(seen, (len(jobs), digest), group=self.group)
        if len(set(seen)) > 1:
            counts = ", ".join(f"rank {r}: {n}" for r, (n, _) in enumerate(seen))
            raise UsageError(f"SRC: expected the same files on every rank, got different "
                             f"lists ({counts} files)")

    def barrier(self) -> None:
        """Wait for every rank (a collective on the group's backend, CPU objects for gloo)."""
        import torch.distributed as dist

        seen: list[Any] = [None] * self.world_size
        dist.all_gather_object(seen, self.rank, group=self.group)

    def gather_stats(self, stats: QuantizeStats) -> QuantizeStats:
        """Every rank's stats merged, on every rank (failures tagged with their rank)."""
        import torch.distributed as dist

        mine = replace(stats, failures=[(rel, f"{why} (rank {self.rank})")
                                        for rel, why in stats.failures])
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, mine, group=self.group)
        merged = QuantizeStats()
        for part in parts:
            merged = merged.merge(part)
        return merged

    def progress(self, total: int, batches: int, show: bool) -> _GlobalProgress:
        """A progress object for :func:`torchpalette.cli.pipeline.run_jobs` whose bar (shown on
        rank 0 only) counts the images of all ranks."""
        return _GlobalProgress(self, total, batches, show and self.rank == 0)


class _GlobalProgress(Progress):
    """Progress over all ranks: after every decoded batch an asynchronous all-reduce of this
    rank's finished-image count; at most ``window`` are in flight, so a rank runs up to
    ``window`` batches ahead of the slowest before it waits. Every rank issues exactly
    ``max(batches over ranks) + 1`` of them: a rank that runs out of batches pads at
    :meth:`finish`, whose last one carries every rank's final count."""

    def __init__(self, ranks: Ranks, total: int, batches: int, show: bool, window: int = 8):
        import torch.distributed as dist

        self.dist, self.ranks, self.window = dist, ranks, window
        self.device = ranks._comm_device()
        mine = torch.tensor([total, batches], dtype=torch.int64, device=self.device)
        every = [torch.empty_like(mine) for _ in range(ranks.world_size)]
        dist.all_gather(every, mine, group=ranks.group)
        every_t = torch.stack(every).cpu()
        self.syncs = int(every_t[:, 1].max())
        self.issued, self.count, self.shown = 0, 0, 0
        self.pending: deque = deque()
        super().__init__(int(every_t[:, 0].sum()), show)

    def add(self, n: int) -> None:
        self.count += n

    def _issue(self) -> None:
        t = torch.tensor([self.count], dtype=torch.int64, device=self.device)
        work = self.dist.all_reduce(t, group=self.ranks.group, async_op=True)
        self.pending.append((work, t))
        self.issued += 1

    def _collect(self, limit: int) -> None:
        while len(self.pending) > limit:
            work, t = self.pending.popleft()
            work.wait()
            done = int(t[0])
            if done > self.shown:
                self.bar.update(done - self.shown)
                self.shown = done

    def batch_done(self) -> None:
        if self.issued < self.syncs:
            self._issue()
        self._collect(self.window)

    def finish(self) -> None:
        while self.issued <= self.syncs:
            self._issue()
            self._collect(self.window)
        self._collect(0)


@contextmanager
def session(device: torch.device) -> Iterator[tuple[Ranks | None, torch.device]]:
    """``(ranks, device)`` for this process: ``(None, device)`` outside torchrun; under it the
    default process group is initialised (and destroyed on exit) and a CUDA device without an
    index becomes ``cuda:LOCAL_RANK``. A process group the caller initialised is used as is.

    Raises:
        UsageError: ``LOCAL_RANK`` names a GPU this node does not have.
    """
    env = env_ranks()
    loaded = sys.modules.get("torch.distributed")  # initialised by the caller, if imported
    ready = loaded is not None and loaded.is_available() and loaded.is_initialized()
    if env is None and not ready:
        yield None, device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        # torchrun's LOCAL_RANK, or the GPU a caller who initialised the group picked
        local = env[2] if env is not None else torch.cuda.current_device()
        if device.index is None:
            if local >= torch.cuda.device_count():
                raise UsageError(f"LOCAL_RANK: expected a GPU index below "
                                 f"{torch.cuda.device_count()}, got {local}")
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        local = env[2] if env is not None else 0
    owned = not ready
    if owned:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield Ranks(dist.get_rank(), dist.get_world_size(), local), device
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
