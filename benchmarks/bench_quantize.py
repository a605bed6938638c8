"""tp.quantize: the output image and its palette indices from one call, against the two calls
they took before it (``reduce_colors`` or ``apply_palette`` for the image, then
``palette``/``palette_indices`` for the indices: a second validation and a second search).

Batches of 224x224 crops of the bundled photo, uint8 and float32, an own 16-colour palette and
a given one. Prints ms per batch, the ratio (two calls / one call) and the index bytes.

Usage: ``python benchmarks/bench_quantize.py [--batch 8] [--repeats 7]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import torchpalette as tp
from _common import median_seconds, report_machine, warn_if_busy  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "torchpalette" / "data" / "astronaut.jpg"


def crops(b: int, size: int = 224) -> torch.Tensor:
    img = tp.read_image(SAMPLE)
    g = torch.Generator().manual_seed(0)
    h, w = img.shape[-2:]
    ys = torch.randint(0, h - size + 1, (b,), generator=g).tolist()
    xs = torch.randint(0, w - size + 1, (b,), generator=g).tolist()
    return torch.stack([img[:, y : y + size, x : x + size] for y, x in zip(ys, xs, strict=True)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    busy = report_machine()
    fixed = tp.palette(crops(1), 16).colors
    print(f"\nbatch {args.batch} x 224x224, k=16; ms per batch (median of {args.repeats})")
    print(f"{'case':<28}{'two calls':>11}{'tp.quantize':>13}{'ratio':>8}{'index bytes':>14}")
    for dtype in (torch.uint8, torch.float32):
        x = crops(args.batch)
        x = x if dtype == torch.uint8 else x.float() / 255
        name = "uint8" if dtype == torch.uint8 else "float32"

        def own_two() -> None:
            tp.reduce_colors(x, 16)
            tp.palette_indices(x, tp.palette(x, 16).colors)

        def own_one() -> None:
            q = tp.quantize(x, 16)
            q.image()

        def given_two() -> None:
            tp.apply_palette(x, fixed)
            tp.palette_indices(x, fixed)

        def given_one() -> None:
            q = tp.quantize(x, palette=fixed)
            q.image()

        idx_bytes = tp.quantize(x, 16).indices.element_size()
        for case, two, one in ((f"own palette, {name}", own_two, own_one),
                               (f"given palette, {name}", given_two, given_one)):
            t2 = median_seconds(two, args.repeats, warmup=two)
            t1 = median_seconds(one, args.repeats, warmup=one)
            print(f"{case:<28}{1e3 * t2:>11.1f}{1e3 * t1:>13.1f}{t2 / t1:>7.2f}x"
                  f"{idx_bytes:>9} (was 8)")
    warn_if_busy(busy)


if __name__ == "__main__":
    main()
