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
import re
import sys
import traceback
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

import torchpalette as tp

from .errors import UsageError, one_line
from .palette_files import FORMATS, format_palettes, load_palette  # noqa: F401 (re-exported)
from .quantize_cmd import add_quantize_arguments
from .terminal import color_mode as _use_color
from .terminal import swatches

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
    rows = [(str(p), c, w) for p, (c, w) in zip(paths, res, strict=True)]
    print(format_palettes(rows, args.format))
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
    ha, hb = tp.to_hex(a), tp.to_hex(b)
    if args.format == "json":
        print(json.dumps({"a": ha, "b": hb, "method": args.method, "delta_e": d,
                          "jnd": tp.JND, "under_jnd": under}))
    else:
        verdict = ("under the JND: hardly distinguishable" if under
                   else "above the JND: visibly different")
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
    dom = swatches(rep.dominant_sorted, use_color=use_color)
    pal = swatches(rep.palette_sorted, use_color=use_color)
    print(f"dominant colours ({len(rep.dominant)}): {dom}")
    print(f"k-means palette ({len(rep.palette)}): {pal}")
    for note in rep.notes:
        print(f"note: {note}")
    n_close = int((rep.dominant_de < tp.JND).sum())
    print(f"sorted dominant neighbours under the JND ({tp.JND}): {n_close}")
    for r in rep.reductions:
        print(f"  {r.colors:2d} colours: mean dE00 {r.mean_de:6.2f}, indexed PNG "
              f"{r.png_bytes / 1024:7.1f} KiB (original {rep.original_bytes / 1024:.1f} KiB)")
    return 0


# ----------------------------------------------------------------------------- quantize
def cmd_quantize(args) -> int:
    """``torchpalette quantize``: see :mod:`torchpalette.cli.quantize_cmd`."""
    from .quantize_cmd import run_quantize

    return run_quantize(args)


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
    s.add_argument("--bins", type=_int_in(1, 256), default=16,
                   help="bins per channel (default: 16)")
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
    add_quantize_arguments(s, _int_in, device)
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
