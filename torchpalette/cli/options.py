"""Argument types and checks shared by the subcommands (so no command module imports another)."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import UsageError


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an int in ``[low, high]`` (else a usage error naming the range)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an int in [{low}, {high}], got {value}")
        return value

    return parse


def unit(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value


SEED = int_in(0, 2**63 - 1)  # torch.Generator.manual_seed takes at most a 64-bit value


def device_name(text: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def add_device(s: argparse.ArgumentParser) -> None:
    s.add_argument("--device", type=device_name, default="auto",
                   help="auto (cuda when available), cpu, cuda or cuda:N (default: auto)")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without CUDA is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device: expected a usable device, got {name!r} (CUDA not available)")
    return torch.device(name)


def existing_file(path: str, name: str = "IMAGE") -> Path:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{name}: expected an existing file, got {path!r}")
    return p


def shown(name: str) -> str:
    """A file name safe to print on one line: as is when printable, else quoted with escapes
    (a name holding a newline could otherwise forge a line of the output)."""
    return name if name.isprintable() else repr(name)
