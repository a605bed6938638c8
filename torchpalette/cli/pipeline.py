"""Decode -> quantize -> encode, overlapped, with every file failing alone.

* decode: DataLoader worker processes (``--workers``) read files ahead of the device and sort
  each image into a kind: ``rgb`` (RGB, or RGBA that is fully opaque: alpha dropped), ``clear``
  (fully transparent: written as a one-entry transparent palette without the library) or
  ``rgba`` (some transparency: quantized with alpha entries);
* quantize (this thread): ``rgb`` images of one shape as one batch on the device; if a batch
  fails, each member is retried alone so only the culprit fails; ``rgba`` images one by one;
* encode: a thread pool over all cores (zlib and torch release the GIL) drops unused palette
  entries, encodes an indexed PNG at the smallest bit depth and writes it atomically (temp
  file + ``os.replace``), so an interrupted run never leaves a partial output.

The time split: decode and encode seconds are summed over workers/threads (so they can exceed
the wall time), quantize is this thread's busy time, idle is this thread waiting for decoded
batches or for the encoders to catch up.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from torchpalette import io

from .errors import one_line
from .plan import Job, temp_path
from .quantizers import Quantizer, transparent


@dataclass
class QuantizeStats:
    """Counts, failures and the time split of one :func:`run_jobs`."""

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

    def merge(self, other: QuantizeStats) -> QuantizeStats:
        """Combine the stats of two ranks (wall time: the slower one)."""
        return QuantizeStats(
            self.total + other.total, self.done + other.done, self.skipped + other.skipped,
            sorted(self.failures + other.failures), self.decode_s + other.decode_s,
            self.quantize_s + other.quantize_s, self.encode_s + other.encode_s,
            self.idle_s + other.idle_s, max(self.wall_s, other.wall_s),
            self.redone + other.redone)


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes one file per item in a DataLoader worker: ``(i, kind, image, error, seconds)``;
    any error becomes a reason string, never an exception."""

    def __init__(self, paths: Sequence[Path], raw_jpeg: bool = False):
        self.paths = [str(p) for p in paths]
        self.raw_jpeg = raw_jpeg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        t0 = time.perf_counter()
        kind, image, error = "", None, None
        path = self.paths[i]
        try:
            if self.raw_jpeg and path.lower().endswith((".jpg", ".jpeg")):
                data = Path(path).read_bytes()  # decoded on the GPU, in batches
                return i, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8), None, \
                    time.perf_counter() - t0
            kind, image = classify(io.read_image(path))
        except Exception as exc:  # an unreadable file is reported, never fatal
            error = one_line(exc)
        return i, kind, image, error, time.perf_counter() - t0


def classify(image: Tensor) -> tuple[str, Tensor]:
    """``("rgb", [3, H, W])`` for RGB and fully opaque RGBA (alpha dropped), ``("clear", ...)``
    for fully transparent, ``("rgba", [4, H, W])`` for images with some transparency."""
    if image.shape[0] != 4:
        return "rgb", image
    lo, hi = int(image[3].min()), int(image[3].max())
    if lo == 255:
        return "rgb", image[:3].contiguous()
    return ("clear" if hi == 0 else "rgba"), image


def gpu_decode_jpegs(items: list, paths: Sequence[Path], device: torch.device) -> list:
    """Decode the raw JPEG items ``(i, "jpeg", data, None, s)`` on ``device`` in one batched
    ``io.decode_jpegs`` call (EXIF orientation applied, as ``read_image`` does); if the batch
    fails, each file on the CPU instead (so a corrupt file gets ``read_image``'s error and
    fails alone). Returns decoded items."""
    t0 = time.perf_counter()
    try:
        images = io.decode_jpegs([data for _, _, data, _, _ in items], device)
        share = (time.perf_counter() - t0) / max(len(items), 1)
        return [(i, "rgb", img, None, s + share)
                for (i, _, _, _, s), img in zip(items, images, strict=True)]
    except Exception:
        out = []
        for i, _, _, _, s in items:
            t1 = time.perf_counter()
            try:
                kind, image, error = *classify(io.read_image(paths[i])), None
            except Exception as exc:
                kind, image, error = "", None, one_line(exc)
            out.append((i, kind, image, error, s + time.perf_counter() - t1))
        return out


def _as_list(items):
    return items


def decode_loader(paths: Sequence[Path], batch_size: int, workers: int, raw_jpeg: bool = False):
    """Batches (lists) of decoded items, ``workers`` processes ahead of the caller; with
    ``raw_jpeg``, JPEGs come as raw bytes for :func:`gpu_decode_jpegs`."""
    return torch.utils.data.DataLoader(
        _DecodeDataset(paths, raw_jpeg), batch_size=batch_size, num_workers=workers,
        collate_fn=_as_list,
        prefetch_factor=4 if workers else None, persistent_workers=False)


def compact(indices: Tensor, palette: Tensor) -> tuple[Tensor, Tensor]:
    """Drop palette entries no pixel uses (a smaller palette can take a smaller PNG bit depth).
    ``indices [H, W]``, ``palette [K, C]`` -> the same with only used entries."""
    k = palette.shape[0]
    used = torch.bincount(indices.flatten().to(torch.int64), minlength=k).nonzero().squeeze(1)
    if len(used) == k:
        return indices, palette
    lut = torch.zeros(k, dtype=torch.int64)
    lut[used] = torch.arange(len(used))
    return lut[indices.to(torch.int64)], palette[used]


def encode_and_write(indices: Tensor, palette: Tensor, dst: Path, optimize: bool = False) -> float:
    """Indexed PNG of ``indices [H, W]`` into ``palette [K, 3|4]``, written atomically to
    ``dst``; returns the seconds spent."""
    t0 = time.perf_counter()
    data = io.encode_indexed_png(*compact(indices, palette), optimize=optimize)
    write_atomic(data, dst)
    return time.perf_counter() - t0


def write_atomic(data: bytes, dst: Path) -> None:
    """``data`` to ``dst`` through a hidden temp file + ``os.replace``."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(dst)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


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


class _Runner:
    """The quantize thread's state: stats, the progress bar and the encoders in flight."""

    def __init__(self, jobs, quantizer: Quantizer, device, bar, optimize: bool, threads: int):
        self.jobs, self.q, self.device, self.bar = jobs, quantizer, device, bar
        self.optimize = optimize
        self.stats = QuantizeStats(total=len(jobs))
        self.pool = ThreadPoolExecutor(max_workers=threads)
        self.inflight: deque = deque()

    def fail(self, i: int, reason: str) -> None:
        self.stats.failures.append((self.jobs[i].rel, reason))
        self.bar.add(1)

    def submit(self, i: int, indices: Tensor, palette: Tensor) -> None:
        fut = self.pool.submit(encode_and_write, indices, palette, self.jobs[i].dst, self.optimize)
        self.inflight.append((i, fut))

    def settle(self, limit: int) -> None:
        """Collect finished encoders until at most ``limit`` are in flight (back-pressure)."""
        t0 = time.perf_counter()
        while len(self.inflight) > limit:
            i, fut = self.inflight.popleft()
            try:
                self.stats.encode_s += fut.result()
                self.stats.done += 1
                self.bar.add(1)
            except Exception as exc:
                self.fail(i, one_line(exc))
        self.stats.idle_s += time.perf_counter() - t0

    def rgb(self, members: list[tuple[int, Tensor]]) -> None:
        """Quantize equal-shaped RGB images as one batch; on failure, each alone."""
        try:
            results = self._rgb_batch([img for _, img in members])
        except Exception as exc:
            if len(members) > 1:
                for m in members:
                    self.rgb([m])
            else:
                self.fail(members[0][0], one_line(exc))
            return
        for (i, _), (idx, pal) in zip(members, results, strict=True):
            self.submit(i, idx, pal)

    def _rgb_batch(self, images: list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        x = torch.stack(images).to(self.device, non_blocking=True)
        idx, pals = self.q.rgb_batch(x)
        idx, pals = idx.to(torch.uint8).cpu(), pals.float().cpu()
        return list(zip(idx, pals, strict=True))

    def rgba(self, i: int, image: Tensor) -> None:
        try:
            idx, pal = self.q.rgba_one(image.to(self.device))
        except Exception as exc:
            self.fail(i, one_line(exc))
            return
        self.submit(i, idx.to(torch.uint8).cpu(), pal.float().cpu())

    def batch(self, items) -> None:
        groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = defaultdict(list)
        jpegs = [item for item in items if item[1] == "jpeg"]
        if jpegs:
            items = [item for item in items if item[1] != "jpeg"]
            items += gpu_decode_jpegs(jpegs, [j.src for j in self.jobs], self.device)
        t0 = time.perf_counter()
        for i, kind, image, error, seconds in items:
            self.stats.decode_s += seconds
            if error is not None:
                self.fail(i, error)
            elif kind == "clear":
                self.submit(i, *transparent(*image.shape[-2:]))
            elif kind == "rgba":
                self.rgba(i, image)
            else:
                groups[tuple(image.shape)].append((i, image))
        for members in groups.values():
            self.rgb(members)
        self.stats.quantize_s += time.perf_counter() - t0


def run_jobs(jobs: Sequence[Job], quantizer: Quantizer, *, device: torch.device,
             batch_size: int = 32, workers: int = 0, progress: bool = True, ranks: Any = None,
             optimize: bool = False, threads: int | None = None,
             gpu_jpeg: bool = True) -> QuantizeStats:
    """Decode, quantize and write ``jobs``; each file that fails is listed with its reason in
    the returned stats and every other file is written.

    ``ranks`` (a :class:`torchpalette.cli.torchrun.Ranks`, under torchrun) makes the progress
    bar show the images of all ranks; every rank must then call this, whatever its number of
    jobs. ``threads``: encoder threads (default: all cores). ``gpu_jpeg``: on a CUDA device,
    decode JPEGs there (nvJPEG, batched) instead of in the CPU workers.
    """
    start = time.perf_counter()
    if jobs:
        # the decoder's lazy torchvision import costs seconds: pay it once here, before the
        # DataLoader forks its workers, rather than once in every worker
        import torchvision.io  # noqa: F401
    loader = decode_loader([j.src for j in jobs], batch_size, workers,
                           raw_jpeg=gpu_jpeg and device.type == "cuda")
    bar = (Progress(len(jobs), progress) if ranks is None
           else ranks.progress(len(jobs), len(loader), progress))
    run = _Runner(jobs, quantizer, device, bar, optimize, threads or os.cpu_count() or 2)
    try:
        batches = iter(loader)
        while True:
            t0 = time.perf_counter()
            items = next(batches, None)
            if items is None:
                break
            waited = time.perf_counter() - t0
            if workers == 0:  # this thread decoded the batch itself: that is not idle time
                waited -= sum(item[4] for item in items)
            run.stats.idle_s += max(waited, 0.0)
            run.batch(items)
            run.settle(2 * batch_size)
            bar.batch_done()
        run.settle(0)
        bar.finish()
    finally:
        run.pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    run.stats.failures.sort()
    run.stats.wall_s = time.perf_counter() - start
    return run.stats
