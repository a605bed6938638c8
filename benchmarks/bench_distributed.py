"""`torchpalette quantize` on one process vs under torchrun (torch.distributed).

Generates N photo-like JPEGs (as bench_cli.py does), then times, in one run:

* CPU: the single-process command (``--device cpu``) against ``torchrun --standalone
  --nproc-per-node 2`` of the same command (gloo), decode workers split between the ranks.
  On a 2-core machine expect at most 2x.
* CUDA, when available: per-GPU images/s of the single-process command (``--device cuda``)
  against ``torchrun --nproc-per-node 1`` (nccl: process group, sharding, periodic progress
  all-reduce, final gather), so the overhead of the distributed path is known (target < 5%);
  with several GPUs also ``--nproc-per-node <all GPUs>``.

Rates are given end to end (interpreter and torch start-up included) and from the command's
own wall time (``--timings``, start-up excluded; under torchrun the slowest rank's). Each
configuration runs ``--repeat`` times, alternating, and the best is kept. The last column says
whether the outputs are byte-identical to the single-process run's.

Usage: python benchmarks/bench_distributed.py [--quick] [--n 400] [--size 512] [--workers N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report_machine, warn_if_busy  # noqa: E402
from bench_cli import make_images  # noqa: E402  (same generated data set)


def command(src: Path, dst: Path, device: str, workers: int, batch: int, nproc: int) -> list[str]:
    args = ["quantize", str(src), str(dst), "--colors", "16", "--device", device, "--workers",
            str(workers), "--batch-size", str(batch), "--quiet", "--timings"]
    if nproc == 0:  # the plain single-process command
        return [sys.executable, "-m", "torchpalette", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            str(nproc), "-m", "torchpalette", *args]


def run(cmd: list[str], dst: Path, n: int) -> tuple[float, float]:
    """(end-to-end seconds, the command's own wall seconds) of one fresh run into ``dst``."""
    shutil.rmtree(dst, ignore_errors=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    done = re.search(r"quantized (\d+) images", res.stdout)
    wall = re.search(r"wall ([0-9.]+) s", res.stdout)
    if res.returncode != 0 or not done or int(done.group(1)) != n or not wall:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{res.stdout}\n{res.stderr[-3000:]}")
    return seconds, float(wall.group(1))


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny run to check the script works")
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                   help="decode workers in total (split between the ranks)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--devices", choices=["all", "cpu", "cuda"], default="all")
    args = p.parse_args()
    if args.quick:
        args.n, args.size, args.repeat = 24, 96, 1

    busy = report_machine()
    cuda = torch.cuda.is_available()
    root = Path(tempfile.mkdtemp(prefix="bench_dist-"))
    try:
        src = root / "src"
        make_images(src, args.n, args.size)
        configs = [("cpu", 0, "1 process (plain command)"), ("cpu", 2, "torchrun 2 processes")]
        if cuda:
            gpus = torch.cuda.device_count()
            configs += [("cuda", 0, "1 process (plain command)"),
                        ("cuda", 1, "torchrun 1 process")]
            if gpus > 1:
                configs.append(("cuda", gpus, f"torchrun {gpus} processes"))
        configs = [c for c in configs if args.devices in ("all", c[0])]
        best: dict[int, tuple[float, float]] = {}
        digests: dict[int, str] = {}
        for _ in range(args.repeat):  # alternate configurations so drifts hit all alike
            for i, (dev, nproc, _) in enumerate(configs):
                workers = max(0, args.workers // max(nproc, 1))
                dst = root / f"out{i}"
                secs, wall = run(command(src, dst, dev, workers, args.batch_size, nproc), dst,
                                 args.n)
                old = best.get(i, (float("inf"), float("inf")))
                best[i] = (min(old[0], secs), min(old[1], wall))
                digests[i] = digest(dst)
        print(f"\n{args.n} images {args.size}x{args.size}, 16 colours each, batch "
              f"{args.batch_size}, {args.workers} decode workers in total, best of {args.repeat}")
        print(f"{'device':6s} {'configuration':28s} {'e2e s':>7s} {'e2e img/s':>10s} "
              f"{'wall s':>7s} {'img/s':>8s} {'per GPU':>8s} {'vs 1 proc':>10s} {'same bytes':>10s}")
        base: dict[str, tuple[int, float]] = {}
        rates = {(dev, nproc): args.n / best[i][1] for i, (dev, nproc, _) in enumerate(configs)}
        for i, (dev, nproc, name) in enumerate(configs):
            secs, wall = best[i]
            rate = rates[dev, nproc]
            if nproc == 0:
                base[dev] = (i, rate)
            ref_i, ref_rate = base[dev]
            per_gpu = f"{rate / max(nproc, 1):8.1f}" if dev == "cuda" else f"{'':8s}"
            same = "yes" if digests[i] == digests[ref_i] else "NO"
            print(f"{dev:6s} {name:28s} {secs:7.2f} {args.n / secs:10.1f} {wall:7.2f} "
                  f"{rate:8.1f} {per_gpu} {rate / ref_rate:9.2f}x {same:>10s}")
        if cuda:
            single, dist1 = rates["cuda", 0], rates["cuda", 1]
            print(f"\nper-GPU overhead of the distributed path (torchrun 1 process vs plain): "
                  f"{100 * (single / dist1 - 1):+.1f}% (target < 5%)")
        warn_if_busy(busy)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
