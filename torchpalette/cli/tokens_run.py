"""``torchpalette quantize SRC DST --format tokens|npy``: plan units, resume, quantize, write.

Units (:mod:`~torchpalette.cli.sources`) are global and fixed by SRC, so under torchrun rank r
takes units r, r + world, ... and writes the same shards, byte for byte, as one process. A
batch never spans two units, so what a sample is batched with does not depend on the ranks.
Quantization is the PNG mirror's (:class:`~torchpalette.cli.quantizers.Quantizer`), so the
decoded tokens equal the PNG pixels.

Resume: the record ``DST/.torchpalette/tokens.<rank>.jsonl`` gets one line per finished unit
(inputs, output shards, samples, failures, options digest) after its shards are renamed into
DST. A re-run skips units whose line matches the options and whose shards all exist; units
with failures are retried (as the PNG mirror retries failed files); a change of options
redoes every unit. The dataset palette is stored once and reused by a resumed run, so a
fitted palette is not refitted and every shard indexes the same colours.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import torchpalette as tp
from torchpalette import io

from .decode import classify
from .errors import UsageError, one_line
from .pipeline import Progress, QuantizeStats
from .quantizers import Quantizer, transparent
from .sources import Sample, Unit, inputs_digest, load_unit, plan_units, source_kind
from .tokens import HIDDEN, NpyWriter, ShardWriter, sample_members, write_dataset_palette


class _Decode(torch.utils.data.Dataset):
    """Item ``i``: ``(i, kind, image, error, extras, seconds)`` with every error caught."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s, t0 = self.samples[i], time.perf_counter()
        try:
            if s.image is None:
                raise ValueError(f"{s.rel}: expected an image member, got "
                                 f"{sorted(s.extras) or 'none'}")
            kind, image = classify(io.read_image(s.name or s.rel, data=s.image.read()))
            extras = {k: r.read() for k, r in s.extras.items()}
            return i, kind, image, None, extras, time.perf_counter() - t0
        except Exception as exc:  # a bad sample fails alone
            return i, "", None, one_line(exc), {}, time.perf_counter() - t0


def _batches(units: list[Unit], batch_size: int) -> list[list[int]]:
    """Index lists of ``batch_size``, never spanning two units."""
    out, start = [], 0
    for u in units:
        n = len(u.samples)
        out += [list(range(start + i, start + min(i + batch_size, n)))
                for i in range(0, n, batch_size)]
        start += n
    return out


def loader(units: list[Unit], batch_size: int, workers: int):
    samples = [s for u in units for s in u.samples]
    if samples and workers:
        # the decoder's lazy torchvision import costs seconds: pay it once here, before the
        # DataLoader forks its workers, rather than once in every worker
        import torchvision.io  # noqa: F401
    return torch.utils.data.DataLoader(
        _Decode(samples), batch_sampler=_batches(units, batch_size), num_workers=workers,
        collate_fn=list, prefetch_factor=4 if workers else None), samples


def quantize_items(items, q: Quantizer, device: torch.device):
    """Decoded items -> ``{i: (indices [H, W], palette [K, 3|4]) or error str}``; equal-shaped
    RGB images as one batch (each alone if the batch fails), RGBA one by one."""
    out: dict[int, Any] = {}
    groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
    for i, kind, image, error, *_ in items:
        if error is not None:
            out[i] = error
        elif kind == "clear":
            out[i] = transparent(*image.shape[-2:])
        elif kind == "rgba":
            try:
                idx, pal = q.rgba_one(image.to(device))
                out[i] = (idx.cpu(), pal.float().cpu())
            except Exception as exc:
                out[i] = one_line(exc)
        else:
            groups.setdefault(tuple(image.shape), []).append((i, image))
    for members in groups.values():
        for part in ([members] if len(members) > 1 else []) + [[m] for m in members]:
            try:
                idx, pals = q.rgb_batch(torch.stack([im for _, im in part]).to(device))
            except Exception as exc:
                if len(part) == 1:
                    out[part[0][0]] = one_line(exc)
                continue
            for (i, _), a, p in zip(part, idx.cpu(), pals.float().cpu(), strict=True):
                out[i] = (a, p)
            if len(part) == len(members):
                break
    return out


def options_digest(args: Any, palette: torch.Tensor | None) -> str:
    """The options that change the tokens, and the palette's bytes."""
    opts = {"format": args.format, "colors": args.colors, "space": args.space,
            "dither": args.dither, "seed": args.seed, "fit": bool(args.fit_palette),
            "dither_strength": args.dither_strength if args.dither != "none" else None,
            "shard_size": args.shard_size, "shard_bytes": args.shard_bytes,
            "version": tp.__version__}
    h = hashlib.sha256(json.dumps(opts, sort_keys=True).encode())
    if palette is not None:
        h.update(palette.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def read_records(dst: Path) -> dict[str, dict[str, Any]]:
    """The last record of each unit, over every rank's log (a torn last line is ignored)."""
    out: dict[str, dict[str, Any]] = {}
    for log in sorted((dst / HIDDEN).glob("tokens.*.jsonl")):
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
                out[rec["unit"]] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return out


def finished(rec: dict[str, Any] | None, digest: str, sources: str, dst: Path) -> bool:
    """A unit is finished when recorded with these options and sources, without failures,
    and its shards are all there."""
    return (rec is not None and rec.get("digest") == digest and rec.get("sources") == sources
            and not rec.get("failed") and all((dst / f).is_file() for f in rec.get("outputs", [])))


def drop_stale(dst: Path, records: dict[str, dict[str, Any]], digest: str,
               names: set[str]) -> None:
    """Delete the shards of units made with other options, or no longer in SRC (a changed
    ``--shard-size`` renames every unit): stale samples must not sit beside the new ones."""
    for name, rec in records.items():
        if rec.get("digest") != digest or name not in names:
            for f in rec.get("outputs", []):
                (dst / f).unlink(missing_ok=True)


def append_record(dst: Path, rank: int, rec: dict[str, Any]) -> None:
    with open(dst / HIDDEN / f"tokens.{rank}.jsonl", "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def fit_units(units: list[Unit], args: Any, device: torch.device) -> torch.Tensor:
    """One palette over every sample of ``units`` (all-reduced across ranks by
    :func:`tp.fit_palette`); fewer colour bins than ``--colors`` fits that many."""
    def images():
        dl, _ = loader(units, args.batch_size, args.workers)
        for items in dl:
            yield from (img for _, _, img, err, *_ in items if err is None)

    try:
        return tp.fit_palette(images(), args.colors, space=args.space, seed=args.seed,
                              device=device)
    except ValueError as exc:
        import re

        few = re.search(r"colors: expected at most (\d+)", str(exc))
        if few is None:
            raise UsageError(f"--fit-palette: {exc}") from None
        return tp.fit_palette(images(), int(few.group(1)), space=args.space, seed=args.seed,
                              device=device)


def dataset_palette(args: Any, dst: Path, units: list[Unit], fixed: torch.Tensor | None,
                    device: torch.device, ranks: Any) -> torch.Tensor | None:
    """``--palette`` as given; ``--fit-palette``: the stored palette of an earlier run with the
    same options, else fitted now (every rank takes part: the fit all-reduces)."""
    if fixed is not None or not args.fit_palette:
        return fixed
    stored = dst / "palette.npy"
    meta = dst / "palette.json"
    reuse = False
    if stored.is_file() and meta.is_file() and not args.overwrite:
        info = json.loads(meta.read_text())
        reuse = info.get("fit") == {"colors": args.colors, "space": args.space,
                                    "seed": args.seed, "source": args.src}
    if ranks is not None:  # every rank must fit, or none
        import torch.distributed as dist

        seen: list[Any] = [None] * ranks.world_size
        dist.all_gather_object(seen, reuse, group=ranks.group)
        reuse = all(seen)
    if reuse:
        return torch.from_numpy(np.load(stored)).float() / 255
    return fit_units([load_unit(u, args.kind) for u in units], args, device).cpu()


def run_tokens(args: Any, quantizer: Quantizer, device: torch.device, ranks: Any,
               fixed: torch.Tensor | None) -> QuantizeStats:
    """Quantize SRC into token shards (or one npy array) under DST; returns this rank's stats."""
    t0 = time.perf_counter()
    rank, world = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
    dst = Path(args.dst)
    args.kind = source_kind(args.src)
    if args.format == "npy" and world > 1:
        raise UsageError("--format npy: expected one process (one array); use --format tokens "
                         "under torchrun")
    problems: list[tuple[str, str]] = []
    units = plan_units(args.src, args.kind, shard_size=args.shard_size,
                       image_column=args.image_column, problems=problems, dst=dst)
    mine = units[rank::world]
    pal = dataset_palette(args, dst, mine, fixed, device, ranks)
    quantizer.fixed = None if pal is None else pal.to(device)
    k = args.colors if pal is None else len(pal)
    digest = options_digest(args, pal)
    stats = QuantizeStats(failures=[] if rank else list(problems))
    if rank == 0:
        (dst / HIDDEN).mkdir(parents=True, exist_ok=True)
        if args.format == "tokens":
            drop_stale(dst, read_records(dst), digest, {u.name for u in units})
        if pal is not None:
            info = {"space": args.space, "seed": args.seed, "source": args.palette or "fit",
                    "fit": {"colors": args.colors, "space": args.space, "seed": args.seed,
                            "source": args.src} if args.fit_palette else None}
            write_dataset_palette(dst, pal, info)
    if ranks is not None:
        ranks.barrier()  # the palette and the clean temp folder before any shard
    pid = None if pal is None else json.loads((dst / "palette.json").read_text())["palette_id"]
    records = {} if args.overwrite else read_records(dst)
    sources = {u.name: inputs_digest(u, args.kind) for u in mine}
    todo = [u for u in mine if args.format == "npy"
            or not finished(records.get(u.name), digest, sources[u.name], dst)]
    left = {id(u) for u in todo}
    stats.skipped = sum(records[u.name]["samples"] for u in mine if id(u) not in left)
    ready: list[Unit] = []
    for u in todo:
        try:
            ready.append(load_unit(u, args.kind))
        except ValueError as exc:
            stats.failures.append((u.inputs[0], one_line(exc)))
    total = sum(len(u.samples) for u in ready)
    stats.total = total
    bar = Progress(total, not args.quiet)
    dl, samples = loader(ready, args.batch_size, args.workers)
    out: _Shards | _Array = (_Array(NpyWriter(dst, total, k, pal is not None))
                             if args.format == "npy" else _Shards(dst, rank, digest, args, pid, k,
                                                                sources))
    owner = [u for u in ready for _ in u.samples]
    try:
        for items in dl:
            t1 = time.perf_counter()
            results = quantize_items(items, quantizer, device)
            stats.quantize_s += time.perf_counter() - t1
            for i, _kind, _image, _error, extras, seconds in items:
                s, res = samples[i], results[i]
                stats.decode_s += seconds
                t1 = time.perf_counter()
                try:
                    if isinstance(res, str):
                        raise _Failed(res)
                    out.add(owner[i], s, res, extras)
                    stats.done += 1
                except (_Failed, ValueError) as exc:
                    why = str(exc) if isinstance(exc, _Failed) else one_line(exc)
                    out.fail(owner[i], (s.rel, why))
                    stats.failures.append((s.rel, why))
                stats.encode_s += time.perf_counter() - t1
                bar.add(1)
        out.finish()
    finally:
        out.abort()
        bar.close()
    stats.failures.sort()
    stats.wall_s = time.perf_counter() - t0
    return stats


class _Failed(Exception):
    """A sample that failed before writing (its reason already one line)."""


class _Shards:
    """Token output: one :class:`ShardWriter` per unit, committed (renamed into DST) and then
    recorded when the next unit starts, so a record means: its shards are complete."""

    def __init__(self, dst: Path, rank: int, digest: str, args: Any, pid: str | None, k: int,
                 sources: dict[str, str]):
        self.dst, self.rank, self.digest, self.args = dst, rank, digest, args
        self.sources = sources  # unit name -> digest of its sources when planned
        self.pid, self.k = pid, k  # the dataset palette's id (None: per sample), its size
        self.unit: Unit | None = None
        self.writer: ShardWriter | None = None
        self.failed: list[tuple[str, str]] = []

    def _switch(self, unit: Unit) -> ShardWriter:
        if unit is not self.unit or self.writer is None:
            self.finish()
            self.unit, self.failed = unit, []
            self.writer = ShardWriter(self.dst, unit.name, max_count=self.args.shard_size,
                                      max_bytes=self.args.shard_bytes)
        return self.writer

    def add(self, unit: Unit, sample: Sample, res: Any, extras: dict[str, bytes]) -> None:
        members = sample_members(sample.key, sample.rel, *res, dataset_pid=self.pid, k=self.k,
                                 extras=extras, fields=sample.fields)
        self._switch(unit).add(members)

    def fail(self, unit: Unit, failure: tuple[str, str]) -> None:
        self._switch(unit)
        self.failed.append(failure)

    def finish(self) -> None:
        if self.writer is None or self.unit is None:
            return
        outputs = self.writer.commit()
        append_record(self.dst, self.rank, {
            "unit": self.unit.name, "inputs": self.unit.inputs[:1], "outputs": outputs,
            "samples": self.writer.samples, "failed": self.failed, "digest": self.digest,
            "sources": self.sources[self.unit.name]})
        self.writer = None

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


class _Array:
    """npy output: every sample into one :class:`NpyWriter`, committed at the end."""

    def __init__(self, writer: NpyWriter):
        self.writer = writer

    def add(self, unit: Unit, sample: Sample, res: Any, extras: dict[str, bytes]) -> None:
        self.writer.add(sample.key, sample.rel, *res)

    def fail(self, unit: Unit, failure: tuple[str, str]) -> None:
        pass

    def finish(self) -> None:
        self.writer.commit()

    def abort(self) -> None:
        pass
