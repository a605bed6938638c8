"""Compiled layers across image sizes (issue 23): compile time of the first call, recompiles
over the sizes that follow, and steady-state images/s compiled vs eager at each size.

Each layer is wrapped once in ``torch.compile(layer, fullgraph=True, dynamic=True)``; the
first call (B=4, 64x72) pays the compile; then 8 further sizes from 48x56 to 160x168 run once
to warm (counting recompiles with dynamo's counters) and are timed (median of ``--repeats``)
beside the eager layer. Crops of the bundled photo, float32, CPU.

Usage: ``python benchmarks/bench_layers_sizes.py [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch._dynamo.utils import counters

import torchpalette as tp
from _common import median_seconds, report_machine, warn_if_busy  # noqa: E402
from bench_layers import crops  # noqa: E402

SIZES = [(48, 56), (80, 88), (96, 104), (112, 120), (128, 136), (144, 152), (160, 168),
         (72, 200)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    busy = report_machine()
    warnings.simplefilter("ignore")
    pal = tp.palette(crops(1, 224, "cpu"), 16).colors
    layers = {
        "PaletteQuantizer": lambda: tp.nn.PaletteQuantizer(pal.clone()),
        "ColorQuantizer(16)": lambda: tp.nn.ColorQuantizer(16),
    }
    b = 4
    for name, make in layers.items():
        eager = make()
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(make(), fullgraph=True, dynamic=True)
        first = crops(b, 224, "cpu")[..., :64, :72]
        t0 = time.perf_counter()
        compiled(first)
        compile_s = time.perf_counter() - t0
        frames0 = counters["stats"]["unique_graphs"]
        print(f"\n{name}: first call (compile) {compile_s:.1f} s, graphs {frames0}")
        print(f"{'H x W':>10}{'eager img/s':>13}{'compiled img/s':>16}{'ratio':>8}")
        for h, w in SIZES:
            x = crops(b, 224, "cpu")[..., :h, :w].contiguous()
            te = median_seconds(lambda x=x: eager(x), args.repeats, warmup=lambda x=x: eager(x))
            tc = median_seconds(lambda x=x: compiled(x), args.repeats,
                                warmup=lambda x=x: compiled(x))
            print(f"{h:>5} x {w:<4}{b / te:>13.1f}{b / tc:>16.1f}{te / tc:>7.2f}x")
        extra = counters["stats"]["unique_graphs"] - frames0
        print(f"graphs compiled after the first call, over {len(SIZES)} sizes: {extra}")
    warn_if_busy(busy)


if __name__ == "__main__":
    main()
