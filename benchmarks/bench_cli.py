"""End-to-end dataset quantization, side by side: `torchpalette quantize` vs pngquant,
libimagequant and Pillow (issue 13).

Generates N photo-like 512x512 crops (random crops, flips, rotations and colour changes of the
bundled sample photo, plus some flat synthetic graphics), saved as a PNG folder and a JPEG
folder, then times in one run, per folder, 16 colours, no dithering unless said:

* ``torchpalette quantize SRC DST --device cpu`` (a subprocess: start-up included; its own
  decode / quantize / encode / idle split is printed), and ``--device cuda`` when available;
* pngquant (``--speed 10 --nofs`` and ``--nofs`` at the default speed), one process per file,
  ``--jobs`` at a time (PNG input only);
* libimagequant (the ``imagequant`` package: Pillow decode, quantize without dithering, Pillow
  save) and Pillow ``quantize(16)`` (median cut) + save, over a process pool of ``--jobs``.

For each: seconds, images/s, CPU milliseconds per image (user + system of all its processes,
start-up included: the figure a busy shared machine distorts least), mean CIEDE2000 of output
vs input over all pixels of a sample of images, and total output bytes. Target (issue 13):
torchpalette on CPU >= pngquant ``--speed 10 --nofs`` images/s with mean ΔE00 at least 0.3
lower and no more bytes.

Usage: python benchmarks/bench_cli.py [--quick] [--n 200] [--size 512] [--jobs N]
       [--formats png,jpg]

``--scale`` runs the dataset-scale figures of issue 21 instead (benchmarks/bench_cli_scale.py):
the provenance record's formats, the planning time of a resume over 100,000 outputs and the
peak memory of the bounded decode queue, beside the code before.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from _common import report_machine, warn_if_busy  # noqa: E402  (benchmarks/ is on sys.path)
from PIL import Image

import torchpalette as tp


def make_images(root: Path, n: int, size: int, fmt: str, seed: int = 0) -> None:
    """``n`` photo-like crops (every 10th a flat synthetic graphic) in nested folders."""
    rng = np.random.default_rng(seed)
    sample = Image.open(Path(tp.__file__).parent / "data" / "astronaut.jpg").convert("RGB")
    w, h = sample.size
    for i in range(n):
        if i % 10 == 9:  # flat shapes on a gradient: few colours, like UI or charts
            yy, xx = np.mgrid[0:size, 0:size] / size
            arr = np.stack([xx * 255, yy * 255, (1 - xx) * 128 + 64], -1)
            for _ in range(6):
                c = rng.integers(0, 256, 3)
                x0, y0 = rng.integers(0, size - 64, 2)
                arr[y0:y0 + rng.integers(32, 200), x0:x0 + rng.integers(32, 200)] = c
            arr = arr.astype(np.uint8)
        else:
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
        im = Image.fromarray(arr)
        if fmt == "jpg":
            im.save(folder / f"img{i:05d}.jpg", quality=90)
        else:
            im.save(folder / f"img{i:05d}.png", compress_level=6)


def _pairs(src: Path, dst: Path) -> list[tuple[str, str]]:
    files = sorted(p for p in src.rglob("*") if p.suffix in (".png", ".jpg"))
    return [(str(p), str(dst / p.relative_to(src).with_suffix(".png"))) for p in files]


def _pillow_one(pair: tuple[str, str], colors: int = 16) -> None:
    src, out = pair
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        im.convert("RGB").quantize(colors).save(out)


def _liq_one(pair: tuple[str, str], colors: int = 16) -> None:
    import imagequant

    src, out = pair
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        imagequant.quantize_pil_image(im.convert("RGBA"), dithering_level=0.0,
                                      max_colors=colors).save(out)


def _pngquant_one(pair: tuple[str, str], extra: tuple[str, ...] = ()) -> None:
    src, out = pair
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["pngquant", "16", *extra, "--force", "--output", out, src], check=True)


def child_cpu() -> float:
    """CPU seconds (user + system) of every finished, waited-for descendant process: on a
    shared machine this is the fairer figure (wall time depends on the neighbours' load)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def pooled(fn, src: Path, dst: Path, jobs: int, **kw) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of ``fn`` over every file, ``jobs`` processes at a time."""
    from functools import partial

    pairs = _pairs(src, dst)
    c0, t0 = child_cpu(), time.perf_counter()
    with ProcessPoolExecutor(jobs) as ex:
        list(ex.map(partial(fn, **kw), pairs, chunksize=4))
    return time.perf_counter() - t0, child_cpu() - c0


def torchpalette_cmd(src: Path, dst: Path, colors: int, device: str, workers: int,
                     batch: int) -> tuple[float, float, str]:
    cmd = [sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst), "--colors",
           str(colors), "--device", device, "--workers", str(workers), "--batch-size",
           str(batch), "--quiet"]
    c0, t0 = child_cpu(), time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"torchpalette quantize failed: {res.stderr.strip()}")
    return seconds, child_cpu() - c0, res.stdout


def mean_de(src: Path, dst: Path, sample: int) -> float:
    """Mean CIEDE2000 over every pixel of ``sample`` evenly spaced images."""
    pairs = _pairs(src, dst)
    pairs = pairs[:: max(1, len(pairs) // sample)][:sample]
    des = []
    for s, d in pairs:
        a = tp.read_image(s)[:3].float().div(255).flatten(1).T
        b = tp.read_image(d)[:3].float().div(255).flatten(1).T
        des.append(float(tp.delta_e(a, b).mean()))
    return float(np.mean(des))


def out_bytes(dst: Path) -> int:
    return sum(p.stat().st_size for p in dst.rglob("*.png") if not p.name.startswith("."))


def run_folder(root: Path, fmt: str, args) -> list[tuple[str, float, float, float, int, str]]:
    """Rows ``(method, wall s, CPU s, mean dE00, output bytes, torchpalette's split)``."""
    src = root / f"src-{fmt}"
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        dst = root / f"tp-{dev}-{fmt}"
        secs, cpu, out = torchpalette_cmd(src, dst, args.colors, dev, args.workers,
                                          args.batch_size)
        split = re.search(r"timings: (.*)", out)
        rows.append((f"torchpalette --device {dev}", secs, cpu, mean_de(src, dst, args.sample),
                     out_bytes(dst), split.group(1) if split else ""))
    peers = [("Pillow quantize (median cut)", _pillow_one, {}),
             ("libimagequant, no dither", _liq_one, {})]
    if fmt == "png" and shutil.which("pngquant"):
        peers += [("pngquant --speed 10 --nofs", _pngquant_one,
                   {"extra": ("--speed", "10", "--nofs")}),
                  ("pngquant --nofs (default speed)", _pngquant_one, {"extra": ("--nofs",)})]
    for name, fn, kw in peers:
        dst = root / f"{fn.__name__}-{len(rows)}-{fmt}"
        secs, cpu = pooled(fn, src, dst, args.jobs, **kw)
        rows.append((name, secs, cpu, mean_de(src, dst, args.sample), out_bytes(dst), ""))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--colors", type=int, default=16)
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="processes for the per-file peers (default: all CPUs)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="torchpalette decode workers")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--sample", type=int, default=40, help="images used for mean dE00")
    p.add_argument("--formats", default="png,jpg")
    p.add_argument("--scale", action="store_true",
                   help="issue 21 instead: record formats, resume planning, queue memory "
                        "(benchmarks/bench_cli_scale.py)")
    p.add_argument("--files", type=int, default=100_000, help="--scale: outputs of the resume")
    p.add_argument("--old-files", type=int, nargs="*", default=[2_000, 8_000],
                   help="--scale: tree sizes for the old, quadratic planning")
    p.add_argument("--photos", type=int, default=64, help="--scale: images of the memory run")
    p.add_argument("--mp", type=float, default=3.0, help="--scale: megapixels per image")
    p.add_argument("--before", default="6f3768f", help="--scale: git ref of the old code")
    args = p.parse_args()
    if args.scale:
        import bench_cli_scale

        if args.quick:
            args.files, args.old_files, args.photos, args.mp = 3_000, [1_000], 8, 0.5
        bench_cli_scale.main(args)
        return
    if args.quick:
        args.n, args.size, args.sample = 24, 128, 8

    busy = report_machine()
    print(f"pngquant: {shutil.which('pngquant') or 'not installed (apt-get install pngquant)'}")
    root = Path(tempfile.mkdtemp(prefix="bench_cli-"))
    try:
        for fmt in args.formats.split(","):
            t0 = time.perf_counter()
            make_images(root / f"src-{fmt}", args.n, args.size, fmt)
            print(f"\ngenerated {args.n} {args.size}x{args.size} {fmt.upper()}s in "
                  f"{time.perf_counter() - t0:.1f} s")
            rows = run_folder(root, fmt, args)
            print(f"{args.n} {fmt.upper()} images {args.size}x{args.size} -> indexed PNG, "
                  f"{args.colors} colours, {args.jobs} processes for peers, torchpalette "
                  f"workers={args.workers} batch={args.batch_size} (end to end)")
            print(f"{'method':34s} {'seconds':>8s} {'img/s':>7s} {'CPU ms/img':>11s} "
                  f"{'mean dE00':>10s} {'MB':>7s}")
            for name, secs, cpu, de, size, _ in rows:
                print(f"{name:34s} {secs:8.2f} {args.n / secs:7.1f} {1000 * cpu / args.n:11.1f} "
                      f"{de:10.2f} {size / 1e6:7.2f}")
            for name, _, _, _, _, split in rows:
                if split:
                    print(f"{name}: {split}")
        warn_if_busy(busy)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
