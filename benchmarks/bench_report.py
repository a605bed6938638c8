"""`torchpalette report` end to end: wall time and peak memory on any image size (issue 16).

Runs ``python -m torchpalette report IMAGE -o OUT.html --device cpu`` as a subprocess (start-up
included) on:

* the bundled sample (``torchpalette/data/astronaut.jpg``, 512x512);
* a generated 12-megapixel JPEG (4000x3000) and a 48-megapixel JPEG (8000x6000): the sample
  photo enlarged (bicubic) with a little noise, so the colours are a photo's.

Peak memory is the report process's own maximum resident set size (``os.wait4`` in a small
launcher process), so this script's memory does not count. Targets (issue 16): a 48-megapixel
JPEG in under 2 GB and under a minute.

Usage: python benchmarks/bench_report.py [--quick] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import report_machine, warn_if_busy  # noqa: E402  (benchmarks/ is on sys.path)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "torchpalette" / "data" / "astronaut.jpg"


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """The sample photo resized to ``width x height`` plus uniform noise of +-6 levels."""
    rng = np.random.default_rng(seed)
    img = np.asarray(Image.open(SAMPLE).convert("RGB").resize((width, height), Image.BICUBIC))
    noisy = img.astype(np.int16) + rng.integers(-6, 7, img.shape, dtype=np.int16)
    Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


# A small Python process starts the report and reads its peak RSS with os.wait4: a child
# started straight from this process (which has torch loaded) would count this process's
# memory too, since subprocess starts children with vfork.
_LAUNCH = """import os, subprocess, sys
proc = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"""


def run_report(image: Path, out: Path, device: str, threads: int | None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one ``torchpalette report`` subprocess."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "torchpalette", "report", str(image), "-o", str(out),
           "--device", device, "--force"]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _LAUNCH, *cmd], env=env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - t0
    code, peak_kib = map(int, res.stdout.split())
    if code != 0:
        raise SystemExit(f"report failed on {image}: {res.stderr[-2000:]}")
    return wall, peak_kib / 1024  # Linux reports KiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="sample and 12 MP only")
    p.add_argument("--device", default="cpu", help="device for the report (default: cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP_NUM_THREADS for the report (default: torch's choice)")
    args = p.parse_args()
    busy = report_machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-report-") as tmp:
        tmp = Path(tmp)
        images = [("sample 512x512", SAMPLE)]
        sizes = [("12 MP 4000x3000", 4000, 3000)] + ([] if args.quick else
                                                     [("48 MP 8000x6000", 8000, 6000)])
        for name, w, h in sizes:
            images.append((name, make_photo(tmp / f"{w}x{h}.jpg", w, h)))
        for name, path in images:
            out = tmp / "report.html"
            wall, peak = run_report(path, out, args.device, args.threads)
            rows.append((name, path.stat().st_size / 2**20, wall, peak, out.stat().st_size / 2**20))
    threads = args.threads or "default"
    print(f"\n`torchpalette report --device {args.device}` (subprocess, start-up included, "
          f"OMP threads: {threads})\n")
    print("| image | file MiB | wall s | peak RSS MiB | HTML MiB |")
    print("|---|---:|---:|---:|---:|")
    for name, size, wall, peak, html in rows:
        print(f"| {name} | {size:.1f} | {wall:.1f} | {peak:.0f} | {html:.2f} |")
    warn_if_busy(busy, "above ")


if __name__ == "__main__":
    main()
