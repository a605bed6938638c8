"""Colour swatches in a terminal: how many colours it shows, and one line of swatches.

The report and the palette commands print colours as coloured blocks where the terminal can
show them and as hex codes elsewhere (pipes, files, ``NO_COLOR``). Detection follows the
common conventions: ``NO_COLOR`` (https://no-color.org), ``FORCE_COLOR``, ``COLORTERM`` and the
``TERM`` suffixes ``-direct`` (24-bit) and ``-256color``.
"""

from __future__ import annotations

import os

from torch import Tensor

import torchpalette as tp

from .palette_files import rgb255

__all__ = ["color_mode", "swatches"]


def color_mode(stream, environ=None) -> str | None:
    """How to draw colour swatches on ``stream``: ``"truecolor"``, ``"256"`` or None (hex).

    ``NO_COLOR`` (non-empty) turns colour off; ``FORCE_COLOR`` turns it on even when not a
    terminal (``FORCE_COLOR=0`` or ``false`` turns it off, ``2`` asks for 256 colours).
    Otherwise a terminal gets colour when it says so: ``COLORTERM=truecolor|24bit`` or a
    ``TERM`` ending in ``-direct`` (e.g. ``xterm-direct``) means 24-bit colour; a ``TERM``
    ending in ``-256color`` gets the nearest of the xterm-256 colours, which every such
    terminal shows (many of them also show 24-bit colour, but not all: Terminal.app).
    """
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return None
    term, colorterm = env.get("TERM", ""), env.get("COLORTERM", "").lower()
    depth = ("truecolor" if colorterm in ("truecolor", "24bit") or term.endswith("-direct")
             else "256" if term.endswith("-256color") else None)
    force = env.get("FORCE_COLOR")
    if force:
        if force.lower() in ("0", "false"):
            return None
        return "256" if force == "2" else depth or "truecolor"
    tty = getattr(stream, "isatty", lambda: False)()
    return depth if tty and term != "dumb" else None


def _xterm256(r: int, g: int, b: int) -> int:
    """Nearest xterm-256 colour index: the 6x6x6 cube (16-231) or the grey ramp (232-255)."""
    levels = (0, 95, 135, 175, 215, 255)
    cube = [min(range(6), key=lambda i: abs(levels[i] - v)) for v in (r, g, b)]
    grey = min(23, max(0, round(((r + g + b) / 3 - 8) / 10)))
    cands = [(16 + 36 * cube[0] + 6 * cube[1] + cube[2], [levels[i] for i in cube]),
             (232 + grey, [8 + 10 * grey] * 3)]
    def dist(c: tuple[int, list[int]]) -> int:
        return sum((x - y) ** 2 for x, y in zip(c[1], (r, g, b), strict=True))

    return min(cands, key=dist)[0]


def swatches(colors: Tensor, *, use_color: bool | str | None, width: int = 2) -> str:
    """Colours ``[K, 3]`` as one line: coloured blocks, or space-separated hex codes.

    ``use_color``: ``"truecolor"`` (or True) 24-bit escapes, ``"256"`` the nearest
    xterm-256 colours, False/None hex codes.

    Example:
        >>> import torch
        >>> from torchpalette.cli.terminal import swatches
        >>> red = torch.tensor([[1.0, 0.0, 0.0]])
        >>> swatches(red, use_color=None), "[48;5;196m" in swatches(red, use_color="256")
        ('#ff0000', True)
    """
    if not use_color:
        return " ".join(tp.to_hex(colors.detach().float().cpu()))
    rgbs = rgb255(colors)
    if use_color == "256":
        return "".join(f"\x1b[48;5;{_xterm256(*c)}m{' ' * width}" for c in rgbs) + "\x1b[0m"
    return "".join(f"\x1b[48;2;{r};{g};{b}m{' ' * width}" for r, g, b in rgbs) + "\x1b[0m"
