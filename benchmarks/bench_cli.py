"""End-to-end dataset quantization: `torchpalette quantize` vs a plain Pillow loop.

Generates N photo-like 512x512 JPEGs (smooth gradients, blobs, noise), then times, in one run:

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


def machine_busy(seconds: float = 0.5) -> float:
    """Fraction of CPU time spent busy over ``seconds`` (from /proc/stat), or -1 if unknown."""
    def read():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        return sum(vals), vals[3] + vals[4]  # total, idle + iowait

    try:
        t0, i0 = read()
        time.sleep(seconds)
        t1, i1 = read()
    except OSError:
        return -1.0
    return 1.0 - (i1 - i0) / max(t1 - t0, 1)


def make_images(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` photo-like JPEGs in two nested folders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = rng.uniform(0, 255, (3, 3))
        img = base[:, 0, None, None] + base[:, 1, None, None] * xx + base[:, 2, None, None] * yy
        for _ in range(6):  # soft blobs
            cx, cy, r = rng.uniform(0, 1, 3) * (1, 1, 0.3) + (0, 0, 0.05)
            mask = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
            img = img * (1 - mask) + rng.uniform(0, 255, (3, 1, 1)) * mask
        img = img + rng.normal(0, 6, img.shape)
        arr = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
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
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    if args.quick:
        args.n, args.size = 24, 128

    busy = machine_busy()
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    if busy > 0.15:
        print(f"WARNING: machine is busy ({100 * busy:.0f}% CPU in use before timing): "
              "timings are not valid")
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
        for name, secs, de, _ in rows:
            rate = args.n / secs
            print(f"{name:40s} {secs:8.2f} {rate:9.1f} {rate / base:9.2f}x {de:10.2f}")
        for name, _, _, split in rows:
            if split:
                print(f"{name}: {split}")
        if busy > 0.15:
            print("WARNING: machine was busy: timings are not valid")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
