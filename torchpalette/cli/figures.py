"""Figures for the report: a channel histogram and swatch grids, as pure functions.

Every SVG returned here is self-contained (no fonts, images, scripts or style sheets fetched
from elsewhere), so it can be inlined into an HTML file as is. Swatch grids follow the notebook:
10 swatches per row, optionally with each colour's hex code and a caption (e.g. a ΔE value)
below it. :func:`swatches_image` renders the same grid, without text, as a uint8 image tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

import torch
from torch import Tensor

from torchpalette import to_hex

__all__ = ["histogram_svg", "histogram_legend", "swatches_svg", "swatches_image"]

_CURVES = (("red", "#d62728", ""), ("green", "#2ca02c", ""), ("blue", "#1f5fd6", ""),
           ("luminance", "#333333", "6 3"))  # luminance dashed: told apart in grey print
_SCALES = ("linear", "log", "both")
# plot box inside the drawing: room on the left for count ticks and the axis title, below for
# level ticks and the axis title, at up to twice the default font size (pages enlarge the text
# when the drawing is shown narrow, so it stays readable on a phone)
_LEFT, _RIGHT, _TOP, _BOTTOM = 118, 34, 18, 82


def _shape(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _check_swatch_colors(colors: Tensor) -> Tensor:
    """Colours ``[K, 3]`` float in [0, 1]; :func:`torchpalette.to_hex` checks type and range."""
    if isinstance(colors, Tensor) and colors.ndim != 2:
        raise ValueError(f"colors: expected shape [K, 3], got {_shape(colors.shape)}")
    if isinstance(colors, Tensor) and not colors.is_floating_point():
        raise TypeError(f"colors: expected a floating dtype, got {colors.dtype}")
    to_hex(colors)
    return colors


def _check_int(value, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: expected an int in [{low}, inf], got {value}")
    return value


def _compact(n: float) -> str:
    """Tick label: 950, 12k, 1.5M (short, so it fits the left margin)."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


def _linear_ticks(peak: float) -> list[float]:
    """0 and multiples of a 1-2-5 step, at most about 5 ticks up to ``peak``."""
    step = 1.0
    while peak / step > 5:
        for m in (2, 2.5, 2):  # 1 -> 2 -> 5 -> 10 -> 20 ...
            step *= m
            if peak / step <= 5:
                break
    return [i * step for i in range(int(peak // step) + 1)]


def _scale_group(c: Tensor, scale: str, w: int, h: int, peak: float) -> str:
    """One ``<g>``: y ticks, grid lines and the four curves for a linear or log count axis."""
    pw, ph = w - _LEFT - _RIGHT, h - _TOP - _BOTTOM
    if scale == "log":  # log10(1 + n) keeps empty bins at 0 and is exact at the ticks' scale
        def y(n: float) -> float:
            return _TOP + ph * (1 - math.log10(1 + n) / math.log10(1 + peak))
        ticks = [10.0 ** e for e in range(int(math.log10(peak)) + 1)]  # 0 is the x axis
    else:
        def y(n: float) -> float:
            return _TOP + ph * (1 - n / peak)
        ticks = _linear_ticks(peak)
    parts = [f'<g class="scale-{scale}">']
    for t in ticks:
        ty = round(y(t), 2)
        parts.append(f'<line x1="{_LEFT}" x2="{w - _RIGHT}" y1="{ty}" y2="{ty}" '
                     f'stroke="#e4e4e4"/><text x="{_LEFT - 8}" y="{ty}" text-anchor="end" '
                     f'dominant-baseline="middle">{_compact(t)}</text>')
    bins = c.shape[1]
    xs = [round(_LEFT + i * pw / (bins - 1), 2) for i in range(bins)]
    for (name, stroke, dash), row in zip(_CURVES, c.tolist(), strict=True):
        pts = " ".join(f"{x},{round(y(n), 2)}" for x, n in zip(xs, row, strict=True))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<polyline fill="none" stroke="{stroke}" stroke-width="1.5"{dashes} '
                     f'points="{pts}"><title>{name}</title></polyline>')
    parts.append("</g>")
    return "".join(parts)


def _x_axis(w: int, h: int, bins: int) -> str:
    """Level ticks 0, 64, 128, 192, 255 under the plot, and both axis titles."""
    pw, base = w - _LEFT - _RIGHT, h - _BOTTOM
    parts = [f'<line x1="{_LEFT}" x2="{w - _RIGHT}" y1="{base}" y2="{base}" stroke="#555"/>',
             f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{base}" stroke="#555"/>']
    for level in (0, 64, 128, 192, 255):
        tx = round(_LEFT + pw * min(level * bins // 256, bins - 1) / (bins - 1), 2)
        parts.append(f'<line x1="{tx}" x2="{tx}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
                     f'<text x="{tx}" y="{base + 7}" text-anchor="middle" '
                     f'dominant-baseline="hanging">{level}</text>')
    parts.append(f'<text x="{_LEFT + pw / 2}" y="{h - 4}" text-anchor="middle">level (0-255)'
                 "</text>")
    # "hanging" puts the rotated title's glyphs right of x = 4, whatever the font size
    parts.append(f'<text transform="translate(4 {_TOP + (base - _TOP) / 2}) rotate(-90)" '
                 'text-anchor="middle" dominant-baseline="hanging">pixels</text>')
    return "".join(parts)


def histogram_svg(counts: Tensor, *, width: int = 900, height: int = 320,
                  scale: str = "linear") -> str:
    """Draw a ``histogram()`` result as R, G, B and (dashed) luminance curves with axes.

    The drawing has a ``viewBox``, so CSS ``width: 100%; height: auto`` scales it to any page
    width. The legend is :func:`histogram_legend` (HTML, so it reflows on narrow pages).

    Args:
        counts: ``[4, bins]`` non-negative counts (rows R, G, B, luminance), as returned by
            :func:`torchpalette.histogram` for one image.
        width: drawing width in pixels, >= 160.
        height: drawing height in pixels, >= 120.
        scale: count axis ``"linear"``, ``"log"`` (``log10(1 + count)``, so a spike does not
            flatten the rest) or ``"both"``: two groups of class ``scale-linear`` and
            ``scale-log`` that a page shows one at a time.

    Returns:
        An ``<svg>`` string: axes with ticks and titles, and four polylines per scale, each
        scaled to the largest count of all rows.

    Raises:
        TypeError: ``counts`` not a tensor, or non-int ``width``/``height``.
        ValueError: shape not ``[4, bins]`` with bins >= 2, negative or non-finite counts,
            a size below the minimum, or an unknown ``scale``.

    Example:
        >>> import torch, torchpalette as tp
        >>> from torchpalette.cli.figures import histogram_svg
        >>> svg = histogram_svg(tp.histogram(torch.zeros(3, 4, 4, dtype=torch.uint8), bins=8))
        >>> svg.startswith("<svg") and svg.count("<polyline") == 4
        True
        >>> histogram_svg(torch.ones(4, 8), scale="both").count("<polyline")
        8
    """
    if not isinstance(counts, Tensor):
        raise TypeError(f"counts: expected a torch.Tensor, got {type(counts).__name__}")
    width = _check_int(width, "width", 160)
    height = _check_int(height, "height", 120)
    if scale not in _SCALES:
        raise ValueError(f"scale: expected one of {', '.join(_SCALES)}, got {scale!r}")
    if counts.ndim != 2 or counts.shape[0] != 4 or counts.shape[1] < 2:
        raise ValueError(f"counts: expected shape [4, bins] with bins >= 2, got "
                         f"{_shape(counts.shape)}")
    c = counts.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(c).all()):
        raise ValueError("counts: expected finite values, got NaN or inf")
    if bool((c < 0).any()):
        raise ValueError("counts: expected non-negative counts, got a negative value")
    peak = max(float(c.max()), 1.0)
    scales = ("linear", "log") if scale == "both" else (scale,)
    return "".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="colour histogram" '
        'font-family="sans-serif" font-size="14" fill="#333">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        *(_scale_group(c, s, width, height, peak) for s in scales),
        _x_axis(width, height, c.shape[1]),
        "</svg>",
    ])


def histogram_legend() -> str:
    """The histogram's legend as HTML: a short line sample (dashed for luminance) per curve.

    Example:
        >>> from torchpalette.cli.figures import histogram_legend
        >>> histogram_legend().count("<li>")
        4
    """
    items = "".join(
        f'<li><svg viewBox="0 0 28 8" width="28" height="8" aria-hidden="true"><line x1="0" '
        f'x2="28" y1="4" y2="4" stroke="{stroke}" stroke-width="2"'
        + (f' stroke-dasharray="{dash}"' if dash else "") + f"/></svg> {name}</li>"
        for name, stroke, dash in _CURVES)
    return f'<ul class="legend">{items}</ul>'


def swatches_svg(
    colors: Tensor,
    *,
    per_row: int = 10,
    size: int = 48,
    labels: bool = True,
    captions: Sequence[str] | None = None,
) -> str:
    """Draw ``K`` colours as a grid of square swatches, ``per_row`` per row, in an SVG.

    Args:
        colors: ``[K, 3]`` float sRGB in [0, 1].
        per_row: swatches per row, >= 1 (the notebook uses 10).
        size: swatch side in pixels, >= 8.
        labels: write each colour's hex code under its swatch.
        captions: ``K`` extra text lines, one under each swatch (e.g. ΔE to the previous
            colour); text is XML-escaped.

    Returns:
        An ``<svg>`` string with one ``<rect>`` per colour (its hex code as tooltip); each
        cell is as wide as its longest text line, so labels never overlap.

    Raises:
        TypeError: ``colors`` not a float tensor, or bad types of the other arguments.
        ValueError: shape not ``[K, 3]``, NaN or values outside [0, 1], ``per_row < 1``,
            ``size < 8``, or ``len(captions) != K``.

    Example:
        >>> import torch
        >>> from torchpalette.cli.figures import swatches_svg
        >>> red_blue = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
        >>> svg = swatches_svg(red_blue, captions=["", "ΔE 52"])
        >>> svg.count("<rect"), "#ff0000" in svg, "ΔE 52" in svg
        (2, True, True)
    """
    _check_swatch_colors(colors)
    per_row = _check_int(per_row, "per_row", 1)
    size = _check_int(size, "size", 8)
    if not isinstance(labels, bool):
        raise TypeError(f"labels: expected a bool, got {type(labels).__name__}")
    k = colors.shape[0]
    if captions is not None:
        if isinstance(captions, str) or not isinstance(captions, Sequence):
            raise TypeError(f"captions: expected a sequence of str, got {type(captions).__name__}")
        if len(captions) != k:
            raise ValueError(
                f"captions: expected {k} strings (one per colour), got {len(captions)}")
    hexes = to_hex(colors.detach().cpu())
    if not isinstance(hexes, list):  # [K, 3] colours give one string per colour
        raise TypeError(f"colors: expected shape [K, 3], got {list(colors.shape)}")
    font = max(8, size // 5)
    lines = int(labels) + int(captions is not None)
    gap = 4
    # cells as wide as the longest text line (monospace advance <= 0.62 em), so labels of
    # neighbouring swatches can never overlap however long a caption is
    texts = (hexes if labels else []) + ([str(c) for c in captions] if captions else [])
    text_w = math.ceil(0.62 * font * max((len(t) for t in texts), default=0))
    cell_w, cell_h = max(size, text_w) + gap, size + gap + lines * (font + 2)
    cols = min(per_row, k)
    rows = -(-k // per_row)
    width, height = cols * cell_w, rows * cell_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{k} colour swatches" '
        f'font-family="monospace" font-size="{font}" text-anchor="middle">'
    ]
    for i, hx in enumerate(hexes):
        x = (i % per_row) * cell_w + (cell_w - size) // 2
        y = (i // per_row) * cell_h + gap // 2
        parts.append(f'<rect x="{x}" y="{y}" width="{size}" height="{size}" fill="{hx}" '
                     f'stroke="#888888" stroke-width="0.5"><title>{hx}</title></rect>')
        text_y = y + size + font
        cx = x + size / 2
        if labels:
            parts.append(f'<text x="{cx}" y="{text_y}">{hx}</text>')
            text_y += font + 2
        if captions is not None:
            parts.append(f'<text x="{cx}" y="{text_y}">{escape(str(captions[i]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def swatches_image(colors: Tensor, *, per_row: int = 10, size: int = 32, gap: int = 2) -> Tensor:
    """Render ``K`` colours as a swatch grid image (white gaps), ``per_row`` per row.

    Args:
        colors: ``[K, 3]`` float sRGB in [0, 1].
        per_row: swatches per row, >= 1.
        size: swatch side in pixels, >= 1.
        gap: white border between swatches in pixels, >= 0.

    Returns:
        ``[3, H, W]`` uint8 on the colours' device, ``H = rows * (size + gap) + gap``,
        ``W = min(K, per_row) * (size + gap) + gap``; unused cells of the last row are white.

    Raises:
        TypeError: ``colors`` not a float tensor, or non-int sizes.
        ValueError: shape not ``[K, 3]``, NaN or values outside [0, 1], or sizes out of range.

    Example:
        >>> import torch
        >>> from torchpalette.cli.figures import swatches_image
        >>> img = swatches_image(torch.tensor([[1.0, 0.0, 0.0]] * 12), size=4, gap=1)
        >>> img.shape, img[:, 1, 1].tolist(), img[:, 0, 0].tolist()
        (torch.Size([3, 11, 51]), [255, 0, 0], [255, 255, 255])
    """
    _check_swatch_colors(colors)
    per_row = _check_int(per_row, "per_row", 1)
    size = _check_int(size, "size", 1)
    gap = _check_int(gap, "gap", 0)
    k = colors.shape[0]
    cols, rows = min(per_row, k), -(-k // per_row)
    u8 = colors.detach().mul(255).round().to(torch.uint8)
    grid = torch.full((rows * per_row, 3), 255, dtype=torch.uint8, device=colors.device)
    grid[:k] = u8
    cell = size + gap
    # [rows, per_row, 3] -> one cell per swatch, then a white border of `gap` on top/left
    cells = grid.view(rows, per_row, 3)[:, :cols].permute(2, 0, 1)  # [3, rows, cols]
    img = cells.repeat_interleave(cell, 1).repeat_interleave(cell, 2)
    inside = (torch.arange(rows * cell, device=colors.device) % cell >= gap)
    inside_w = (torch.arange(cols * cell, device=colors.device) % cell >= gap)
    img = torch.where(inside[:, None] & inside_w[None, :], img, 255)
    out = torch.full((3, rows * cell + gap, cols * cell + gap), 255, dtype=torch.uint8,
                     device=colors.device)
    out[:, : rows * cell, : cols * cell] = img
    return out
