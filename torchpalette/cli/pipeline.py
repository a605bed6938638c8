"""Decode -> quantize -> write, overlapped, with every file failing alone and memory bounded.

* decode: :class:`~torchpalette.cli.decode.Decoder` worker processes (``--workers``) read
  files ahead of the device, holding at most ``--queue-mib`` of decoded images, and sort each
  image into a kind: ``rgb``, ``clear`` (fully transparent: one transparent entry, without the
  library) or ``rgba`` (some transparency: quantized with alpha entries);
* quantize (this thread): ``rgb`` images of one shape moved to the device together, each
  quantized by its own library call (so no output depends on ``--batch-size``), each failing
  alone; ``rgba`` images one by one;
* write: a thread pool over all cores (zlib and torch release the GIL) hands each result to
  the :class:`~torchpalette.cli.sink.Sink` (indexed PNGs, written atomically); each output the
  sink reports durable is passed to ``on_written`` (the provenance record).

The time split: decode and encode seconds are summed over workers/threads (so they can exceed
the wall time), quantize is this thread's busy time, idle is this thread waiting for decoded
batches or for the writers to catch up.
"""

from __future__ import annotations

import math
import os
import sys
import threading
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

from .decode import DEFAULT_QUEUE_MIB, Decoded, Decoder, Member, gpu_decode_jpegs
from .errors import one_line
from .plan import Job
from .quantizers import Quantizer, transparent
from .sink import Output, Sink, Written


@dataclass
class QuantizeStats:
    """Counts, failures, notes and the time split of one :func:`run_jobs`."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    decode_s: float = 0.0
    quantize_s: float = 0.0
    encode_s: float = 0.0
    idle_s: float = 0.0
    wall_s: float = 0.0
    redone: int = 0
    notes: list[tuple[str, str]] = field(default_factory=list)
    queue_peak: int = 0  # bytes reserved for decoded images at most

    def merge(self, other: QuantizeStats) -> QuantizeStats:
        """Combine the stats of two ranks (wall time and queue peak: the larger one)."""
        return QuantizeStats(
            self.total + other.total, self.done + other.done, self.skipped + other.skipped,
            sorted(self.failures + other.failures), self.decode_s + other.decode_s,
            self.quantize_s + other.quantize_s, self.encode_s + other.encode_s,
            self.idle_s + other.idle_s, max(self.wall_s, other.wall_s),
            self.redone + other.redone, sorted(self.notes + other.notes),
            max(self.queue_peak, other.queue_peak))


class Progress:
    """This process's progress bar (images/s): ``add`` per finished image, ``batch_done`` per
    decoded batch (a no-op here; the distributed twin all-reduces counts), ``finish``."""

    def __init__(self, total: int, show: bool):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="img", disable=not show, file=sys.stderr,
                        dynamic_ncols=True, smoothing=0.1)

    def add(self, n: int) -> None:
        self.bar.update(n)

    def batch_done(self) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        self.bar.close()


def _narrow(indices: Tensor, palette: Tensor) -> Tensor:
    """Indices as uint8 for palettes of at most 256 entries, else int32 (tokens take up to
    65,536 colours)."""
    return indices.to(torch.uint8 if palette.shape[-2] <= 256 else torch.int32)


class _Runner:
    """The quantize thread's state: stats, the progress bar and the writes in flight."""

    def __init__(self, jobs: Sequence[Job], quantizer: Quantizer, device, bar, sink: Sink,
                 on_written: Callable[[Job, Written], None] | None, threads: int,
                 sources: Sequence[Path | str | Member]):
        self.jobs, self.q, self.device, self.bar, self.sink = jobs, quantizer, device, bar, sink
        self.sources = sources
        self.on_written = on_written
        self.by_key = {j.key: j for j in jobs}
        self.stats = QuantizeStats(total=len(jobs))
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.inflight: deque = deque()
        self.lock = threading.Lock()  # stats, progress and the record, from writer threads

    def fail(self, i: int, reason: str) -> None:
        with self.lock:
            self.stats.failures.append((self.jobs[i].rel, reason))
            self.bar.add(1)
            self._written(self.sink.failed(self.jobs[i].key))  # may complete a shard

    def submit(self, i: int, indices: Tensor, palette: Tensor) -> None:
        out = Output(self.jobs[i].key, indices, palette)
        self.inflight.append((i, self.pool.submit(self._write, out)))

    def _write(self, out: Output) -> None:
        """In a writer thread: the sink writes, then each durable output is recorded at once
        (so a crash leaves at most the outputs being written unrecorded: they are redone)."""
        self.written(self.sink.write(out))

    def written(self, done: list[Written]) -> None:
        with self.lock:
            self._written(done)

    def _written(self, done: list[Written]) -> None:
        for w in done:
            self.stats.encode_s += w.seconds
            self.stats.done += 1
            self.bar.add(1)
            if self.on_written is not None:
                self.on_written(self.by_key[w.key], w)

    def settle(self, limit: int) -> None:
        """Collect finished writes until at most ``limit`` are in flight (back-pressure)."""
        t0 = time.perf_counter()
        while len(self.inflight) > limit:
            i, fut = self.inflight.popleft()
            try:
                fut.result()
            except Exception as exc:
                self.fail(i, one_line(exc))
        self.stats.idle_s += time.perf_counter() - t0

    def rgb(self, members: list[tuple[int, Tensor]]) -> None:
        """Quantize equal-shaped RGB images, moved to the device together, each by its own
        library call: the library's float reductions differ in the last bit between batch
        sizes (a near tie then flips a pixel), and an output must not depend on its batch
        (measured: no slower on the CPU, see benchmarks/RESULTS.md). A failure fails its
        image only."""
        try:
            x = torch.stack([img for _, img in members]).to(self.device, non_blocking=True)
        except Exception as exc:  # e.g. out of device memory: each image alone
            if len(members) > 1:
                for m in members:
                    self.rgb([m])
            else:
                self.fail(members[0][0], one_line(exc))
            return
        for j, (i, _) in enumerate(members):
            try:
                idx, pal = self.q.rgb_batch(x[j:j + 1].clone())  # aligned like a lone image
                idx, pal = _narrow(idx[0], pal[0]).cpu(), pal[0].float().cpu()
            except Exception as exc:
                self.fail(i, one_line(exc))
                continue
            self.submit(i, idx, pal)

    def rgba(self, i: int, image: Tensor) -> None:
        try:
            idx, pal = self.q.rgba_one(image.to(self.device))
        except Exception as exc:
            self.fail(i, one_line(exc))
            return
        self.submit(i, _narrow(idx, pal).cpu(), pal.float().cpu())

    def batch(self, items: list[Decoded]) -> None:
        groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = defaultdict(list)
        jpegs = [d for d in items if d.kind == "jpeg"]
        if jpegs:
            items = [d for d in items if d.kind != "jpeg"]
            items += gpu_decode_jpegs(jpegs, self.sources, self.device)
        t0 = time.perf_counter()
        for d in items:
            self.stats.decode_s += d.seconds
            self.stats.notes += [(self.jobs[d.i].rel, n) for n in d.notes]
            if d.error is not None or d.image is None:
                self.fail(d.i, d.error or "not decoded")
            elif d.kind == "clear":
                self.submit(d.i, *transparent(*d.image.shape[-2:]))
            elif d.kind == "rgba":
                self.rgba(d.i, d.image)
            else:
                groups[tuple(d.image.shape)].append((d.i, d.image))
        for members in groups.values():
            self.rgb(members)
        self.stats.quantize_s += time.perf_counter() - t0


def run_jobs(jobs: Sequence[Job], quantizer: Quantizer, *, device: torch.device, sink: Sink,
             batch_size: int = 32, workers: int = 0, queue_bytes: int = DEFAULT_QUEUE_MIB << 20,
             progress: bool = True, ranks: Any = None, threads: int | None = None,
             gpu_jpeg: bool = True, max_pixels: int | None = io.MAX_PIXELS,
             on_written: Callable[[Job, Written], None] | None = None,
             sources: Sequence[Path | str | Member] | None = None) -> QuantizeStats:
    """Decode, quantize and write ``jobs``; each file that fails is listed with its reason in
    the returned stats and every other file is written.

    ``ranks`` (a :class:`torchpalette.cli.torchrun.Ranks`, under torchrun) makes the progress
    bar show the images of all ranks; every rank must then call this, whatever its number of
    jobs. ``queue_bytes``: decoded images waiting, at most (see
    :mod:`~torchpalette.cli.decode`). ``threads``: writer threads (default: all cores).
    ``sources``: what to decode for each job (default: each job's ``src`` file; a
    :class:`~torchpalette.cli.decode.Member` for an image inside a tar or a table).
    ``gpu_jpeg``: on a CUDA device, decode JPEGs there (batched) instead of in the workers.
    """
    start = time.perf_counter()
    sources = [j.src for j in jobs] if sources is None else sources
    decoder = Decoder(sources, workers=workers, batch_size=batch_size,
                      budget=queue_bytes, raw_jpeg=gpu_jpeg and device.type == "cuda",
                      max_pixels=max_pixels)
    batches_hint = math.ceil(len(jobs) / batch_size)  # a bound for the ranks' progress syncs
    bar = (Progress(len(jobs), progress) if ranks is None
           else ranks.progress(len(jobs), batches_hint, progress))
    run = _Runner(jobs, quantizer, device, bar, sink, on_written, threads or os.cpu_count() or 2,
                  sources)
    try:
        batches = iter(decoder)
        while True:
            t0 = time.perf_counter()
            items = next(batches, None)
            if items is None:
                break
            waited = time.perf_counter() - t0
            if workers == 0:  # this thread decoded the batch itself: that is not idle time
                waited -= sum(d.seconds for d in items)
            run.stats.idle_s += max(waited, 0.0)
            run.batch(items)
            decoder.release(items)
            run.settle(2 * batch_size)
            run.written(sink.flush())
            bar.batch_done()
        run.settle(0)
        run.written(sink.close())
        bar.finish()
    finally:
        run.pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    run.stats.failures.sort()
    run.stats.queue_peak = decoder.peak
    run.stats.wall_s = time.perf_counter() - start
    return run.stats
