"""Shared fixtures: devices (cpu, plus cuda when present) and the `cuda` marker's skip."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Scripts that tests start in subprocesses, not test modules (--doctest-modules would import them).
collect_ignore = ["_dist_worker.py", "_vq_dist_worker.py"]

DATA = Path(__file__).parent / "data"
SAMPLE = Path(__file__).parents[1] / "torchpalette" / "data" / "astronaut.jpg"
ROOT = Path(__file__).parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_cli(argv: list[str], world: int = 2) -> tuple[list[int], list[str]]:
    """Run ``python -m torchpalette *argv`` as ``world`` gloo ranks started the way torchrun
    starts them (this checkout on the path) -> (exit codes, logs) by rank."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}
    procs = [subprocess.Popen([sys.executable, "-m", "torchpalette", *argv],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    try:
        logs = [p.communicate(timeout=150)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return [p.returncode for p in procs], logs


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every device present: cpu always, cuda when available."""
    return torch.device(request.param)


@pytest.fixture
def sample_path() -> Path:
    return SAMPLE
