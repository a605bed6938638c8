"""Decoding ahead of the quantizer, in worker processes, with memory bounded in bytes.

Before a file is handed to a worker its pixel count is read from the header (Pillow, no
decoding) and ``4 * pixels`` bytes are reserved out of ``budget``; the reservation is released
once the quantizer is done with the image. Files are submitted while the reservations fit the
budget (one at least, so an image larger than the budget still goes, alone), so decoded images
waiting for the quantizer never hold more than ``budget`` bytes, whatever ``--workers`` and
``--batch-size``. A batch takes, in file order, up to ``batch_size`` images and at most a
quarter of the budget (so the quantizer's own scratch stays proportionate); batches are decided
by the files and the options only, never by timing.

A source is a file path or a :class:`Member` (an image held inside a container: a tar member,
a table cell), whose bytes the worker reads itself.

Each item is ``Decoded(i, kind, image, error, seconds, notes)``; a file that fails gives its
reason in ``error`` (never an exception), and library warnings (first frame of an animation)
come back as ``notes`` instead of raw warning lines.
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from PIL import Image
from torch import Tensor

from torchpalette import io

from .errors import one_line

DEFAULT_QUEUE_MIB = 1024
HEADER_BYTES = 1 << 18  # enough for an image header behind any EXIF block


@runtime_checkable
class Member(Protocol):
    """An image inside a container: ``name`` (tells the decoder its format, names it in
    messages), ``read()`` its bytes, ``head(n)`` its first ``n`` bytes (for the header)."""

    @property
    def name(self) -> str: ...

    def read(self) -> bytes: ...

    def head(self, n: int) -> bytes: ...


Source = str | Member


@dataclass
class Decoded:
    """One decoded file: ``kind`` ``rgb`` (RGB, or RGBA fully opaque: alpha dropped),
    ``clear`` (fully transparent), ``rgba`` (some transparency), ``jpeg`` (raw bytes for the
    GPU decoder) or ``""`` when ``error`` says why it failed."""

    i: int
    kind: str
    image: Tensor | None
    error: str | None
    seconds: float
    notes: list[str] = field(default_factory=list)
    reserved: int = 0


def classify(image: Tensor) -> tuple[str, Tensor]:
    """``("rgb", [3, H, W])`` for RGB and fully opaque RGBA (alpha dropped), ``("clear", ...)``
    for fully transparent, ``("rgba", [4, H, W])`` for images with some transparency."""
    if image.shape[0] != 4:
        return "rgb", image
    lo, hi = int(image[3].min()), int(image[3].max())
    if lo == 255:
        return "rgb", image[:3].contiguous()
    return ("clear" if hi == 0 else "rgba"), image


def decode_one(i: int, source: Source, raw_jpeg: bool = False,
               max_pixels: int | None = io.MAX_PIXELS) -> Decoded:
    """Decode one file or member (in a worker); any error becomes a reason string."""
    t0 = time.perf_counter()
    notes: list[str] = []
    path = source if isinstance(source, str) else source.name
    try:
        data = None if isinstance(source, str) else source.read()
        if raw_jpeg and path.lower().endswith((".jpg", ".jpeg")):
            data = Path(path).read_bytes() if data is None else data  # decoded on the GPU
            return Decoded(i, "jpeg", torch.frombuffer(bytearray(data), dtype=torch.uint8), None,
                           time.perf_counter() - t0)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image = io.read_image(path, max_pixels=max_pixels, data=data)
        notes = sorted({str(w.message).removeprefix(f"{path}: ") for w in caught})
        kind, image = classify(image)
        return Decoded(i, kind, image, None, time.perf_counter() - t0, notes)
    except Exception as exc:  # an unreadable file is reported, never fatal
        return Decoded(i, "", None, one_line(exc), time.perf_counter() - t0)


def header_bytes(path: str | Path | Member) -> int:
    """Bytes to reserve for decoding ``path``: 4 per pixel of its header's size (0 when the
    header does not read: the decoder will say why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a decompression-bomb size is judged by the decoder
            f = path if isinstance(path, (str, Path)) else BytesIO(path.head(HEADER_BYTES))
            with Image.open(f) as im:
                w, h = im.size
    except Exception:
        return 0
    return 4 * w * h


def _preload_codecs() -> None:
    """Import the decoders once here, before the workers fork, instead of once in each (the
    torchvision import alone costs seconds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import torchvision.io  # noqa: F401
        except ImportError:  # Pillow decodes then
            pass


def _worker_init() -> None:
    torch.set_num_threads(1)  # the workers decode; the quantizer owns the cores


class Decoder:
    """Decoded batches of ``paths`` (files or :class:`Member` sources, see the module
    docstring); iterate once, and call :meth:`release` with each batch when done with its
    images."""

    def __init__(self, paths: Sequence[Path | str | Member], *, workers: int, batch_size: int,
                 budget: int = DEFAULT_QUEUE_MIB << 20, raw_jpeg: bool = False,
                 max_pixels: int | None = io.MAX_PIXELS):
        self.paths: list[Source] = [str(p) if isinstance(p, (str, Path)) else p for p in paths]
        self.workers, self.batch_size, self.budget = workers, batch_size, budget
        self.raw_jpeg, self.max_pixels = raw_jpeg, max_pixels
        self.held = 0  # reserved bytes: in workers, waiting, or in the batch being quantized
        self.peak = 0
        self.pool: ProcessPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def release(self, batch: Sequence[Decoded]) -> None:
        self.held -= sum(d.reserved for d in batch)

    def _submit(self, i: int) -> Future | Decoded:
        args = (i, self.paths[i], self.raw_jpeg, self.max_pixels)
        if self.pool is None:
            return decode_one(*args)
        return self.pool.submit(decode_one, *args)

    def __iter__(self) -> Iterator[list[Decoded]]:
        if self.workers > 0 and self.paths:
            _preload_codecs()
            self.pool = ProcessPoolExecutor(self.workers, multiprocessing.get_context("fork"),
                                            initializer=_worker_init)
        # in-process decoding only reads ahead one batch; workers may run further ahead
        ahead = self.batch_size if self.pool is None else self.batch_size + 4 * self.workers
        pending: deque = deque()
        nxt = 0
        try:
            while nxt < len(self.paths) or pending:
                while nxt < len(self.paths) and len(pending) < ahead:
                    est = header_bytes(self.paths[nxt])
                    if pending and self.held + est > self.budget:
                        break
                    self.held += est
                    self.peak = max(self.peak, self.held)
                    pending.append((est, self._submit(nxt)))
                    nxt += 1
                batch: list[Decoded] = []
                size = 0
                while pending and len(batch) < self.batch_size:
                    est, fut = pending[0]
                    if batch and size + est > self.budget // 4:
                        break
                    pending.popleft()
                    item = fut.result() if isinstance(fut, Future) else fut
                    item.reserved = est
                    batch.append(item)
                    size += est
                yield batch
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None


def gpu_decode_jpegs(items: list[Decoded], paths: Sequence[Path | str | Member],
                     device: torch.device) -> list[Decoded]:
    """Decode the raw JPEG items (kind ``jpeg``) on ``device`` in one batched
    ``io.decode_jpegs`` call (EXIF orientation applied, as ``read_image`` does); if it fails,
    each file on the CPU instead (so a corrupt file gets ``read_image``'s error and fails
    alone). Returns decoded items."""
    t0 = time.perf_counter()
    try:
        images = io.decode_jpegs([d.image for d in items if d.image is not None], device)
        share = (time.perf_counter() - t0) / max(len(items), 1)
        return [Decoded(d.i, "rgb", img, None, d.seconds + share, [], d.reserved)
                for d, img in zip(items, images, strict=True)]
    except Exception:
        out = []
        for d in items:
            p = paths[d.i]
            one = decode_one(d.i, str(p) if isinstance(p, (str, Path)) else p)
            one.seconds += d.seconds
            one.reserved = d.reserved
            out.append(one)
        return out
