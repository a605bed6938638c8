"""The `torchpalette` command (stub until the command-line issue)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``torchpalette`` and ``python -m torchpalette``."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="torchpalette", description=__doc__)
    parser.add_argument("--version", action="version", version=f"torchpalette {__version__}")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
