"""Palette files: write palettes as hex lists, JSON, CSS custom properties or GIMP ``.gpl``,
and read one back (the JSON of ``torchpalette palette``, a ``.gpl``, or any text of
``#rrggbb`` codes) for ``torchpalette quantize --palette``."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from torchpalette import to_hex

from .errors import UsageError

FORMATS = ("hex", "json", "css", "gpl")


def rgb255(colors: Tensor) -> list[list[int]]:
    """Float sRGB colours ``[K, 3]`` as 0-255 ints."""
    return colors.detach().float().cpu().mul(255).round().clamp(0, 255).int().tolist()


def format_palettes(entries: Sequence[tuple[str, Tensor, Tensor | None]], fmt: str) -> str:
    """Render ``(name, colors [K, 3], weights [K] | None)`` entries as hex, json, css or gpl.

    JSON is a list with one object per image: ``{"image", "colors": [{"hex", "rgb",
    "weight"}]}``; ``quantize --palette`` reads it back (and gpl or any text of hex codes).
    """
    rows = []
    for name, colors, weights in entries:
        w = [None] * colors.shape[0] if weights is None else weights.float().cpu().tolist()
        hexes = to_hex(colors.detach().float().cpu())
        rows.append((name, [(h, c, x) for h, c, x in zip(hexes, rgb255(colors), w, strict=True)]))
    if fmt == "json":
        out = [
            {"image": name, "colors": [{"hex": h, "rgb": c, "weight": x} for h, c, x in cols]}
            for name, cols in rows
        ]
        return json.dumps(out, indent=2)
    lines: list[str] = []
    if fmt == "gpl":
        names = ", ".join(Path(n).name for n, _ in rows)
        n_cols = max(len(c) for _, c in rows)
        lines += ["GIMP Palette", f"Name: {names}", f"Columns: {min(n_cols, 10)}", "#"]
    for i, (name, cols) in enumerate(rows):
        slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", Path(name).stem).strip("-") or f"image{i + 1}"
        prefix = "" if len(rows) == 1 else f"{slug}-"
        if fmt == "hex":
            lines += ([f"# {name}"] if len(rows) > 1 else []) + [h for h, _, _ in cols]
        elif fmt == "css":
            lines.append(f"/* torchpalette: {name} */")
            lines.append(":root {")
            for j, (h, _, x) in enumerate(cols, 1):
                note = "" if x is None else f" /* {100 * x:.2f}% */"
                lines.append(f"  --{prefix}color-{j}: {h};{note}")
            lines.append("}")
        else:  # gpl
            for j, (h, (r, g, b), x) in enumerate(cols, 1):
                note = "" if x is None else f" {100 * x:.2f}%"
                lines.append(f"{r:3d} {g:3d} {b:3d}\t{prefix}{j} {h}{note}")
    return "\n".join(lines)


def load_palette(path: Path, max_colors: int = 256) -> Tensor:
    """Read a palette file (the JSON of ``palette``/``dominant``, a GIMP ``.gpl``, or any text
    of ``#rrggbb`` / ``#rgb`` codes, or a ``.npy`` array ``[K, 3]``) as float sRGB ``[K, 3]``,
    1 <= K <= ``max_colors`` (256 for indexed PNGs; token outputs take more).

    A ``.npy`` of uint8 is 0-255 RGB (the ``palette.npy`` of ``--format tokens``); a float
    ``.npy`` is ImageGPT's ``kmeans_centers.npy`` form, RGB in [-1, 1], read as ``(c + 1) / 2``.

    Nothing is dropped or clipped silently: a GIMP colour line that is not three integers, a
    value outside 0-255, or a ``#`` code of another length is an error naming its line.

    Raises:
        UsageError: the file is missing, unreadable, not UTF-8 text, malformed, or holds no
            or too many colours; the one-line message starts with ``--palette:``.
    """
    if path.suffix.lower() == ".npy":
        return _load_npy(path, max_colors)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"--palette: expected a readable UTF-8 text file, got {str(path)!r} "
                         f"({why})") from None
    try:
        rgb = _parse_palette(text, path)
    except UsageError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        what = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        raise UsageError(f"--palette: expected a palette file (JSON of `torchpalette palette`, "
                         f".gpl or #rrggbb lines), got malformed {str(path)!r} ({what})") from None
    if not 1 <= len(rgb) <= max_colors:
        raise UsageError(f"--palette: expected 1..{max_colors} colours in {str(path)!r}, got "
                         f"{len(rgb)}")
    return torch.tensor(rgb, dtype=torch.float32) / 255.0


def _load_npy(path: Path, max_colors: int) -> Tensor:
    """A ``[K, 3]`` ``.npy``: uint8 0-255, or float in [-1, 1] (ImageGPT: ``(c + 1) / 2``)."""
    import numpy as np

    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--palette: expected a readable .npy array, got {str(path)!r} "
                         f"({' '.join(str(exc).split())})") from None
    if arr.ndim != 2 or arr.shape[1] != 3 or not 1 <= arr.shape[0] <= max_colors:
        raise UsageError(f"--palette: expected a [K, 3] array with 1 <= K <= {max_colors} in "
                         f"{str(path)!r}, got shape {list(arr.shape)}")
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 255.0)
    if arr.dtype.kind != "f" or not np.isfinite(arr).all() or arr.min() < -1 or arr.max() > 1:
        raise UsageError(f"--palette: expected uint8 0-255 or float RGB in [-1, 1] (ImageGPT's "
                         f"kmeans_centers.npy) in {str(path)!r}, got {arr.dtype} in "
                         f"[{arr.min()}, {arr.max()}]")
    return torch.from_numpy((arr.astype(np.float32) + 1) / 2)


def _bad(path: Path, where: str, why: str) -> UsageError:
    return UsageError(f"--palette: {str(path)!r} {where}: {why}")


def _checked(values: list[int], path: Path, where: str) -> list[int]:
    if len(values) != 3 or not all(0 <= x <= 255 for x in values):
        raise _bad(path, where, f"expected 3 values in 0-255, got {values}")
    return values


def _parse_palette(text: str, path: Path) -> list[list[int]]:
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped[:1] in ("[", "{"):
        data = json.loads(text)
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or len(data) != 1 or "colors" not in data[0]:
            got = f"{len(data)} palettes" if isinstance(data, list) else type(data).__name__
            raise UsageError(f"--palette: expected one palette in {str(path)!r}, got {got}")
        return [_checked([int(x) for x in c["rgb"]], path, f"colour {i}")
                for i, c in enumerate(data[0]["colors"], 1)]
    lines = text.splitlines()
    if stripped.startswith("GIMP Palette"):
        out = []
        for n, line in enumerate(lines, 1):
            body = line.strip()
            if not body or body.startswith("#") or n == 1 or re.match(r"(Name|Columns):", body):
                continue
            parts = body.split(None, 3)
            if len(parts) < 3 or not all(re.fullmatch(r"-?\d+", p) for p in parts[:3]):
                raise _bad(path, f"line {n}", f"expected 'R G B [name]', got {body[:40]!r}")
            out.append(_checked([int(p) for p in parts[:3]], path, f"line {n}"))
        return out
    out = []
    for n, line in enumerate(lines, 1):
        for code in re.findall(r"#([0-9a-zA-Z]+)\b", line):
            if re.fullmatch(r"[0-9a-fA-F]{6}", code):
                out.append([int(code[i:i + 2], 16) for i in (0, 2, 4)])
            elif re.fullmatch(r"[0-9a-fA-F]{3}", code):  # CSS shorthand: #abc = #aabbcc
                out.append([int(c * 2, 16) for c in code])
            else:
                raise _bad(path, f"line {n}", f"expected #rrggbb or #rgb, got #{code}")
    return out
