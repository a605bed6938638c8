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
import sys
import traceback
import warnings
from collections import defaultdict
from pathlib import Path
from typing import NoReturn

import torch
from torch import Tensor

import torchpalette as tp

from .errors import UsageError, one_line
from .options import SEED, add_device, existing_file, int_in, resolve_device, shown
from .palette_files import FORMATS, format_palettes
from .quantize_args import add_quantize_arguments
from .terminal import color_mode as _use_color
from .terminal import swatches


# ----------------------------------------------------------------------------- commands
def _batched_palettes(paths, compute, device) -> list[tuple[Tensor, Tensor] | str]:
    """Decode ``paths`` and run ``compute`` once per group of equal-shaped images; a file that
    cannot be read or computed gives its one-line error instead of a palette."""
    results: list = [None] * len(paths)
    groups: dict[tuple[int, ...], list[tuple[int, Tensor]]] = defaultdict(list)
    for i, p in enumerate(paths):
        try:
            img = tp.read_image(p)
            groups[tuple(img.shape)].append((i, img))
        except (ValueError, OSError) as exc:
            results[i] = one_line(exc)
    for members in groups.values():
        try:
            pal = compute(torch.stack([img for _, img in members]).to(device))
        except (ValueError, RuntimeError) as exc:
            for i, _ in members:
                results[i] = one_line(exc)
            continue
        for j, (i, _) in enumerate(members):
            results[i] = (pal.colors[j].cpu(), pal.weights[j].cpu())
    return results


def _print_palettes(paths: list[Path], results, fmt: str) -> int:
    """The good files' palettes to stdout, the bad files to stderr; exit 1 if any is bad."""
    good = [(str(p), *r) for p, r in zip(paths, results, strict=True) if not isinstance(r, str)]
    if good:
        print(format_palettes(good, fmt))
    bad = [(p, r) for p, r in zip(paths, results, strict=True) if isinstance(r, str)]
    for p, why in bad:
        print(f"failed: {shown(str(p))}: {why}", file=sys.stderr)
    return 1 if bad else 0


def cmd_palette(args) -> int:
    paths = [existing_file(p) for p in args.images]  # a missing file is bad usage
    device = resolve_device(args.device)
    with warnings.catch_warnings(record=True) as caught:  # notes, not raw warning lines
        warnings.simplefilter("always")
        res = _batched_palettes(
            paths, lambda x: tp.palette(x, k=args.k, space=args.space, seed=args.seed), device)
    _print_notes(caught)
    return _print_palettes(paths, res, args.format)


def _print_notes(caught) -> None:
    for text in sorted({str(w.message) for w in caught}):
        print(f"note: {text}", file=sys.stderr)


def cmd_dominant(args) -> int:
    path = existing_file(args.image)
    device = resolve_device(args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = _batched_palettes(
            [path], lambda x: tp.dominant_colors(x, top_n=args.top_n, bins=args.bins), device)
    _print_notes(caught)
    return _print_palettes([path], res, args.format)


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

    path = existing_file(args.image) if args.image else report_mod.SAMPLE
    out = Path(args.output)
    if not out.parent.is_dir():  # before any work: the analysis may take a while
        raise UsageError(f"-o/--output: expected a file in an existing folder, got "
                         f"{args.output!r} (no folder {str(out.parent)!r})")
    if not args.force:
        report_mod.check_can_write(out)  # raises FileExistsError before any work is done
    device = resolve_device(args.device)
    rep = report_mod.make_report(path, top_n=args.top_n, colors=args.colors, device=device)
    report_mod.write_report(rep, out, force=args.force)
    use_color = _use_color(sys.stdout)
    print(f"{path.name}: {rep.width}x{rep.height}, report written to {out}")
    dom, pal = (swatches(c, use_color=use_color) for c in (rep.dominant_sorted, rep.palette_sorted))
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

    device = add_device
    s = cmd("report", cmd_report, "write the whole colour analysis of an image as one HTML file",
            "torchpalette report photo.jpg -o photo-report.html")
    s.add_argument("image", nargs="?", metavar="IMAGE", help="image file (default: the sample)")
    s.add_argument("-o", "--output", default="torchpalette-report.html", help="HTML file to write")
    s.add_argument("--top-n", type=int_in(1, 4096), default=32, help="dominant colours shown")
    s.add_argument("--colors", type=int_in(1, 256), default=32, help="k-means palette size")
    s.add_argument("--force", action="store_true", help="overwrite a file that is not a report")
    device(s)

    s = cmd("palette", cmd_palette, "k-means palette of one or more images",
            "torchpalette palette a.jpg b.png -k 8 --format json > palettes.json")
    s.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    s.add_argument("-k", type=int_in(1, 256), default=8, help="colours per palette (default: 8)")
    s.add_argument("--format", choices=FORMATS, default="hex", help="output format (default: hex)")
    s.add_argument("--space", choices=("lab", "oklab", "srgb"), default="lab",
                   help="clustering colour space (default: lab)")
    s.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    device(s)

    s = cmd("dominant", cmd_dominant, "most frequent colours of an image (3-D histogram)",
            "torchpalette dominant photo.jpg --top-n 10 --format gpl > photo.gpl")
    s.add_argument("image", metavar="IMAGE", help="image file")
    s.add_argument("--top-n", type=int_in(1, 4096), default=32, help="colours (default: 32)")
    s.add_argument("--bins", type=int_in(1, 256), default=16, help="bins per channel (default: 16)")
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
    add_quantize_arguments(s)
    return p


def _rank_in_env() -> int | None:
    from . import torchrun

    try:
        env = torchrun.env_ranks()
    except ValueError:
        return None
    return None if env is None else env[0]


def _show_warning(command: str):
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"torchpalette {command}: warning: {' '.join(str(message).split())}",
              file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``torchpalette`` and ``python -m torchpalette``; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 2
    try:
        with warnings.catch_warnings():  # one plain line each, never a library path
            warnings.showwarning = _show_warning(args.command)
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


def run() -> NoReturn:
    """The ``torchpalette`` console command and ``python -m torchpalette``: exit with
    :func:`main`'s status. A rank started by ``torchrun`` leaves through ``os._exit`` once its
    output is flushed (its files are closed and its process group destroyed by then): the
    interpreter's teardown can abort a finished gloo rank (SIGABRT, "terminate called without
    an active exception", when gloo's threads release tensors during finalization), which
    would turn a complete run into a failed one."""
    code = main()
    if _rank_in_env() is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
