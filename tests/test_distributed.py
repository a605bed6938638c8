"""``torchpalette quantize`` under torchrun, on the CPU with gloo: 2 ranks started as torchrun
starts them (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment), each
running ``tests/_dist_worker.py``, compared with a single-process run in this process.

Each launch costs two Python start-ups (torch import), so the scenarios share launches: one
for the fixed-palette run plus the palette fit, one for a rank killed midway, one for the
re-run that finishes the job.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image

import torchpalette as tp
from torchpalette.cli import commands as cli
from torchpalette.cli import plan as cli_plan
from torchpalette.cli import torchrun as _dist

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed gloo"
)

WORKER = Path(__file__).with_name("_dist_worker.py")
CORRUPT = "b/img04.jpg"  # sorted index 15 of the tree below: rank 1's shard (odd indices)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(out: Path, mode: str, src: Path, dst: Path, pal: Path, world: int = 2) -> list[dict]:
    """Start ``world`` worker ranks as torchrun would and return each rank's record."""
    out.mkdir(parents=True, exist_ok=True)
    ports = {"MASTER_PORT": str(free_port()), "MASTER_PORT2": str(free_port())}
    procs = []
    for rank in range(world):
        env = {**os.environ, **ports, "RANK": str(rank), "WORLD_SIZE": str(world),
               "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(world),
               "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": str(WORKER.parents[1])}  # this checkout, not an installed copy
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(out), mode, str(src), str(dst), str(pal)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    records = []
    try:
        for rank, p in enumerate(procs):
            log, _ = p.communicate(timeout=150)
            path = out / f"rank-{rank}.json"
            rec = json.loads(path.read_text()) if path.exists() else {"steps": {}, "writes": []}
            records.append({**rec, "rc": p.returncode, "log": log})
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return records


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, Path]:
    """22 small images in nested folders (two sizes, png and jpg) plus one corrupt file, and a
    fixed 6-colour palette file."""
    root = tmp_path_factory.mktemp("dist")
    src, rng = root / "src", np.random.default_rng(7)
    base = rng.integers(0, 256, (6, 3), dtype=np.uint8)
    for i in range(22):
        h, w = (10, 12) if i % 3 else (14, 9)
        img = base[rng.integers(0, 6, (h, w))] + rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
        path = src / "ab"[i % 2] / ("deep" if i % 5 == 0 else "") / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    (src / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    assert [j.rel for j in cli_plan.plan_jobs(src, root / 'x').jobs].index(CORRUPT) % 2 == 1
    pal = root / "palette.txt"
    pal.write_text("\n".join("#{:02x}{:02x}{:02x}".format(*c) for c in base.tolist()))
    return src, pal


def files(root: Path) -> dict[str, bytes]:
    """Outputs (not DST/.torchpalette/, the lock and record, which outlive a run)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file() and ".torchpalette" not in p.parts}


def single(src: Path, dst: Path, *extra: str) -> int:
    return cli.main(["quantize", str(src), str(dst), "--device", "cpu", "--workers", "0",
                     "--quiet", *extra])


@pytest.fixture(scope="module")
def two_ranks(tree, tmp_path_factory):
    src, pal = tree
    root = tmp_path_factory.mktemp("run")
    return root, launch(root / "out", "fit", src, root / "dst", pal)


def test_union_equals_single_process_byte_for_byte(tree, two_ranks, tmp_path, capsys):
    src, pal = tree
    root, ranks = two_ranks
    assert single(src, tmp_path / "ref", "--palette", str(pal)) == 1  # the corrupt file
    capsys.readouterr()
    want = files(tmp_path / "ref")
    assert len(want) == 22
    assert files(root / "dst") == want


def test_every_file_written_once_by_its_shard(tree, two_ranks):
    src, _ = tree
    root, ranks = two_ranks
    jobs = cli_plan.plan_jobs(src, root / "dst").jobs
    for rank, rec in enumerate(ranks):
        mine = {str(j.dst) for j in cli_plan.shard(jobs, rank, 2) if j.rel != CORRUPT}
        assert sorted(rec["writes"][: len(mine)]) == sorted(mine)
    cli_writes = [w for rec in ranks for w in rec["writes"] if "-fit" not in w]
    assert len(cli_writes) == len(set(cli_writes)) == 22


def test_failure_on_rank_1_reported_by_rank_0_and_exit_1_everywhere(two_ranks):
    _, ranks = two_ranks
    r0, r1 = (rec["steps"]["cli"] for rec in ranks)
    assert [r0["rc"], r1["rc"]] == [1, 1]
    assert [rec["rc"] for rec in ranks] == [1, 1], [rec["log"][-2000:] for rec in ranks]
    assert "quantized 22 images, skipped 0 finished, 1 failed" in r0["out"]
    assert "on 2 ranks" in r0["out"]
    assert f"failed: {CORRUPT}: ValueError" in r0["err"] and "(rank 1)" in r0["err"]
    assert "23/23" in r0["err"]  # rank 0's bar counted the images of both ranks
    assert r1["out"] == "" and "failed" not in r1["err"] and "img/s" not in r1["err"]


def test_fitted_palette_same_on_both_ranks_and_equal_to_single_process(tree, two_ranks, tmp_path,
                                                                       capsys):
    src, _ = tree
    root, ranks = two_ranks
    fits = [torch.load(root / "out" / f"fit-{r}.pt") for r in range(2)]
    images = [tp.read_image(p) for p in sorted(src.rglob("*.png"))]
    want = tp.nn.PaletteQuantizer.fit(images, colors=4, seed=0).palette
    assert torch.equal(fits[0], fits[1])
    assert torch.equal(fits[0], want)
    # the command: --fit-palette inside a caller's process group, same bytes as one process
    assert [rec["steps"]["fit"]["rc"] for rec in ranks] == [1, 1]
    assert all(rec["steps"]["group_still_up"] for rec in ranks)  # not torn down by the command
    assert single(src, tmp_path / "ref", "--fit-palette", "--colors", "4") == 1
    capsys.readouterr()
    assert files(Path(str(root / "dst") + "-fit")) == files(tmp_path / "ref")


def test_killed_rank_then_rerun_finishes_with_nothing_partial(tree, tmp_path, capsys):
    src, pal = tree
    dst = tmp_path / "dst"
    crashed = launch(tmp_path / "out1", "die:3", src, dst, pal)
    assert crashed[1]["rc"] == 9  # killed mid-write
    assert crashed[0]["rc"] != 0  # rank 0 noticed its peer vanished (no hang, no success)
    partial = list((dst / ".torchpalette" / "tmp").glob("*.part"))
    assert partial, "the simulated kill should leave half a temp file"
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in dst.rglob("*.png")}
    assert 3 <= len(before) < 22

    rerun = launch(tmp_path / "out2", "cli", src, dst, pal)
    assert [r["rc"] for r in rerun] == [1, 1]  # only the corrupt file fails
    assert f"skipped {len(before)} finished" in rerun[0]["steps"]["cli"]["out"]
    redone = [w for r in rerun for w in r["writes"]]
    assert len(redone) == len(set(redone)) == 22 - len(before)
    assert not set(redone) & {str(p) for p in before}
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in before} == before
    assert not list((dst / ".torchpalette" / "tmp").iterdir())
    assert single(src, tmp_path / "ref", "--palette", str(pal)) == 1
    capsys.readouterr()
    assert files(dst) == files(tmp_path / "ref")


# ----------------------------------------------------------------------------- no torchrun
def test_env_ranks():
    assert _dist.env_ranks({}) is None
    assert _dist.env_ranks({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2, 1)
    assert _dist.env_ranks({"RANK": "0", "WORLD_SIZE": "8", "LOCAL_RANK": "0"}) == (0, 8, 0)
    with pytest.raises(ValueError, match="RANK, WORLD_SIZE"):
        _dist.env_ranks({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="expected integers"):
        _dist.env_ranks({"RANK": "x", "WORLD_SIZE": "2"})


def test_without_torchrun_no_process_group(tree, tmp_path, monkeypatch, capsys):
    src, pal = tree
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("init_process_group called without torchrun")

    monkeypatch.setattr(dist, "init_process_group", refuse)
    assert single(src, tmp_path / "dst", "--palette", str(pal)) == 1
    out, _ = capsys.readouterr()
    assert "quantized 22 images" in out and "ranks" not in out
    assert not dist.is_initialized()
