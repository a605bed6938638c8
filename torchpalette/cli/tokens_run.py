"""``torchpalette quantize SRC DST --format tokens|npy``: plan units, resume, quantize, write.

Units (:mod:`~torchpalette.cli.sources`) are global and fixed by SRC, so under torchrun rank r
takes units r, r + world, ... and writes the same shards, byte for byte, as one process. The
work goes through the PNG mirror's pipeline (:func:`~torchpalette.cli.pipeline.run_jobs`:
``--workers``, ``--queue-mib``, ``--max-pixels``, each image quantized alone) into a
:mod:`~torchpalette.cli.tokens_sink` sink, so the decoded tokens equal the PNG pixels.

Record: ``DST/.torchpalette/tokens.<rank>.jsonl`` (a log per rank, so ranks never write one
file) gets one line per unit once its shards are renamed into DST: the source files it covers,
its shards (name, size, mtime), samples, failures, the options digest and a digest of its
sources (path, size, mtime; content with ``--hash``). The latest line of a unit, over every
log, counts. ``--format npy`` keeps one such line for the whole array (unit ``indices.npy``).

Resume, per unit (the shard is the smallest thing written atomically):

* finished (recorded with these options and sources, no failures, its shards there as
  written): skipped, so a re-run of a finished run does nothing;
* anything else (killed before its shard was renamed, a failed sample, a source changed,
  added or removed, other options, a shard changed since): redone, and its new shards replace
  the old ones by rename (old parts past the new count removed after), so a stale sample is
  never readable once the run finishes. Shards of units no longer planned (``--shard-size``
  changed, or a folder whose sorted list shifted) are removed: their samples are redone in the
  units that hold them now.

Orphans (recorded samples whose source file is gone): a shard holding only orphans (a removed
input tar or Parquet file) is listed and kept, like the PNG mirror's orphans, unless
``--delete-orphans`` (then deleted). Where an orphan shares a shard that must be rewritten (a
file gone from a folder SRC, any source of ``npy``), the rewrite would drop it: the run stops
before any work (exit 2) unless ``--delete-orphans`` says so. The dataset palette is stored
once and reused by a resumed run, so a fitted palette is not refitted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import torchpalette as tp
from torchpalette import io

from .decode import Decoder, Member
from .errors import UsageError, one_line
from .pipeline import QuantizeStats, run_jobs
from .plan import Job
from .quantizers import Quantizer
from .sources import (
    ImageMember,
    NoImage,
    Sample,
    Unit,
    inputs_digest,
    load_unit,
    plan_units,
    source_files,
    source_kind,
)
from .tokens import HIDDEN, write_dataset_palette
from .tokens_sink import NpySink, TokenSink, merge_npy

NPY = "indices.npy"  # the one unit of --format npy in the record


def options_digest(args: Any, palette: torch.Tensor | None) -> str:
    """The options that change the tokens, and the palette's bytes."""
    opts = {"format": args.format, "colors": args.colors, "space": args.space,
            "dither": args.dither, "seed": args.seed, "fit": bool(args.fit_palette),
            "dither_strength": args.dither_strength if args.dither != "none" else None,
            "shard_size": args.shard_size if args.format == "tokens" else None,
            "shard_bytes": args.shard_bytes,
            "version": tp.__version__}
    h = hashlib.sha256(json.dumps(opts, sort_keys=True).encode())
    if palette is not None:
        h.update(palette.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def read_records(dst: Path) -> dict[str, dict[str, Any]]:
    """The latest record of each unit, over every rank's log (a torn last line is ignored);
    units whose latest record says ``deleted`` are left out."""
    out: dict[str, dict[str, Any]] = {}
    for log in sorted((dst / HIDDEN).glob("tokens.*.jsonl")):
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
                old = out.get(rec["unit"])
                if old is None or rec.get("time_ns", 0) >= old.get("time_ns", 0):
                    out[rec["unit"]] = rec
            except (ValueError, KeyError, TypeError):
                continue
    return {u: r for u, r in out.items() if not r.get("deleted")}


def append_record(dst: Path, rank: int, rec: dict[str, Any]) -> None:
    rec = {**rec, "time_ns": time.time_ns()}
    with open(dst / HIDDEN / f"tokens.{rank}.jsonl", "a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def out_stats(dst: Path, names: list[str]) -> list[tuple[str, int, int]]:
    return [(n, st.st_size, st.st_mtime_ns) for n in names for st in [os.stat(dst / n)]]


def finished(rec: dict[str, Any] | None, digest: str, sources: str, dst: Path) -> bool:
    """A unit is finished when recorded with these options and sources, without failures,
    and its shards are all there as written (size, mtime)."""
    if (rec is None or rec.get("digest") != digest or rec.get("sources") != sources
            or rec.get("failed")):
        return False
    for name, size, mtime in rec.get("outputs", []):
        try:
            st = os.stat(dst / name)
        except OSError:
            return False
        if (st.st_size, st.st_mtime_ns) != (size, mtime):
            return False
    return True


def find_orphans(records: dict[str, dict[str, Any]], planned: set[str],
                 names: set[str]) -> tuple[list[str], list[str]]:
    """``(orphans, lone units)``: recorded source files not planned now, and the recorded
    units holding only orphans under a name no longer planned (their shards are not
    rewritten, so they can be kept)."""
    orphans: set[str] = set()
    lone = []
    for name, rec in records.items():
        gone = [f for f in rec.get("files", []) if f not in planned]
        orphans.update(gone)
        if gone and len(gone) == len(rec.get("files", [])) and name not in names:
            lone.append(name)
    return sorted(orphans), sorted(lone)


def drop_stale(dst: Path, records: dict[str, dict[str, Any]], digest: str, names: set[str],
               keep: set[str]) -> None:
    """Delete the shards of units made with other options, or no longer in SRC (but the
    orphan units in ``keep``): stale samples must not sit beside the new ones."""
    for name, rec in records.items():
        if name not in keep and (rec.get("digest") != digest or name not in names):
            for f, *_ in rec.get("outputs", []):
                (dst / f).unlink(missing_ok=True)


def unit_sources(units: list[Unit], kind: str) -> list[Path | str | Member]:
    """What the decoder reads for each sample of ``units``: a folder's files by path, else
    the image member (or, without one, a member that fails with the reason)."""
    out: list[Path | str | Member] = [s.image.path if kind == "folder" and s.image is not None
            else ImageMember(s.name or s.rel, s.image) if s.image is not None
            else NoImage(s.rel, f"{s.rel}: expected an image member, got "
                                f"{sorted(s.extras) or 'none'}")
            for u in units for s in u.samples]
    return out


def fit_units(units: list[Unit], args: Any, device: torch.device) -> torch.Tensor:
    """One palette over every sample of ``units`` (all-reduced across ranks by
    :func:`tp.fit_palette`); fewer colour bins than ``--colors`` fits that many."""
    def images():
        decoder = Decoder(unit_sources(units, args.kind), workers=args.workers,
                          batch_size=args.batch_size, budget=args.queue_mib << 20,
                          max_pixels=max_pixels(args))
        for batch in decoder:
            yield from (d.image for d in batch if d.error is None and d.image is not None)
            decoder.release(batch)

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


def max_pixels(args: Any) -> int | None:
    return io.MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)


def run_tokens(args: Any, quantizer: Quantizer, device: torch.device, ranks: Any,
               fixed: torch.Tensor | None) -> tuple[QuantizeStats, list[str]]:
    """Quantize SRC into token shards (or one npy array) under DST; returns this rank's stats
    and the orphans found (source files gone, see the module docstring)."""
    t0 = time.perf_counter()
    rank, world = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
    dst, npy = Path(args.dst), args.format == "npy"
    kind = args.kind = source_kind(args.src)
    problems: list[tuple[str, str]] = []
    units = plan_units(args.src, kind, shard_size=args.shard_size,
                       image_column=args.image_column, problems=problems, dst=dst)
    records = read_records(dst)  # before any rank writes: every rank decides alike
    planned = ({s.rel for u in units for s in u.samples} if kind == "folder"
               else set(source_files(args.src, kind)))
    names = {NPY} if npy else {u.name for u in units}
    orphans, lone = find_orphans(records, planned, names)
    lone_files = {f for n in lone for f in records[n].get("files", [])}
    dropped = [f for f in orphans if f not in lone_files]
    if dropped and not args.delete_orphans:
        eg = ", ".join(dropped[:3]) + (", ..." if len(dropped) > 3 else "")
        raise UsageError(f"--delete-orphans: expected it to rewrite shards holding samples whose "
                         f"source is gone, got {len(dropped)} such sources ({eg}); pass "
                         f"--delete-orphans to drop them from DST, or restore them")
    mine = units[rank::world]
    pal = dataset_palette(args, dst, mine, fixed, device, ranks)
    quantizer.fixed = None if pal is None else pal.to(device)
    k = args.colors if pal is None else len(pal)
    digest = options_digest(args, pal)
    stats = QuantizeStats(failures=[] if rank else list(problems))
    if rank == 0:
        (dst / HIDDEN).mkdir(parents=True, exist_ok=True)
        if not npy:
            drop_stale(dst, records, digest, names, set() if args.delete_orphans else set(lone))
        if args.delete_orphans:
            for name in lone:
                for f, *_ in records[name].get("outputs", []):
                    (dst / f).unlink(missing_ok=True)
                append_record(dst, rank, {"unit": name, "deleted": True})
        if pal is None:  # each sample's own palette: no dataset palette of an earlier run
            for name in ("palette.npy", "palette.json"):
                (dst / name).unlink(missing_ok=True)
        else:
            info = {"space": args.space, "seed": args.seed, "source": args.palette or "fit",
                    "fit": {"colors": args.colors, "space": args.space, "seed": args.seed,
                            "source": args.src} if args.fit_palette else None}
            write_dataset_palette(dst, pal, info)
    if ranks is not None:
        ranks.barrier()  # the palette and the clean temp folder before any shard
    pid = None if pal is None else json.loads((dst / "palette.json").read_text())["palette_id"]
    resume = {} if args.overwrite else records
    sources = {u.name: inputs_digest(u, kind, args.hash) for u in (units if npy else mine)}
    if npy:
        whole = hashlib.sha256(json.dumps(sources, sort_keys=True).encode()).hexdigest()[:16]
        done = finished(resume.get(NPY), digest, whole, dst)
        todo = [] if done else mine
        stats.skipped = resume[NPY]["samples"] if done and rank == 0 else 0
    else:
        todo = [u for u in mine if not finished(resume.get(u.name), digest, sources[u.name], dst)]
        left = {id(u) for u in todo}
        stats.skipped = sum(resume[u.name]["samples"] for u in mine if id(u) not in left)
    ready: list[Unit] = []
    for u in todo:
        try:
            ready.append(load_unit(u, kind))
        except ValueError as exc:
            stats.failures.append((u.inputs[0], one_line(exc)))
    samples: list[Sample] = [s for u in ready for s in u.samples]
    jobs = [Job(Path(s.rel), Path(), s.rel, str(g)) for g, s in enumerate(samples)]
    sink: TokenSink | NpySink
    if npy:
        where = {id(u): rank + j * world for j, u in enumerate(mine)}
        sink = NpySink(dst, rank, [[where[id(u)], p] for u in ready for p in range(len(u.samples))],
                       [s.key for s in samples], [s.rel for s in samples], k, pal is not None)
    else:
        def on_commit(unit: Unit, outputs: list[tuple[str, int, int]], failed: list[str]) -> None:
            new = {n for n, *_ in outputs}
            for f, *_ in records.get(unit.name, {}).get("outputs", []):
                if f not in new:  # an old part past the new count
                    (dst / f).unlink(missing_ok=True)
            append_record(dst, rank, {
                "unit": unit.name, "files": unit.files(kind), "outputs": outputs,
                "samples": len(unit.samples) - len(failed), "failed": failed,
                "digest": digest, "sources": sources[unit.name]})

        sink = TokenSink(dst, ready, pid=pid, k=k, max_count=args.shard_size,
                         max_bytes=args.shard_bytes, on_commit=on_commit)
    try:
        run = run_jobs(jobs, quantizer, device=device, sink=sink, batch_size=args.batch_size,
                       workers=args.workers, queue_bytes=args.queue_mib << 20,
                       progress=not args.quiet, ranks=ranks, max_pixels=max_pixels(args),
                       sources=unit_sources(ready, kind))
    finally:
        if isinstance(sink, TokenSink):
            sink.abort()
    stats = QuantizeStats(
        len(jobs), run.done, stats.skipped, sorted(stats.failures + run.failures),
        run.decode_s, run.quantize_s, run.encode_s, run.idle_s, 0.0, 0, run.notes,
        run.queue_peak)
    if npy and todo is not mine:
        shutil.rmtree(sink.part, ignore_errors=True)  # type: ignore[union-attr]
    elif npy:
        finish_npy(args, dst, stats, ranks, k, pal is not None, digest, whole, planned)
    stats.wall_s = time.perf_counter() - t0
    return stats, orphans


def finish_npy(args: Any, dst: Path, stats: QuantizeStats, ranks: Any, k: int,
               dataset_palette: bool, digest: str, whole: str, planned: set[str]) -> None:
    """After every rank wrote its part: rank 0 joins them into DST (samples of another size
    fail there) and records the array; every rank returns once it is in place."""
    world = 1 if ranks is None else ranks.world_size
    failed = (len(stats.failures) if ranks is None
              else len(ranks.gather_stats(stats).failures))  # also waits for every part
    if world == 1 or ranks.rank == 0:
        late = merge_npy(dst, world, k, dataset_palette)
        stats.failures = sorted(stats.failures + late)
        stats.done -= len(late)
        keys = dst / "keys.json"
        rows = len(json.loads(keys.read_text())) if keys.is_file() else 0
        outs = [n for n in ("indices.npy", "keys.json", "palettes.npy")
                if (dst / n).is_file() and (n != "palettes.npy" or not dataset_palette)]
        append_record(dst, 0, {"unit": NPY, "files": sorted(planned), "samples": rows,
                               "outputs": out_stats(dst, outs), "failed": failed + len(late),
                               "digest": digest, "sources": whole})
    if ranks is not None:
        ranks.barrier()
