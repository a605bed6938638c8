"""Figures for the report: a channel histogram and swatch grids, as pure functions.

Every SVG returned here is self-contained (no fonts, images, scripts or style sheets fetched
from elsewhere), so it can be inlined into an HTML file as is. Swatch grids follow the notebook:
10 swatches per row, optionally with each colour's hex code and a caption (e.g. a ΔE value)
below it. :func:`swatches_image` renders the same grid, without text, as a uint8 image tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import torch
from torch import Tensor

from torchpalette import to_hex

__all__ = ["histogram_svg", "swatches_svg", "swatches_image"]

_CURVES = (("R", "#e03030"), ("G", "#20a040"), ("B", "#3060e0"), ("luminance", "#404040"))


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


def histogram_svg(counts: Tensor, *, width: int = 512, height: int = 160) -> str:
    """Draw a ``histogram()`` result as R, G, B and luminance curves in an SVG.

    Args:
        counts: ``[4, bins]`` non-negative counts (rows R, G, B, luminance), as returned by
            :func:`torchpalette.histogram` for one image.
        width: drawing width in pixels, >= 16.
        height: drawing height in pixels, >= 16.

    Returns:
        An ``<svg>`` string: four polylines, each scaled to the largest count of all rows.

    Raises:
        TypeError: ``counts`` not a tensor, or non-int ``width``/``height``.
        ValueError: shape not ``[4, bins]`` with bins >= 2, negative or non-finite counts,
            or a size below 16.

    Example:
        >>> import torch, torchpalette as tp
        >>> from torchpalette.cli.figures import histogram_svg
        >>> svg = histogram_svg(tp.histogram(torch.zeros(3, 4, 4, dtype=torch.uint8), bins=8))
        >>> svg.startswith("<svg") and svg.count("<polyline") == 4
        True
    """
    if not isinstance(counts, Tensor):
        raise TypeError(f"counts: expected a torch.Tensor, got {type(counts).__name__}")
    width = _check_int(width, "width", 16)
    height = _check_int(height, "height", 16)
    if counts.ndim != 2 or counts.shape[0] != 4 or counts.shape[1] < 2:
        raise ValueError(f"counts: expected shape [4, bins] with bins >= 2, got "
                         f"{_shape(counts.shape)}")
    c = counts.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(c).all()):
        raise ValueError("counts: expected finite values, got NaN or inf")
    if bool((c < 0).any()):
        raise ValueError("counts: expected non-negative counts, got a negative value")
    peak = max(float(c.max()), 1.0)
    bins = c.shape[1]
    xs = [round(i * (width - 1) / (bins - 1), 2) for i in range(bins)]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="colour histogram">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for (name, stroke), row in zip(_CURVES, c.tolist()):
        pts = " ".join(f"{x},{round((height - 1) * (1 - n / peak), 2)}" for x, n in zip(xs, row))
        dash = ' stroke-dasharray="4 2"' if name == "luminance" else ""
        parts.append(f'<polyline fill="none" stroke="{stroke}" stroke-width="1.5"{dash} '
                     f'points="{pts}"><title>{name}</title></polyline>')
    parts.append("</svg>")
    return "".join(parts)


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
        An ``<svg>`` string with one ``<rect>`` per colour (its hex code as tooltip).

    Raises:
        TypeError: ``colors`` not a float tensor, or bad types of the other arguments.
        ValueError: shape not ``[K, 3]``, NaN or values outside [0, 1], ``per_row < 1``,
            ``size < 8``, or ``len(captions) != K``.

    Example:
        >>> import torch
        >>> from torchpalette.cli.figures import swatches_svg
        >>> svg = swatches_svg(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), captions=["", "ΔE 52"])
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
            raise ValueError(f"captions: expected {k} strings (one per colour), got {len(captions)}")
    hexes = to_hex(colors.detach().cpu())
    font = max(8, size // 5)
    lines = int(labels) + int(captions is not None)
    gap = 4
    cell_w, cell_h = size + gap, size + gap + lines * (font + 2)
    cols = min(per_row, k)
    rows = -(-k // per_row)
    width, height = cols * cell_w, rows * cell_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{k} colour swatches" '
        f'font-family="monospace" font-size="{font}" text-anchor="middle">'
    ]
    for i, hx in enumerate(hexes):
        x, y = (i % per_row) * cell_w + gap // 2, (i // per_row) * cell_h + gap // 2
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
