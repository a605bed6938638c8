"""``torchpalette quantize SRC DST``: options, the run, and its summary.

A thin layer over :mod:`torchpalette.cli.folder` (plan, shard, resume, decode, quantize, atomic
writes); under ``torchrun`` :mod:`torchpalette.cli.torchrun` gives each rank a disjoint shard
and rank 0 the progress bar and summary of all ranks. The heavy modules load inside the
functions, so ``torchpalette --help`` and the other commands never import them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .palette_files import load_palette
from .tokens_cmd import add_token_arguments

if TYPE_CHECKING:
    import torch

    from .folder import Plan, QuantizeStats

def make_quantizer(args, device: torch.device, jobs, ranks=None):
    """The :class:`~torchpalette.cli.quantizers.Quantizer` of the options: a palette per image
    (``--colors``), a fixed palette (``--palette``) or one fitted to all images
    (``--fit-palette``; fewer distinct colours than asked warns and goes on)."""
    from .folder import Quantizer, fit_palette

    fixed = None
    if args.palette is not None:
        fixed = load_palette(Path(args.palette))
    elif args.fit_palette:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fixed = fit_palette([j.src for j in jobs], colors=args.colors, space=args.space,
                                seed=args.seed, device=device, batch_size=args.batch_size,
                                workers=args.workers)
        if ranks is None or ranks.rank == 0:
            for w in caught:
                if "--fit-palette" in str(w.message):
                    print(f"torchpalette quantize: warning: {w.message}", file=sys.stderr)
    return Quantizer(args.colors, space=args.space, dither=args.dither, seed=args.seed,
                     fixed=None if fixed is None else fixed.to(device),
                     dither_strength=args.dither_strength)


def _unit(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


def print_summary(stats: QuantizeStats, plan: Plan | None = None, *, world_size: int = 1) -> int:
    """Print the summary and time split (stdout), then the skipped and failed files (stderr);
    return the exit status: 1 when anything failed (a file, an unreadable folder), else 0."""
    rate = stats.done / stats.wall_s if stats.wall_s > 0 else 0.0
    on = f" on {world_size} ranks" if world_size > 1 else ""
    redone = f" ({stats.redone} broken outputs redone)" if stats.redone else ""
    print(f"quantized {stats.done} images{redone}, skipped {stats.skipped} finished, "
          f"{len(stats.failures)} failed in {stats.wall_s:.1f} s{on} ({rate:.1f} images/s)")
    print(f"timings: decode {stats.decode_s:.2f} s (summed over workers), quantize "
          f"{stats.quantize_s:.2f} s, encode {stats.encode_s:.2f} s (summed over threads), "
          f"idle {stats.idle_s:.2f} s, wall {stats.wall_s:.2f} s")
    if plan is not None and plan.renamed:
        eg = ", ".join(f"{a} -> {b}" for a, b in plan.renamed[:3])
        print(f"renamed {len(plan.renamed)} outputs whose names clash ({eg}"
              f"{', ...' if len(plan.renamed) > 3 else ''}); see --help")
    for rel, reason in [] if plan is None else plan.skipped:
        print(f"skipped: {rel}: {reason}", file=sys.stderr)
    for rel, reason in stats.failures:
        print(f"failed: {rel}: {reason}", file=sys.stderr)
    if stats.total == 0 and not stats.failures:
        ignored = 0 if plan is None else plan.ignored
        print(f"torchpalette quantize: no image files ({', '.join(_suffixes())}) under SRC "
              f"({ignored} other files ignored)", file=sys.stderr)
    elif stats.done == 0 and stats.skipped == 0 and stats.failures:
        print(f"torchpalette quantize: no readable image in SRC: all {len(stats.failures)} "
              f"failed (listed above)", file=sys.stderr)
    return 1 if stats.failures else 0


def _suffixes() -> tuple[str, ...]:
    from torchpalette import io

    return io.IMAGE_SUFFIXES


def run_quantize(args) -> int:
    """Quantize SRC's tree into DST; under torchrun each rank does a disjoint shard, rank 0
    prints the summary of all ranks, and every rank returns the same exit status."""
    from . import torchrun
    from .commands import resolve_device
    from .folder import DstLock, pending_jobs, plan_jobs, run_jobs, shard
    from .plan import say_waiting

    if args.format != "png":
        from .tokens_cmd import run_token_format

        stats, rank, world = run_token_format(args)
        if rank == 0:
            return print_summary(stats, None, world_size=world)
        return 1 if stats.failures else 0
    if args.colors > 256:
        raise UsageError(f"--colors: expected at most 256 for --format png (one byte per "
                         f"index), got {args.colors}; --format tokens or npy take more")
    src, dst = Path(args.src), Path(args.dst)
    with torchrun.session(resolve_device(args.device)) as (ranks, device):
        rank, world = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
        plan = plan_jobs(src, dst)  # clashes, unreadable folders: before any work
        if ranks is not None:
            ranks.check_same(plan.jobs)
        if args.palette is not None:
            load_palette(Path(args.palette))  # a bad --palette is a usage error before the lock
        lock = DstLock(dst, say_waiting) if rank == 0 else contextlib.nullcontext()
        with lock:
            if ranks is not None:
                ranks.barrier()  # every rank plans what is left only once rank 0 holds DST
            jobs = shard(plan.jobs, rank, world)
            todo, broken = pending_jobs(jobs, args.overwrite)
            quantizer = make_quantizer(args, device, jobs, ranks)
            stats = run_jobs(todo, quantizer, device=device, batch_size=args.batch_size,
                             workers=args.workers, progress=not args.quiet, ranks=ranks,
                             optimize=args.optimize)
            stats.total, stats.skipped, stats.redone = len(jobs), len(jobs) - len(todo), broken
            if rank == 0:
                stats.failures = sorted(stats.failures + plan.problems)
            if ranks is not None:
                stats = ranks.gather_stats(stats)
        if rank == 0:
            return print_summary(stats, plan, world_size=world)
        return 1 if stats.failures else 0


QUANTIZE_NOTES = """
Outputs mirror SRC under DST as indexed PNGs (a.jpg -> a.png). Names that would clash,
compared case-insensitively (a.png, a.PNG; b.jpg, b.png, b.jpg.png), are made unique up front:
a source named exactly like its output keeps it, the others take their full name + .png
(a.PNG.png), then ~2, ~3... (b.jpg~2.png); the summary lists the renamed ones.
Finished outputs are skipped (broken ones redone), a second run on the same DST waits for the
first (lock file DST/.torchpalette.lock), each failing file is listed at the end (exit 1);
RGBA images get palette entries with alpha (--colors counts them). Directory symlinks are
followed once; .gif files are processed (first frame only if single-frame).

--format tokens writes WebDataset shards (DST/shard-000000.tar...): per sample <key>.idx.npy
(uint8 indices, uint16 past 256 colours), <key>.json and, without --palette/--fit-palette,
<key>.palette.npy; else one DST/palette.npy + palette.json. A WebDataset sample's other
members pass through. Shards appear only when complete; a re-run redoes only unfinished ones.
--format npy writes indices.npy [N, H, W] (same-size images), keys.json and the palette(s).
"""


# ----------------------------------------------------------------------------- parser
def add_quantize_arguments(s: argparse.ArgumentParser, _int_in, device) -> None:
    """The options of ``quantize`` (``_int_in``/``device``: the parser's shared helpers)."""
    s.add_argument("src", metavar="SRC", help="folder of images (read only); with --format "
                   "tokens|npy also WebDataset .tar shards (a glob, a::b or "
                   "shard-{000..127}.tar) or .parquet files")
    s.add_argument("dst", metavar="DST", help="output folder (mirrors SRC; outside SRC)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--palette", metavar="FILE",
                   help="fixed palette: JSON of `palette`, .gpl, hex, or .npy [K, 3] (uint8, or "
                        "float in [-1, 1] as ImageGPT's kmeans_centers.npy: (c + 1) / 2)")
    g.add_argument("--fit-palette", action="store_true", help="fit one palette to all images")
    s.add_argument("--colors", type=_int_in(1, 65536), default=16,
                   help="colours per image, or of the fitted palette (default: 16; at most "
                        "256 for png)")
    s.add_argument("--space", choices=("lab", "oklab", "srgb"), default="lab",
                   help="colour space for matching (default: lab)")
    s.add_argument("--dither", choices=("none", "ordered", "floyd-steinberg"), default="none",
                   help="dithering: ordered (pattern) or floyd-steinberg (error diffusion)")
    s.add_argument("--dither-strength", type=_unit, default=1.0, metavar="S",
                   help="0..1: how much of each pixel's error the dither mixes in (default: 1)")
    s.add_argument("--batch-size", type=_int_in(1, 65536), default=32, help="images per batch")
    s.add_argument("--workers", type=_int_in(0, 256), default=min(8, os.cpu_count() or 1),
                   help="DataLoader decode workers, 0 = decode in this process (default: "
                        "min(8, CPUs))")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--optimize", action="store_true",
                   help="smallest PNGs (zlib level 9 and a search: ~20x slower encoding)")
    add_token_arguments(s, _int_in)
    s.add_argument("--timings", action="store_true", help=argparse.SUPPRESS)  # always printed
    device(s)
    s.epilog = (s.epilog or "") + "\n" + QUANTIZE_NOTES
