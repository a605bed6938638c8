"""Lint and types are part of the tests: ruff (E, F, W, I, B, UP) and mypy on the package, as
configured in pyproject.toml. Skipped only where the tool is not installed (the test extra
installs both)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed")
def test_ruff_is_clean():
    res = _run("ruff", "check", "torchpalette")
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_is_clean():
    pytest.importorskip("mypy")
    res = _run(sys.executable, "-m", "mypy", "--no-error-summary")
    assert res.returncode == 0, res.stdout + res.stderr
