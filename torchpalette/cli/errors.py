"""Errors of the command-line app and their one-line form."""

from __future__ import annotations


class UsageError(Exception):
    """Bad usage found after parsing (missing file, DST inside SRC): exit status 2."""


def one_line(exc: BaseException) -> str:
    """``"Type: message"`` on one line, for failure lists and error messages."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
