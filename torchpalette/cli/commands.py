"""The ``torchpalette`` command: colour reports, palettes, colour difference and resumable
dataset quantization.

Every subcommand is a short function over the public API. Results go to stdout, errors to
stderr as one line (``--debug`` shows the traceback). Exit status: 0 success, 1 a failure (an
unreadable image, a failed write), 2 bad usage (missing file, bad option value, DST inside SRC).

``quantize`` is a thin layer over :mod:`torchpalette.cli.folder` (plan, shard, resume, decode,
quantize, atomic writes); under ``torchrun`` :mod:`torchpalette.cli.torchrun` gives each rank a
disjoint shard and rank 0 the progress bar and summary of all ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

import torchpalette as tp

from .errors import UsageError, one_line
from .palette_files import FORMATS, format_palettes, load_palette, rgb255

if TYPE_CHECKING:  # the folder pipeline, torchrun glue and report load only for their commands
    from .folder import Plan, QuantizeStats

_FOLDER_NAMES = {"Job", "QuantizeStats", "list_images", "plan_jobs", "pending_jobs", "run_jobs",
                 "shard", "fit_palette"}


def __getattr__(name: str):
    """The folder pipeline's names, re-exported here without importing it at start-up."""
    if name in _FOLDER_NAMES:
        from . import folder

        return getattr(folder, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- helpers
def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an int in [{low}, {high}], got {value}")
        return value

    return parse


def _device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device: expected a usable device, got {name!r} (CUDA not available)")
    return torch.device(name)


def _existing_file(path: str, name: str = "IMAGE") -> Path:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{name}: expected an existing file, got {path!r}")
    return p


def _use_color(stream) -> bool:
    """Truecolor escapes only where asked for (FORCE_COLOR) or where the terminal says so."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    tty = getattr(stream, "isatty", lambda: False)()
    return tty and os.environ.get("COLORTERM", "").lower() in ("truecolor", "24bit")


def swatches(colors: Tensor, *, use_color: bool, width: int = 2) -> str:
    """Colours ``[K, 3]`` as one line: truecolor blocks, or space-separated hex codes."""
    if not use_color:
        return " ".join(tp.to_hex(colors.detach().float().cpu()))
    rgbs = rgb255(colors)
    return "".join(f"\x1b[48;2;{r};{g};{b}m{' ' * width}" for r, g, b in rgbs) + "\x1b[0m"


# ----------------------------------------------------------------------------- commands
def _batched_palettes(paths, compute, device) -> list[tuple[Tensor, Tensor]]:
    """Decode ``paths`` and run ``compute`` once per group of equal-shaped images."""
    images = [tp.read_image(p) for p in paths]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[tuple(img.shape)].append(i)
    results: list = [None] * len(images)
    for members in groups.values():
        pal = compute(torch.stack([images[i] for i in members]).to(device))
        for j, i in enumerate(members):
            results[i] = (pal.colors[j].cpu(), pal.weights[j].cpu())
    return results


def cmd_palette(args) -> int:
    paths = [_existing_file(p) for p in args.images]
    device = resolve_device(args.device)
    res = _batched_palettes(
        paths, lambda x: tp.palette(x, k=args.k, space=args.space, seed=args.seed),
        device)
    print(format_palettes([(str(p), c, w) for p, (c, w) in zip(paths, res)], args.format))
    return 0


def cmd_dominant(args) -> int:
    path = _existing_file(args.image)
    device = resolve_device(args.device)
    (c, w), = _batched_palettes(
        [path], lambda x: tp.dominant_colors(x, top_n=args.top_n, bins=args.bins), device)
    print(format_palettes([(str(path), c, w)], args.format))
    return 0


def _parse_color_arg(text: str) -> Tensor:
    spec: object = text
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        try:
            spec = tuple(int(p) for p in parts)
        except ValueError:
            raise UsageError(f"COLOR: expected hex, a colour name or r,g,b, got {text!r}") from None
    try:
        return tp.parse_colors([spec])[0]
    except (ValueError, TypeError) as exc:
        raise UsageError(f"COLOR: {exc}") from None


def cmd_delta_e(args) -> int:
    a, b = (_parse_color_arg(c) for c in args.colors)
    d = float(tp.delta_e(a, b, method=args.method))
    under = d < tp.JND
    ha, hb = tp.to_hex(torch.stack([a, b]))
    if args.format == "json":
        print(json.dumps({"a": ha, "b": hb, "method": args.method, "delta_e": d,
                          "jnd": tp.JND, "under_jnd": under}))
    else:
        verdict = "under the JND: hardly distinguishable" if under else "above the JND: visibly different"
        print(f"delta E ({args.method}) {ha} {hb} = {d:.4f} ({verdict}, JND = {tp.JND})")
    return 0


def cmd_report(args) -> int:
    from . import report as report_mod

    path = _existing_file(args.image) if args.image else report_mod.SAMPLE
    out = Path(args.output)
    if not args.force:
        report_mod.check_can_write(out)  # raises FileExistsError before any work is done
    device = resolve_device(args.device)
    rep = report_mod.make_report(path, top_n=args.top_n, colors=args.colors, device=device)
    report_mod.write_report(rep, out, force=args.force)
    use_color = _use_color(sys.stdout)
    print(f"{path.name}: {rep.width}x{rep.height}, report written to {out}")
    print(f"dominant colours ({len(rep.dominant)}): {swatches(rep.dominant_sorted, use_color=use_color)}")
    print(f"k-means palette ({len(rep.palette)}): {swatches(rep.palette_sorted, use_color=use_color)}")
    n_close = int((rep.dominant_de < tp.JND).sum())
    print(f"sorted dominant neighbours under the JND ({tp.JND}): {n_close}")
    for r in rep.reductions:
        print(f"  {r.colors:2d} colours: mean dE00 {r.mean_de:6.2f}, indexed PNG "
              f"{r.png_bytes / 1024:7.1f} KiB (original {rep.original_bytes / 1024:.1f} KiB)")
    return 0


# ----------------------------------------------------------------------------- quantize
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
                     fixed=None if fixed is None else fixed.to(device))


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


def cmd_quantize(args) -> int:
    """Quantize SRC's tree into DST; under torchrun each rank does a disjoint shard, rank 0
    prints the summary of all ranks, and every rank returns the same exit status."""
    import contextlib

    from . import torchrun
    from .folder import DstLock, pending_jobs, plan_jobs, run_jobs, shard
    from .plan import say_waiting

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
"""


# ----------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints the usage too)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from torchpalette import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="torchpalette", formatter_class=fmt,
                description="Colour palettes, dominant colours, colour difference and colour "
                            "reduction with PyTorch.",
                epilog="Example:\n  torchpalette report photo.jpg -o photo.html")
    p.add_argument("--version", action="version", version=f"torchpalette {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def cmd(name, func, help, example):
        s = sub.add_parser(name, help=help, description=help, formatter_class=fmt,
                           epilog=f"Example:\n  {example}")
        s.set_defaults(func=func)
        s.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks of errors")
        return s

    def device(s):
        s.add_argument("--device", type=_device_name, default="auto",
                       help="auto (cuda when available), cpu, cuda or cuda:N (default: auto)")

    s = cmd("report", cmd_report, "write the whole colour analysis of an image as one HTML file",
            "torchpalette report photo.jpg -o photo-report.html")
    s.add_argument("image", nargs="?", metavar="IMAGE", help="image file (default: the sample)")
    s.add_argument("-o", "--output", default="torchpalette-report.html", help="HTML file to write")
    s.add_argument("--top-n", type=_int_in(1, 4096), default=32, help="dominant colours shown")
    s.add_argument("--colors", type=_int_in(1, 256), default=32, help="k-means palette size")
    s.add_argument("--force", action="store_true", help="overwrite a file that is not a report")
    device(s)

    s = cmd("palette", cmd_palette, "k-means palette of one or more images",
            "torchpalette palette a.jpg b.png -k 8 --format json > palettes.json")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    s.add_argument("-k", type=_int_in(1, 256), default=8, help="colours per palette (default: 8)")
    s.add_argument("--format", choices=FORMATS, default="hex", help="output format (default: hex)")
    s.add_argument("--space", choices=("lab", "oklab", "srgb"), default="lab",
                   help="clustering colour space (default: lab)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    device(s)

    s = cmd("dominant", cmd_dominant, "most frequent colours of an image (3-D histogram)",
            "torchpalette dominant photo.jpg --top-n 10 --format gpl > photo.gpl")
    s.add_argument("image", metavar="IMAGE", help="image file")
    s.add_argument("--top-n", type=_int_in(1, 4096), default=32, help="colours (default: 32)")
    s.add_argument("--bins", type=_int_in(1, 256), default=16, help="bins per channel (default: 16)")
    s.add_argument("--format", choices=FORMATS, default="hex", help="output format (default: hex)")
    device(s)

    s = cmd("delta-e", cmd_delta_e, "colour difference of two colours and the JND verdict",
            "torchpalette delta-e '#ff8800' 255,140,0 --method ciede2000")
    s.add_argument("colors", nargs=2, metavar="COLOR", help="#rrggbb, a CSS name, or r,g,b")
    s.add_argument("--method", choices=("ciede2000", "cie94", "cie76", "cmc"), default="ciede2000",
                   help="formula (default: ciede2000)")
    s.add_argument("--format", choices=("text", "json"), default="text", help="output format")

    s = cmd("quantize", cmd_quantize, "reduce the colours of every image in a folder tree to "
            "indexed PNGs (resumable)", "torchpalette quantize photos/ photos-16/ --colors 16 "
            "--device cuda --workers 8")
    s.add_argument("src", metavar="SRC", help="folder of images (read only)")
    s.add_argument("dst", metavar="DST", help="output folder (mirrors SRC; outside SRC)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--palette", metavar="FILE", help="fixed palette: JSON of `palette`, .gpl or hex")
    g.add_argument("--fit-palette", action="store_true", help="fit one palette to all images")
    s.add_argument("--colors", type=_int_in(1, 256), default=16,
                   help="colours per image, or of the fitted palette (default: 16)")
    s.add_argument("--space", choices=("lab", "oklab", "srgb"), default="lab",
                   help="colour space for matching (default: lab)")
    s.add_argument("--dither", choices=("none", "ordered"), default="none", help="dithering")
    s.add_argument("--batch-size", type=_int_in(1, 65536), default=32, help="images per batch")
    s.add_argument("--workers", type=_int_in(0, 256), default=min(8, os.cpu_count() or 1),
                   help="DataLoader decode workers, 0 = decode in this process (default: "
                        "min(8, CPUs))")
    s.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    s.add_argument("--overwrite", action="store_true", help="redo outputs that exist")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--optimize", action="store_true",
                   help="smallest PNGs (zlib level 9 and a search: ~20x slower encoding)")
    s.add_argument("--timings", action="store_true", help=argparse.SUPPRESS)  # always printed
    device(s)
    s.epilog = (s.epilog or "") + "\n" + QUANTIZE_NOTES
    return p


def _rank_in_env() -> int | None:
    from . import torchrun

    try:
        env = torchrun.env_ranks()
    except ValueError:
        return None
    return None if env is None else env[0]


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``torchpalette`` and ``python -m torchpalette``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except (UsageError, FileExistsError) as exc:
        if args.debug:
            traceback.print_exc()
        if _rank_in_env() in (None, 0):  # every rank finds the same usage error: say it once
            print(f"torchpalette {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"torchpalette {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        rank = _rank_in_env()
        where = "" if rank is None else f" (rank {rank})"
        print(f"torchpalette {args.command}: error{where}: {one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
