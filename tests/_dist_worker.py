"""One rank of a torchrun-like launch, started by tests/test_distributed.py with RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its environment (what torchrun sets).

Usage: python _dist_worker.py OUT MODE SRC DST PALETTE

Every ``pipeline.write_atomic`` call is logged; stdout/stderr and exit status of each step go to
``OUT/rank-RANK.json``. Modes:

* ``cli``: ``torchpalette quantize SRC DST --palette PALETTE`` through ``cli.main`` (the
  command initialises the process group from the environment itself).
* ``fit``: as ``cli``, then (on MASTER_PORT2) the worker initialises the group itself, fits
  ``PaletteQuantizer`` to this rank's shard (``OUT/fit-RANK.pt``) and runs ``quantize SRC
  DST-fit --fit-palette`` inside that group.
* ``die:N``: as ``cli``, but on rank 1 the write after N finished ones leaves half a temp file
  and the process dies at once (as a killed rank would).
"""

from __future__ import annotations

import contextlib
import io as _io
import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import torchpalette as tp
from torchpalette import nn as tpnn
from torchpalette.cli import commands as cli
from torchpalette.cli import dstdir, sink
from torchpalette.cli import plan as folder

out, mode, src, dst, pal = Path(sys.argv[1]), sys.argv[2], *sys.argv[3:6]
common = ["--device", "cpu", "--workers", "0", "--batch-size", "3"]
rank = int(os.environ["RANK"])
writes: list[str] = []
steps: dict[str, dict] = {}

real_write_atomic = sink.write_atomic
limit = int(mode[4:]) if mode.startswith("die:") and rank == 1 else None


def logged_write_atomic(data, dst, tmp_dir):
    if limit is not None and len(writes) >= limit:  # half a temp file, then die at once
        dstdir.temp_path(tmp_dir).write_bytes(data[: len(data) // 2])
        os._exit(9)
    st = real_write_atomic(data, dst, tmp_dir)
    writes.append(str(dst))
    return st


sink.write_atomic = logged_write_atomic


def step(name: str, args: list[str]) -> None:
    o, e = _io.StringIO(), _io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = cli.main(args)
    steps[name] = {"rc": code, "out": o.getvalue(), "err": e.getvalue()}


step("cli", ["quantize", src, dst, "--palette", pal, *common])
if mode == "fit":
    os.environ["MASTER_PORT"] = os.environ["MASTER_PORT2"]
    dist.init_process_group("gloo")
    jobs = folder.shard(folder.plan_jobs(Path(src), Path(dst)).jobs, rank, dist.get_world_size())
    images = []
    for job in jobs:
        try:
            images.append(tp.read_image(job.src))
        except ValueError:
            pass
    q = tpnn.PaletteQuantizer.fit(images, colors=4, seed=0)
    torch.save(q.palette, out / f"fit-{rank}.pt")
    step("fit", ["quantize", src, dst + "-fit", "--fit-palette", "--colors", "4", *common])
    steps["group_still_up"] = dist.is_initialized()
    dist.destroy_process_group()

(out / f"rank-{rank}.json").write_text(json.dumps({"steps": steps, "writes": writes}))
sys.exit(steps["cli"]["rc"])
