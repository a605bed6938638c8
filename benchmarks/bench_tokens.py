"""Folder -> palette tokens vs folder -> indexed PNGs (issue 22): images/s and bytes per image.

Generates N photo-like crops of the bundled sample (``bench_cli.make_images``) as a PNG folder,
then runs, each as a subprocess (start-up included) on a fresh DST, ``--repeats`` times:

* ``torchpalette quantize SRC DST --format png`` (the default: indexed PNG mirror),
* ``--format tokens`` (WebDataset shards of ``idx.npy`` + per-image palettes; no PNG encode),
* ``--format npy`` (one ``[N, H, W]`` array),
* ``--format tokens --fit-palette --colors 512`` (ImageGPT's setting: a dataset palette, 2 passes).

For each: median seconds, images/s, CPU seconds per image (user + system of the subprocess,
start-up included: what a busy shared machine distorts least), and output bytes per image (all
files under DST except the tool's hidden record). The forms run interleaved, repeat by repeat,
so a change of machine load hits them alike (the slow 512-colour fit runs once). The CPU load
is printed before each run and under the table.

Usage: python benchmarks/bench_tokens.py [--n 64] [--size 256] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_busy, report_machine, warn_if_busy  # noqa: E402
from bench_cli import make_images  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def out_bytes(dst: Path) -> int:
    return sum(p.stat().st_size for p in dst.rglob("*")
               if p.is_file() and ".torchpalette" not in p.parts and not p.name.startswith("."))


def time_run(src: Path, dst: Path, opts: list[str], workers: int
             ) -> tuple[float, float, float]:
    """Seconds and CPU seconds of one ``quantize`` subprocess on a fresh DST, and the load
    just before it."""
    shutil.rmtree(dst, ignore_errors=True)
    busy = machine_busy(0.3)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst),
                        "--device", "cpu", "--workers", str(workers), "--quiet", *opts],
                       env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"quantize {' '.join(opts)} failed:\n{p.stdout}\n{p.stderr}")
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return seconds, cpu, busy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    busy0 = report_machine()
    print(f"load average before: {os.getloadavg()}")
    forms = {"png (default)": ["--colors", "16"],
             "tokens": ["--format", "tokens", "--colors", "16"],
             "npy": ["--format", "npy", "--colors", "16"],
             "tokens, fit 512": ["--format", "tokens", "--fit-palette", "--colors", "512"]}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        make_images(src, a.n, a.size, "png")
        src_bytes = out_bytes(src)
        print(f"{a.n} images {a.size}x{a.size} (PNG source: {src_bytes / a.n / 1024:.1f} KiB "
              f"per image), --workers {a.workers}, median of {a.repeats}")
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in forms}
        sizes: dict[str, int] = {}
        for r in range(a.repeats):
            for name, opts in forms.items():
                if "512" in name and r > 0:
                    continue
                dst = Path(tmp) / "dst"
                runs[name].append(time_run(src, dst, opts, a.workers))
                sizes[name] = out_bytes(dst)
                sec, cpu, busy = runs[name][-1]
                print(f"  {name}: {sec:.2f} s, {cpu:.2f} CPU s, CPU busy before "
                      f"{100 * busy:.0f}%", flush=True)
    loads = [busy0] + [b for rs in runs.values() for _, _, b in rs]
    print()
    print("| output | runs | median s | images/s | CPU ms/image | bytes/image |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rs in runs.items():
        sec = statistics.median(s for s, _, _ in rs)
        cpu = statistics.median(c for _, c, _ in rs)
        print(f"| {name} | {len(rs)} | {sec:.2f} | {a.n / sec:.1f} | {1000 * cpu / a.n:.0f} | "
              f"{sizes[name] / a.n:,.0f} |")
    print(f"\nCPU busy before runs: max {100 * max(loads):.0f}%, load average after: "
          f"{os.getloadavg()}")
    warn_if_busy(max(loads))


if __name__ == "__main__":
    main()
