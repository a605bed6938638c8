"""What every benchmark script shares: the machine-load check that precedes any timing.

On a 2-core machine one busy core slows multi-threaded peers by up to 45x, so each script
measures how busy the CPUs are (from /proc/stat) before it times anything and says so.
"""

from __future__ import annotations

import statistics
import time


def machine_busy(seconds: float = 0.5) -> float:
    """Fraction of all CPU time that was not idle during ``seconds``; -1 if unknown."""

    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = snap()
        time.sleep(seconds)
        t1, i1 = snap()
    except OSError:
        return -1.0
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def report_machine() -> float:
    """Print what the timings ran on and how busy the CPUs were just before; return the busy
    fraction (the scripts repeat the warning under their tables when it is over 15 %)."""
    import os

    import torch

    busy = machine_busy()
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no"
    load = "unknown" if busy < 0 else f"{100 * busy:.0f}%"
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch "
          f"threads, cuda: {gpu}, CPU busy before timing: {load}")
    warn_if_busy(busy, "below ")
    return busy


def warn_if_busy(busy: float, where: str = "") -> None:
    """Say so when the CPUs were more than 15 % busy before timing (printed again under a
    table, so the warning is next to the figures)."""
    if busy > 0.15:
        print(f"WARNING: the machine was busy: timings {where}are not valid (run on a quiet "
              "machine)")


def median_seconds(fn, repeats: int, sync=None, warmup=None) -> float:
    """Median seconds of ``fn`` over ``repeats`` runs, after one call of ``warmup`` (None: no
    warm-up call); ``sync`` (e.g. ``torch.cuda.synchronize``) runs around each timed call."""
    if warmup is not None:
        warmup()
    times = []
    for _ in range(repeats):
        if sync:
            sync()
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
