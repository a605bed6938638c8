"""``torchpalette quantize --format tokens|npy``: its options and its run (the work is in
:mod:`~torchpalette.cli.tokens_run`); kept apart from the PNG mirror's command so each reads on
its own. Heavy modules load inside the functions, so ``--help`` never imports them."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .palette_files import load_palette

if TYPE_CHECKING:
    from .pipeline import QuantizeStats


SHARD_SIZE = 1000


def check_format_options(args) -> None:
    """Exit 2 (``UsageError`` naming the option) for an option the chosen ``--format`` or SRC
    does not use, rather than ignoring it; fills in the token defaults."""
    png_only = {"--optimize": args.optimize}
    token_only = {"--shard-size": args.shard_size is not None,
                  "--shard-bytes": args.shard_bytes is not None,
                  "--image-column": args.image_column is not None}
    if args.format == "png":
        bad = [o for o, given in token_only.items() if given]
        want = "--format tokens (--image-column: also npy)"
    else:
        bad = [o for o, given in png_only.items() if given]
        if args.format == "npy":
            bad += [o for o in ("--shard-size", "--shard-bytes") if token_only[o]]
        want = "--format png" if bad and bad[0] == "--optimize" else "--format tokens"
    if bad:
        raise UsageError(f"{bad[0]}: expected with {want}, got --format {args.format}")
    if args.format == "png":
        return
    if args.image_column is not None:
        from .sources import source_kind

        if source_kind(args.src) not in ("parquet", "arrow"):
            raise UsageError(f"--image-column: expected a Parquet or saved Hugging Face "
                             f"dataset SRC, got {args.src!r}")
    # npy: ranks take units of --batch-size samples in turn (one array, no shards)
    args.shard_size = args.batch_size if args.format == "npy" else args.shard_size or SHARD_SIZE
    args.image_column = args.image_column or "image"


def run_token_format(args) -> tuple[QuantizeStats, int, int, list[str]]:
    """``--format tokens|npy`` (:mod:`torchpalette.cli.tokens_run`): SRC a folder, tar
    shards, Parquet or a saved Hugging Face dataset; ranks take disjoint units. Returns
    ``(stats of all ranks, rank, world size, orphans)`` for the caller's summary."""
    from . import torchrun
    from .dstdir import DstDir, say_waiting
    from .options import resolve_device
    from .quantizers import Quantizer
    from .tokens_run import run_tokens

    check_format_options(args)
    dst = Path(args.dst)
    if dst.exists() and not dst.is_dir():
        raise UsageError(f"DST: expected a folder, got the file {str(dst)!r}")
    fixed = None if args.palette is None else load_palette(Path(args.palette), 65536)
    with torchrun.session(resolve_device(args.device)) as (ranks, device):
        rank, world = (0, 1) if ranks is None else (ranks.rank, ranks.world_size)
        dst.mkdir(parents=True, exist_ok=True)
        home = DstDir(dst, say_waiting)
        with home if rank == 0 else contextlib.nullcontext():
            if rank == 0:
                home.clean_temp()  # leftovers of a killed run
            if ranks is not None:
                ranks.barrier()
            quantizer = Quantizer(args.colors, space=args.space, dither=args.dither,
                                  seed=args.seed, dither_strength=args.dither_strength)
            stats, orphans = run_tokens(args, quantizer, device, ranks, fixed)
            if ranks is not None:
                stats = ranks.gather_stats(stats)
        return stats, rank, world, orphans


def shard_bytes(text: str) -> int:
    """``--shard-bytes``: an int with an optional K/M/G suffix (powers of 1000)."""
    m = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)[bB]?\s*", text)
    if m is None or int(m.group(1)) < 1:
        raise argparse.ArgumentTypeError(f"expected a size like 500M, got {text!r}")
    return int(m.group(1)) * 1000 ** " kmg".index(m.group(2).lower() or " ")


def add_token_arguments(s: argparse.ArgumentParser, int_in: Callable) -> None:
    """The options of ``--format tokens|npy`` (``int_in``: the parser's int range helper)."""
    s.add_argument("--format", choices=("png", "tokens", "npy"), default="png",
                   help="png: indexed PNG mirror (default); tokens: WebDataset shards of "
                        "palette indices; npy: one [N, H, W] array (same-size images)")
    s.add_argument("--shard-size", type=int_in(1, 1 << 30), default=None,
                   help=f"tokens: samples per output shard (default: {SHARD_SIZE})")
    s.add_argument("--shard-bytes", type=shard_bytes, default=None,
                   help="tokens: also start a new shard part past this size (e.g. 500M)")
    s.add_argument("--image-column", default=None,
                   help="tokens/npy from Parquet or a saved Hugging Face dataset: the column "
                        "of encoded images (default: image)")
