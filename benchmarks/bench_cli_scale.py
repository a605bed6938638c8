"""`torchpalette quantize` at dataset scale (issue 21): the provenance record's two candidate
formats, the planning time of a resume, and the peak memory of the decode queue, each beside
the code before issue 21 (extracted with ``git archive`` from ``--before``).

* record: 100,000 rows written one committed row at a time (as the command records each
  output), then loaded, for sqlite (WAL) and an append-only JSON-lines log; and the size after
  a second full run (the log grows, sqlite replaces rows in place);
* resume: a SRC of ``--files`` tiny PNGs in folders of 1,000, a DST where every output is
  finished (outputs and record written directly, as a finished run leaves them); the time of
  ``quantize SRC DST`` (a subprocess: start-up included) that finds them all finished, and of
  its planning alone in this process. The old planning (a glob per output, every output
  decoded by ``verify``) is timed on smaller trees: it grows with files x files-per-folder;
* memory: peak PSS (resident memory, pages shared after fork counted once) summed over the
  command and its worker processes (sampled from /proc every 50 ms) for ``--workers 8
  --batch-size 32`` on ``--photos`` photo-like images of ``--mp`` megapixels, new (default
  queue, and a 256 MiB one) against old at batch 32 and batch 1.

Usage: PYTHONPATH=. python benchmarks/bench_cli.py --scale [--files 100000] [--photos 64] [--mp 3]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def record_formats(n: int, root: Path) -> None:
    from torchpalette.cli.record import Record, Row

    rows = [Row(f"d{i // 1000}/f{i}.png", f"d{i // 1000}/f{i}.jpg", 1234, 10**18 + i, "",
                "0123456789abcdef", 567, 10**18 + i) for i in range(n)]
    db = Record(root / "r.sqlite")
    t0 = time.perf_counter()
    for r in rows:
        db.put(r)
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = db.load()
    load = time.perf_counter() - t0
    for r in rows:  # a second full run replaces every row
        db.put(r)
    db.close()
    size = sum(p.stat().st_size for p in root.glob("r.sqlite*"))
    assert len(got) == n
    print(f"record sqlite (WAL, one commit per row): write {n:,} rows {write:.2f} s, "
          f"load {load:.2f} s, {size / 2**20:.1f} MiB after two full runs")
    log = root / "r.jsonl"
    t0 = time.perf_counter()
    with open(log, "a") as f:
        for r in rows:
            f.write(json.dumps(r.__dict__) + "\n")
            f.flush()  # as durable as an sqlite commit without fsync: in the page cache
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    with open(log) as f:
        table = {d["key"]: d for d in map(json.loads, f)}
    load = time.perf_counter() - t0
    with open(log, "a") as f:
        for r in rows:
            f.write(json.dumps(r.__dict__) + "\n")
    assert len(table) == n
    print(f"record append-only log (JSON lines, flush per row): write {write:.2f} s, replay "
          f"{load:.2f} s, {log.stat().st_size / 2**20:.1f} MiB after two full runs (grows "
          f"with every run until compacted)")


def tiny_tree(root: Path, n: int, finished: bool) -> tuple[Path, Path]:
    """SRC of n tiny PNGs in folders of 1,000; with ``finished``, a DST whose outputs and
    record say every one is done (what a finished run leaves)."""
    from torchpalette.cli.commands import build_parser
    from torchpalette.cli.quantize_cmd import output_options
    from torchpalette.cli.quantizers import Quantizer
    from torchpalette.cli.record import Record, Row, options_digest

    src, dst = root / "src", root / "dst"
    buf = tempfile.NamedTemporaryFile(suffix=".png", delete=False)
    Image.fromarray(np.full((2, 2, 3), 90, np.uint8)).save(buf.name)
    data = Path(buf.name).read_bytes()
    args = build_parser().parse_args(["quantize", str(src), str(dst)])
    digest, text = options_digest(output_options(args, Quantizer(args.colors)))
    (dst / ".torchpalette" / "tmp").mkdir(parents=True, exist_ok=True)
    rec = Record(dst / ".torchpalette" / "record.sqlite") if finished else None
    for i in range(n):
        folder = f"d{i // 1000:03d}"
        (src / folder).mkdir(parents=True, exist_ok=True)
        s = src / folder / f"f{i}.png"
        s.write_bytes(data)
        if rec is not None:
            (dst / folder).mkdir(parents=True, exist_ok=True)
            o = dst / folder / f"f{i}.png"
            o.write_bytes(data)
            ss, so = s.stat(), o.stat()
            rec.put(Row(f"{folder}/f{i}.png", f"{folder}/f{i}.png", ss.st_size, ss.st_mtime_ns,
                        "", digest, so.st_size, so.st_mtime_ns), commit=False)
    if rec is not None:
        rec.add_options(digest, text)
        rec.close()
    return src, dst


def resume_new(n: int, root: Path) -> None:
    src, dst = tiny_tree(root, n, finished=True)
    from torchpalette.cli.dstdir import DstDir
    from torchpalette.cli.plan import plan_jobs, resume
    from torchpalette.cli.record import Record

    t0 = time.perf_counter()
    plan = plan_jobs(src, dst)
    rows = Record(DstDir(dst).record_path).load()
    res = resume(plan.jobs, rows, next(iter(rows.values())).options, dst=dst)
    plan_s = time.perf_counter() - t0
    assert res.finished == n, (res.finished, res.redo)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst),
                          "--quiet", "--device", "cpu"], capture_output=True, text=True, env=env)
    cmd_s = time.perf_counter() - t0
    assert f"skipped {n} finished" in out.stdout, out.stdout + out.stderr
    print(f"resume, new: {n:,} finished outputs in {n // 1000} folders: planning "
          f"{plan_s:.2f} s in process ({1e6 * plan_s / n:.0f} us/file, {plan.scans} + "
          f"{res.scans} folder scans); the whole command {cmd_s:.2f} s (start-up included)")


def resume_old(n: int, root: Path, old: Path) -> None:
    """The planning before issue 21 over a finished DST of n outputs (its own run's output)."""
    src, dst = tiny_tree(root, n, finished=False)
    env = {**os.environ, "PYTHONPATH": str(old)}
    subprocess.run([sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst),
                    "--quiet", "--device", "cpu", "--workers", "0", "--batch-size", "256"],
                   capture_output=True, env=env, check=False)
    code = ("import sys, time; from pathlib import Path\n"
            "from torchpalette.cli.folder import plan_jobs, pending_jobs\n"
            "t = time.perf_counter(); p = plan_jobs(Path(sys.argv[1]), Path(sys.argv[2]))\n"
            "todo, _ = pending_jobs(p.jobs, False)\n"
            "print(len(p.jobs), len(todo), time.perf_counter() - t)\n")
    res = subprocess.run([sys.executable, "-c", code, str(src), str(dst)], capture_output=True,
                         text=True, env=env)
    jobs, todo, secs = res.stdout.split()
    print(f"resume, old: {int(jobs):,} outputs ({int(todo)} left to do) in "
          f"{int(jobs) // 1000 or 1} folders: planning {float(secs):.2f} s "
          f"({1e6 * float(secs) / int(jobs):.0f} us/file)")


def tree_rss(pid: int) -> int:
    """Proportional resident bytes (PSS: pages shared by forked workers counted once over
    all of them) of ``pid`` and all its descendants, from /proc."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                total += next(int(x.split()[1]) for x in f if x.startswith("Pss:")) * 1024
        except (OSError, StopIteration):
            pass
    return total


def peak_rss(cmd: list[str], env: dict) -> tuple[int, float, str]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)

    t = threading.Thread(target=sample)
    t0 = time.perf_counter()
    t.start()
    out, err = proc.communicate()
    done.set()
    t.join()
    return peak, time.perf_counter() - t0, out + err


def photos(root: Path, n: int, mp: float) -> Path:
    side = int((mp * 1e6) ** 0.5)
    sample = Image.open(ROOT / "torchpalette" / "data" / "astronaut.jpg").convert("RGB")
    big = np.asarray(sample.resize((side, side)))
    src = root / "photos"
    src.mkdir()
    for i in range(n):
        Image.fromarray(np.roll(big, 37 * i, axis=1)).save(src / f"p{i:03d}.jpg", quality=92)
    return src


def memory(root: Path, n: int, mp: float, old: Path) -> None:
    src = photos(root, n, mp)
    runs = [("new, default queue (1024 MiB)", ROOT, []),
            ("new, --queue-mib 256", ROOT, ["--queue-mib", "256"]),
            ("old, batch 32", old, []), ("old, batch 1", old, ["--batch-size", "1"])]
    for name, code_root, extra in runs:
        env = {**os.environ, "PYTHONPATH": str(code_root)}
        dst = root / f"out-{len(os.listdir(root))}"
        cmd = [sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst), "--quiet",
               "--device", "cpu", "--workers", "8", "--batch-size", "32", *extra]
        peak, secs, log = peak_rss(cmd, env)
        assert f"quantized {n} images" in log, log
        print(f"memory, {name}: {n} JPEGs of {mp:g} MP, --workers 8: peak PSS "
              f"{peak / 2**30:.2f} GiB (process + workers), {secs:.0f} s")


def before_tree(ref: str, root: Path) -> Path:
    """The package at git ``ref``, extracted (so the old code runs beside the new)."""
    out = root / "before"
    out.mkdir()
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "torchpalette"],
                         capture_output=True, check=True).stdout
    tmp = root / "before.tar"
    tmp.write_bytes(tar)
    with tarfile.open(tmp) as t:
        t.extractall(out, filter="data")
    return out


def main(args) -> None:
    from _common import report_machine

    import torchpalette

    if not Path(torchpalette.__file__).resolve().is_relative_to(ROOT):
        sys.exit(f"run with PYTHONPATH={ROOT} (this imports {torchpalette.__file__})")

    with tempfile.TemporaryDirectory(prefix="tp-scale-") as tmp:
        root = Path(tmp)
        old = before_tree(args.before, root)
        print(f"load before: {os.getloadavg()[0]:.2f} (1-min load average, {os.cpu_count()} "
              f"CPUs)")
        report_machine()
        (root / "rec").mkdir()
        record_formats(args.files, root / "rec")
        for n in args.old_files:
            (root / f"old{n}").mkdir()
            resume_old(n, root / f"old{n}", old)
        (root / "new").mkdir()
        resume_new(args.files, root / "new")
        shutil.rmtree(root / "new")
        memory(root, args.photos, args.mp, old)
        print(f"load after: {os.getloadavg()[0]:.2f}")
