"""``torchpalette quantize SRC DST``: the run and its summary.

Plan (:mod:`~torchpalette.cli.plan`: SRC walked, names decided, overlaps refused), take DST's
lock (:mod:`~torchpalette.cli.dstdir`), clean leftover temp files, decide what is stale against
the provenance record (:mod:`~torchpalette.cli.record`), run the pipeline
(:mod:`~torchpalette.cli.pipeline`) and record each output once its sink says it is durable.
Under ``torchrun`` :mod:`~torchpalette.cli.torchrun` gives each rank a disjoint shard and rank
0 the lock, the progress bar and the summary of all ranks. The heavy modules load inside the
functions, so ``torchpalette --help`` and the other commands never import them.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .options import resolve_device, shown
from .palette_files import load_palette

if TYPE_CHECKING:
    import torch

    from .pipeline import QuantizeStats
    from .plan import Plan, Resume


def make_quantizer(args, device: torch.device, jobs, ranks=None):
    """The :class:`~torchpalette.cli.quantizers.Quantizer` of the options: a palette per image
    (``--colors``), a fixed palette (``--palette``) or one fitted to all images
    (``--fit-palette``; fewer distinct colours than asked warns and goes on)."""
    from .quantizers import Quantizer, fit_palette

    fixed = None
    if args.palette is not None:
        fixed = load_palette(Path(args.palette))
    elif args.fit_palette:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fixed = fit_palette([j.src for j in jobs], colors=args.colors, space=args.space,
                                seed=args.seed, device=device, batch_size=args.batch_size,
                                workers=args.workers, queue_bytes=args.queue_mib << 20)
        if ranks is None or ranks.rank == 0:
            for w in caught:
                if "--fit-palette" in str(w.message):
                    print(f"torchpalette quantize: warning: {w.message}", file=sys.stderr)
    return Quantizer(args.colors, space=args.space, dither=args.dither, seed=args.seed,
                     fixed=None if fixed is None else fixed.to(device),
                     dither_strength=args.dither_strength)


def output_options(args, quantizer) -> dict:
    """Every option that changes an output's bytes, for the provenance record."""
    import torch

    import torchpalette as tp

    digest = None
    if quantizer.fixed is not None:
        pal8 = quantizer.fixed.float().cpu().mul(255).round().to(torch.uint8)
        digest = hashlib.sha256(pal8.numpy().tobytes()).hexdigest()[:16]
    return {"format": "png", "colors": None if digest else args.colors, "palette": digest,
            "fit_palette": bool(args.fit_palette), "dither": args.dither,
            "dither_strength": args.dither_strength if args.dither != "none" else None,
            "space": args.space,
            "seed": args.seed, "optimize": bool(args.optimize), "version": tp.__version__}


def print_summary(stats: QuantizeStats, plan: Plan | None = None, res: Resume | None = None,
                  *, world_size: int = 1, orphans_deleted: bool = False) -> int:
    """Print the summary and time split (stdout), then what was skipped, noted, orphaned and
    failed (stderr); return the exit status: 1 when anything failed, else 0."""
    rate = stats.done / stats.wall_s if stats.wall_s > 0 else 0.0
    on = f" on {world_size} ranks" if world_size > 1 else ""
    redone = f" ({stats.redone} stale outputs redone)" if stats.redone else ""
    print(f"quantized {stats.done} images{redone}, skipped {stats.skipped} finished, "
          f"{len(stats.failures)} failed in {stats.wall_s:.1f} s{on} ({rate:.1f} images/s)")
    print(f"timings: decode {stats.decode_s:.2f} s (summed over workers), quantize "
          f"{stats.quantize_s:.2f} s, encode {stats.encode_s:.2f} s (summed over threads), "
          f"idle {stats.idle_s:.2f} s, wall {stats.wall_s:.2f} s; decoded images held at most "
          f"{stats.queue_peak / 2**20:.0f} MiB")
    if res is not None and res.redo:
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(res.redo.items()))
        print(f"redone: {why}")
    if plan is not None and plan.renamed:
        eg = ", ".join(f"{shown(a)} -> {shown(b)}" for a, b in plan.renamed[:3])
        print(f"renamed {len(plan.renamed)} outputs whose names clash ({eg}"
              f"{', ...' if len(plan.renamed) > 3 else ''}); see --help")
    if plan is not None:
        for rel, reason in plan.skipped:
            print(f"skipped: {shown(rel)}: {reason}", file=sys.stderr)
        _print_ignored(plan)
    for rel, note in stats.notes:
        print(f"note: {shown(rel)}: {note}", file=sys.stderr)
    if res is not None and res.orphans:
        eg = ", ".join(shown(k) for k in res.orphans[:5])
        more = ", ..." if len(res.orphans) > 5 else ""
        what = "deleted" if orphans_deleted else "kept; --delete-orphans removes them"
        print(f"orphans: {len(res.orphans)} outputs whose source is gone ({eg}{more}): {what}",
              file=sys.stderr)
    for rel, reason in stats.failures:
        print(f"failed: {shown(rel)}: {reason}", file=sys.stderr)
    if stats.total == 0 and not stats.failures:
        print("torchpalette quantize: no image files under SRC (see the skipped files above)",
              file=sys.stderr)
    elif stats.done == 0 and stats.skipped == 0 and stats.failures:
        print(f"torchpalette quantize: no readable image in SRC: all {len(stats.failures)} "
              f"failed (listed above)", file=sys.stderr)
    return 1 if stats.failures else 0


def _print_ignored(plan: Plan) -> None:
    from .walk import skip_reason

    parts = [f"{n} {suffix or '(no suffix)'} ({skip_reason(suffix)})"
             if suffix != "(special file)" else f"{n} special files (not regular files)"
             for suffix, n in sorted(plan.by_suffix.items())]
    if plan.hidden:
        parts.append(f"{plan.hidden} hidden (names starting with '.')")
    if parts:
        print(f"skipped {plan.ignored} files not decoded: {'; '.join(parts)}", file=sys.stderr)


def _max_pixels(args) -> int | None:
    from torchpalette import io

    return io.MAX_PIXELS if args.max_pixels is None else (args.max_pixels or None)


def run_quantize(args) -> int:
    """Quantize SRC's tree into DST; under torchrun each rank does a disjoint shard, rank 0
    prints the summary of all ranks, and every rank returns the same exit status."""
    from . import torchrun
    from .dstdir import DstDir, say_waiting
    from .pipeline import run_jobs
    from .plan import plan_jobs, resume, shard
    from .record import Record, Row, options_digest
    from .sink import PngSink
    from .tokens_cmd import check_format_options

    if args.format != "png":
        from .plan import Resume
        from .tokens_cmd import run_token_format

        stats, rank, world, orphans = run_token_format(args)
        if rank == 0:
            return print_summary(stats, None, Resume(todo=[], orphans=orphans), world_size=world,
                                 orphans_deleted=args.delete_orphans)
        return 1 if stats.failures else 0
    check_format_options(args)
    if args.colors > 256:
        raise UsageError(f"--colors: expected at most 256 for --format png (one byte per "
                         f"index), got {args.colors}; --format tokens or npy take more")
    src, dst = Path(args.src), Path(args.dst)
    with torchrun.session(resolve_device(args.device)) as (ranks, device):
        rank, world = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
        plan = plan_jobs(src, dst, PngSink.suffix)  # clashes, overlaps: before any work
        if ranks is not None:
            ranks.check_same(plan.jobs)
        if args.palette is not None:
            load_palette(Path(args.palette))  # a bad --palette is a usage error before the lock
        home = DstDir(dst, say_waiting)
        with home if rank == 0 else contextlib.nullcontext():
            record: Record | None = None
            if rank == 0:
                home.clean_temp()
                record = Record(home.record_path)  # created (WAL) before other ranks open it
            if ranks is not None:
                ranks.barrier()  # every rank plans what is left only once rank 0 holds DST
            jobs = shard(plan.jobs, rank, world)
            quantizer = make_quantizer(args, device, jobs, ranks)
            digest, text = options_digest(output_options(args, quantizer))
            record = record or Record(home.record_path)
            try:
                record.add_options(digest, text)
                res = resume(jobs, record.load(), digest, dst=dst, overwrite=args.overwrite,
                             content_hash=args.hash,
                             all_keys=[j.key for j in plan.jobs] if rank == 0 else None)
                if rank != 0:
                    res.orphans = []
                if args.delete_orphans and res.orphans:
                    for key in res.orphans:
                        (home.dst / key).unlink(missing_ok=True)
                    record.delete(res.orphans)

                def on_written(job, w) -> None:
                    record.put(Row(job.key, job.rel, job.size, job.mtime_ns,
                                   res.hashes.get(job.key, ""), digest, w.size, w.mtime_ns))

                sink = PngSink(home.dst, home.tmp, optimize=args.optimize)
                stats = run_jobs(res.todo, quantizer, device=device, sink=sink,
                                 batch_size=args.batch_size, workers=args.workers,
                                 queue_bytes=args.queue_mib << 20, progress=not args.quiet,
                                 ranks=ranks, max_pixels=_max_pixels(args),
                                 on_written=on_written)
            finally:
                record.close()
            stats.total, stats.skipped = len(jobs), res.finished
            stats.redone = sum(n for why, n in res.redo.items() if why != "overwrite")
            if rank == 0:
                stats.failures = sorted(stats.failures + plan.problems)
            if ranks is not None:
                stats = ranks.gather_stats(stats)
        if rank == 0:
            return print_summary(stats, plan, res, world_size=world,
                                 orphans_deleted=args.delete_orphans)
        return 1 if stats.failures else 0
