"""Shared fixtures: devices (cpu, plus cuda when present) and the `cuda` marker's skip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# Scripts that tests start in subprocesses, not test modules (--doctest-modules would import them).
collect_ignore = ["_dist_worker.py", "_vq_dist_worker.py"]

DATA = Path(__file__).parent / "data"
SAMPLE = Path(__file__).parents[1] / "torchpalette" / "data" / "astronaut.jpg"


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
