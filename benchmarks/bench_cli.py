"""End-to-end dataset quantization: `torchpalette quantize` vs a plain Pillow loop.

Generates N photo-like 512x512 JPEGs (random crops, flips and colour changes of the bundled
sample photo), then times, in one run:

* Pillow: for each file ``Image.open -> convert("RGB") -> quantize(16) -> save(PNG)``;
* ``torchpalette quantize SRC DST --colors 16 --device cpu`` as a subprocess (start-up
  included), and on CUDA when available ``--device cuda``, with the command's own
  decode / quantize / encode split (``--timings``).

Both write indexed PNGs. Quality: mean CIEDE2000 of the output to the input over a sample of
the images. Target (issue 7): >= 2x the Pillow loop's images/s on CPU; on GPU, encode/decode
bound.

Usage: python benchmarks/bench_cli.py [--quick] [--n 500] [--size 512] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import torchpalette as tp
from _common import report_machine, warn_if_busy  # noqa: E402  (benchmarks/ is on sys.path)


def make_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` photo-like JPEGs in nested folders: random crops, flips, rotations and colour
    changes (channel order, gamma) of the bundled sample photo, resized to ``size``."""
    rng = np.random.default_rng(seed)
    sample = Image.open(Path(tp.__file__).parent / "data" / "astronaut.jpg").convert("RGB")
    w, h = sample.size
    for i in range(n):
        side = int(rng.uniform(0.35, 1.0) * min(w, h))
        x0, y0 = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
        im = sample.crop((x0, y0, x0 + side, y0 + side)).resize((size, size), Image.BILINEAR)
        im = im.rotate(90 * int(rng.integers(4)))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        arr = np.asarray(im, dtype=np.float32)[..., rng.permutation(3)] / 255.0
        arr = np.clip(arr ** rng.uniform(0.7, 1.4) * 255.0, 0, 255).astype(np.uint8)
        folder = root / f"part{i % 2}" / f"group{i % 5}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / f"img{i:05d}.jpg", quality=90)


def pillow_loop(src: Path, dst: Path, colors: int) -> float:
    t0 = time.perf_counter()
    for path in sorted(src.rglob("*.jpg")):
        out = dst / path.relative_to(src).with_suffix(".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as im:
            im.convert("RGB").quantize(colors).save(out)
    return time.perf_counter() - t0


def torchpalette_cmd(src: Path, dst: Path, colors: int, device: str, workers: int,
                     batch: int) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst), "--colors",
           str(colors), "--device", device, "--workers", str(workers), "--batch-size",
           str(batch), "--quiet", "--timings"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"torchpalette quantize failed: {res.stderr.strip()}")
    return seconds, res.stdout


def mean_de(src: Path, dst: Path, sample: int) -> float:
    files = sorted(src.rglob("*.jpg"))[:sample]
    des = []
    for path in files:
        a = tp.read_image(path)
        b = tp.read_image(dst / path.relative_to(src).with_suffix(".png"))
        pa = a.float().div(255).flatten(1).T
        pb = b[:3].float().div(255).flatten(1).T
        des.append(float(tp.delta_e(pa, pb).mean()))
    return float(np.mean(des))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--colors", type=int, default=16)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--devices", choices=["all", "cpu", "cuda"], default="all",
                   help="which torchpalette devices to time (the Pillow loop always runs)")
    args = p.parse_args()
    if args.quick:
        args.n, args.size = 24, 128

    busy = report_machine()
    root = Path(tempfile.mkdtemp(prefix="bench_cli-"))
    try:
        src = root / "src"
        t0 = time.perf_counter()
        make_images(src, args.n, args.size)
        print(f"generated {args.n} {args.size}x{args.size} JPEGs in {time.perf_counter() - t0:.1f} s")
        rows = []
        sample = min(20, args.n)
        secs = pillow_loop(src, root / "pillow", args.colors)
        rows.append(("Pillow quantize + save loop", secs, mean_de(src, root / "pillow", sample), ""))
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        devices = [d for d in devices if args.devices in ("all", d)]
        for dev in devices:
            secs, out = torchpalette_cmd(src, root / f"tp-{dev}", args.colors, dev, args.workers,
                                         args.batch_size)
            split = re.search(r"timings: (.*)", out)
            rows.append((f"torchpalette quantize --device {dev}", secs,
                         mean_de(src, root / f"tp-{dev}", sample), split.group(1) if split else ""))
        base = args.n / rows[0][1]
        print(f"\n{args.n} images {args.size}x{args.size}, {args.colors} colours, "
              f"workers={args.workers}, batch={args.batch_size} (end to end, start-up included)")
        print(f"{'method':40s} {'seconds':>8s} {'images/s':>9s} {'vs Pillow':>10s} {'mean dE00':>10s}")
        for name, secs, de, split in rows:
            rate = args.n / secs
            print(f"{name:40s} {secs:8.2f} {rate:9.1f} {rate / base:9.2f}x {de:10.2f}")
            wall = re.search(r"wall ([0-9.]+) s", split)
            if wall:  # the command's own wall time, without interpreter and import start-up
                secs = float(wall.group(1))
                rate = args.n / secs
                print(f"{'  (same, excluding start-up)':40s} {secs:8.2f} {rate:9.1f} "
                      f"{rate / base:9.2f}x")
        for name, _, _, split in rows:
            if split:
                print(f"{name}: {split}")
        warn_if_busy(busy)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
