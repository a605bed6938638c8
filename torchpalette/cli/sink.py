"""Where quantized images go: the output step of ``torchpalette quantize`` behind one small
interface, so other output formats (token arrays, WebDataset shards) plug in beside PNG.

The pipeline hands a sink one :class:`Output` per image, from encoder threads, in no particular
order: ``key`` (the output's POSIX path under DST, from :func:`~torchpalette.cli.plan.plan_jobs`
with the sink's ``suffix``), ``indices [H, W]`` and ``palette [K, 3|4]`` (4 columns: alpha
quantized with the colour; a transparent pixel's entry has alpha 0). A sink answers with the
outputs that are now durable on disk (:class:`Written`: key, size, mtime), at once from
:meth:`Sink.write` (one file per image) or later from :meth:`Sink.flush`/:meth:`Sink.close`
(a shard holding many images); :meth:`Sink.failed` tells it an image will never come (it
failed before or in ``write``), so a shard waiting for it can complete. The pipeline records
provenance for exactly those keys, after the sink said they are durable, so a crash never
records an output that is not there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch import Tensor

from torchpalette import io

from .dstdir import write_atomic


@dataclass(frozen=True)
class Output:
    """One quantized image: ``key`` under DST, ``indices [H, W]``, ``palette [K, 3|4]``
    float in [0, 1]."""

    key: str
    indices: Tensor
    palette: Tensor


@dataclass(frozen=True)
class Written:
    """An output durable on disk, with the size and mtime (ns) of its file."""

    key: str
    size: int
    mtime_ns: int
    seconds: float = 0.0  # time spent encoding and writing it


class Sink(Protocol):
    """The output step. ``write`` is called from several threads at once."""

    suffix: str  # of output names: ``a.jpg`` -> ``a`` + suffix

    def write(self, out: Output) -> list[Written]: ...

    def failed(self, key: str) -> list[Written]: ...

    def flush(self) -> list[Written]: ...

    def close(self) -> list[Written]: ...


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


class PngSink:
    """One indexed PNG per image (used entries only, smallest bit depth), written atomically
    through DST's temp folder."""

    suffix = ".png"

    def __init__(self, dst: Path, tmp_dir: Path, optimize: bool = False):
        self.dst, self.tmp_dir, self.optimize = dst, tmp_dir, optimize

    def write(self, out: Output) -> list[Written]:
        t0 = time.perf_counter()
        data = io.encode_indexed_png(*compact(out.indices, out.palette), optimize=self.optimize)
        st = write_atomic(data, self.dst / out.key, self.tmp_dir)
        return [Written(out.key, st.st_size, st.st_mtime_ns, time.perf_counter() - t0)]

    def failed(self, key: str) -> list[Written]:
        return []

    def flush(self) -> list[Written]:
        return []

    def close(self) -> list[Written]:
        return []
