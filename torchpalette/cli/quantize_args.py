"""The options of ``torchpalette quantize`` and the notes of its ``--help``."""

from __future__ import annotations

import argparse
import os

from .decode import DEFAULT_QUEUE_MIB
from .options import SEED, add_device, int_in, unit
from .tokens_cmd import add_token_arguments

QUANTIZE_NOTES = """
Outputs mirror SRC under DST as indexed PNGs (a.jpg -> a.png). Names that would clash,
compared case-insensitively (a.png, a.PNG; b.jpg, b.png, b.jpg.png), or that a mirrored
folder takes (a.jpg beside a folder a.png/), are made unique up front: a source named exactly
like its output keeps it, the others take their full name + .png (a.PNG.png), then ~2, ~3...
(b.jpg~2.png); the summary lists the renamed ones.
DST holds the outputs and one hidden folder, DST/.torchpalette/ (lock, provenance record,
temp files). An output is finished when the record says it came from the same source (path,
size, mtime; content too with --hash) with the same options; anything else is redone (the
summary says why). Outputs whose source is gone are listed, kept unless --delete-orphans.
DST may not overlap SRC (inside it, holding it, or through a symlink): exit 2 before any work.
A second run on the same DST waits for the first. Each failing file is listed (exit 1).
Every file is decided: image suffixes are decoded, others listed as skipped with the reason;
hidden files are counted. Animated and multi-page images (GIF, APNG, WebP, TIFF): the first
frame, with a note. Directory symlinks are followed once, after the real folders, so a real
folder keeps its own name. RGBA images get palette entries with alpha (--colors counts them);
a fixed palette keeps transparency (one entry reserved for it).

--format tokens writes WebDataset shards (DST/shard-000000.tar...): per sample <key>.idx.npy
(uint8 indices, uint16 past 256 colours), <key>.json and, without --palette/--fit-palette,
<key>.palette.npy; else one DST/palette.npy + palette.json. A WebDataset sample's other
members pass through. Shards appear only when complete; a re-run redoes only the shards not
finished, or whose sources or options changed (a redone shard replaces the old by rename).
Samples whose source is gone: a shard of only those is kept unless --delete-orphans; one in a
shard to rewrite stops the run (exit 2) unless --delete-orphans.
--format npy writes indices.npy [N, H, W] (same-size images), keys.json and the palette(s);
under torchrun rank 0 joins the ranks' rows. SRC may be a folder, .tar shards, .parquet
files or a datasets.Dataset.save_to_disk folder. Options a format does not use exit 2.
"""


def add_quantize_arguments(s: argparse.ArgumentParser) -> None:
    """The options of ``quantize``."""
    s.add_argument("src", metavar="SRC", help="folder of images (read only); with --format "
                   "tokens|npy also WebDataset .tar shards (a glob, a::b or "
                   "shard-{000..127}.tar), .parquet files or a saved Hugging Face dataset")
    s.add_argument("dst", metavar="DST", help="output folder (mirrors SRC; outside SRC)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--palette", metavar="FILE",
                   help="fixed palette: JSON of `palette`, .gpl, hex, or .npy [K, 3] (uint8, or "
                        "float in [-1, 1] as ImageGPT's kmeans_centers.npy: (c + 1) / 2)")
    g.add_argument("--fit-palette", action="store_true", help="fit one palette to all images")
    s.add_argument("--colors", type=int_in(1, 65536), default=16,
                   help="colours per image, or of the fitted palette (default: 16; at most "
                        "256 for png)")
    s.add_argument("--space", choices=("lab", "oklab", "srgb"), default="lab",
                   help="colour space for matching (default: lab)")
    s.add_argument("--dither", choices=("none", "ordered", "floyd-steinberg"), default="none",
                   help="dithering: ordered (pattern) or floyd-steinberg (error diffusion)")
    s.add_argument("--dither-strength", type=unit, default=1.0, metavar="S",
                   help="0..1: how much of each pixel's error the dither mixes in (default: 1; "
                        "edges and texture always dither less)")
    s.add_argument("--batch-size", type=int_in(1, 65536), default=32, help="images per batch")
    s.add_argument("--workers", type=int_in(0, 256), default=min(8, os.cpu_count() or 1),
                   help="decode worker processes, 0 = decode in this process (default: "
                        "min(8, CPUs))")
    s.add_argument("--queue-mib", type=int_in(16, 1 << 20), default=DEFAULT_QUEUE_MIB,
                   help=f"decoded images waiting for the quantizer, at most this many MiB "
                        f"(default: {DEFAULT_QUEUE_MIB})")
    s.add_argument("--max-pixels", type=int_in(0, 1 << 62), default=None,
                   help="refuse larger images (default: Pillow's decompression-bomb limit, "
                        "~89.5 MP; 0 = no limit)")
    s.add_argument("--seed", type=SEED, default=0, help="random seed (default: 0)")
    s.add_argument("--overwrite", action="store_true", help="redo every output")
    s.add_argument("--hash", action="store_true",
                   help="also compare source contents (BLAKE2b) to decide what is stale")
    s.add_argument("--delete-orphans", action="store_true",
                   help="delete outputs whose source is gone (default: list and keep them)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--optimize", action="store_true",
                   help="png: smallest PNGs (zlib level 9 and a search: ~20x slower encoding)")
    add_token_arguments(s, int_in)
    s.add_argument("--timings", action="store_true", help=argparse.SUPPRESS)  # always printed
    add_device(s)
    s.epilog = (s.epilog or "") + "\n" + QUANTIZE_NOTES
