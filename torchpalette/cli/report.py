"""The colour notebook of one image as a single self-contained HTML file.

:func:`make_report` computes everything the notebook shows, in its order: the image and its
size, the channel histogram, the dominant colours (3-D histogram), the same colours sorted
perceptually, the CIEDE2000 difference between sorted neighbours (pairs under the just
noticeable difference, JND = 2.3, flagged), the k-means palette (sorted) with its neighbour
differences, and the image reduced to 2, 4, 8, 16, 32 and 64 colours with each one's mean
CIEDE2000 to the original and its size as an indexed PNG. :func:`render_html` turns that into
one HTML page whose pictures are inline (data URIs and SVG): it makes no external request.

Reports carry a ``<meta name="generator" content="torchpalette-report">`` mark, so
:func:`write_report` can replace an earlier report but refuses any other file unless forced.
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from torchpalette import (
    JND,
    adjacent_delta_e,
    apply_palette,
    delta_e,
    dominant_colors,
    histogram,
    palette,
    read_image,
    sort_colors,
    to_hex,
    write_image,
)
from torchpalette.io import SAMPLE

from .figures import histogram_svg, swatches_svg

__all__ = ["Report", "Reduction", "make_report", "render_html", "write_report",
           "check_can_write", "MARK", "REDUCED_COLORS"]

MARK = '<meta name="generator" content="torchpalette-report">'
REDUCED_COLORS = (2, 4, 8, 16, 32, 64)
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".webp": "image/webp", ".bmp": "image/bmp", ".gif": "image/gif"}


@dataclass
class Reduction:
    """The image reduced to ``colors`` colours: its indexed PNG bytes and mean ΔE00."""

    colors: int
    png: bytes
    mean_de: float

    @property
    def png_bytes(self) -> int:
        return len(self.png)


@dataclass
class Report:
    """Everything the report shows (CPU tensors; colours ``[K, 3]`` sRGB float)."""

    name: str
    width: int
    height: int
    original: bytes
    original_mime: str
    histogram: Tensor  # [4, bins] R, G, B, luminance counts
    dominant: Tensor  # [N, 3] by count
    dominant_weights: Tensor  # [N]
    dominant_sorted: Tensor  # [N, 3]
    dominant_de: Tensor  # [N - 1] ΔE00 between sorted neighbours
    palette: Tensor  # [K, 3] by weight
    palette_sorted: Tensor  # [K, 3]
    palette_de: Tensor  # [K - 1]
    reductions: list[Reduction]

    @property
    def original_bytes(self) -> int:
        return len(self.original)


def _png_bytes(image: Tensor, colors: Tensor | None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="torchpalette-") as tmp:
        path = Path(tmp) / "image.png"
        write_image(image.cpu(), path, palette=None if colors is None else colors.cpu())
        return path.read_bytes()


def _pixels(image: Tensor) -> tuple[Tensor, Tensor | None]:
    """Image ``[..., 3|4, H, W]`` -> (float colours ``[..., H*W, 3]``, opaque weights or None)."""
    x = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    colors = x[..., :3, :, :].flatten(-2).transpose(-1, -2)
    weights = (x[..., 3, :, :].flatten(-2) > 0).float() if x.shape[-3] == 4 else None
    return colors, weights


def _mean_de(image: Tensor, reduced: Tensor) -> Tensor:
    """Mean ΔE00 per reduced image ``[R, C, H, W]`` to ``image`` ``[C, H, W]`` over pixels that
    are not fully transparent."""
    a, w = _pixels(image)
    b, _ = _pixels(reduced)
    de = delta_e(a.expand_as(b), b)  # [R, H*W]
    if w is None:
        return de.mean(-1)
    return (de * w).sum(-1) / w.sum().clamp_min(1)


def make_report(
    source: str | os.PathLike | Tensor,
    *,
    top_n: int = 32,
    colors: int = 32,
    device: torch.device | str = "cpu",
    reduced: tuple[int, ...] = REDUCED_COLORS,
    seed: int = 0,
) -> Report:
    """Compute every section of the report for the image at ``path``.

    Args:
        source: an image file (png, jpg, webp, bmp, tiff), or a uint8 image ``[3|4, H, W]``.
        top_n: number of dominant colours.
        colors: size of the k-means palette.
        device: where the computation runs.
        reduced: colour counts of the reduced images.
        seed: k-means seed.

    Returns:
        A :class:`Report` of CPU tensors.

    Raises:
        ValueError: unreadable image or bad sizes (from the functions called).

    Example:
        >>> import torch
        >>> from torchpalette.cli.report import make_report, render_html
        >>> image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
        >>> rep = make_report(image, top_n=4, colors=4, reduced=(2, 4))
        >>> [r.colors for r in rep.reductions], rep.palette.shape, "<svg" in render_html(rep)
        ([2, 4], torch.Size([4, 3]), True)
    """
    if isinstance(source, Tensor):
        path, image = None, source.to(device)
        if image.dtype != torch.uint8 or image.ndim != 3:
            raise ValueError(f"source: expected a uint8 image [3|4, H, W], got {image.dtype} "
                             f"{list(image.shape)}")
    else:
        path = Path(source)
        image = read_image(path).to(device)
    hist = histogram(image)
    dom = dominant_colors(image, top_n=top_n)
    dom_sorted, _ = sort_colors(dom.colors)
    pal = palette(image, k=colors, seed=seed)
    pal_sorted, _ = sort_colors(pal.colors)
    reductions, outs = [], []
    for n in reduced:
        colors8 = palette(image, k=n, seed=seed).colors.mul(255).round().div(255)  # PNG's grid
        out = apply_palette(image, colors8)
        outs.append(out)
        reductions.append(Reduction(n, _png_bytes(out, colors8), 0.0))
    for r, d in zip(reductions, _mean_de(image, torch.stack(outs)).tolist()):
        r.mean_de = d
    mime = _MIME.get(path.suffix.lower()) if path is not None else None
    original = path.read_bytes() if mime else _png_bytes(image, None)
    return Report(
        name=path.name if path is not None else "image", width=image.shape[-1], height=image.shape[-2], original=original,
        original_mime=mime or "image/png", histogram=hist.cpu(), dominant=dom.colors.cpu(),
        dominant_weights=dom.weights.cpu(), dominant_sorted=dom_sorted.cpu(),
        dominant_de=adjacent_delta_e(dom_sorted).cpu(), palette=pal.colors.cpu(),
        palette_sorted=pal_sorted.cpu(), palette_de=adjacent_delta_e(pal_sorted).cpu(),
        reductions=reductions)


# ----------------------------------------------------------------------------- HTML
def _hex(c: Tensor) -> str:
    return to_hex(c.float().clamp(0, 1))


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _swatches(colors: Tensor, captions: list[str] | None = None) -> str:
    return f'<div class="swatches">{swatches_svg(colors.float(), per_row=10, captions=captions)}</div>'


def _de_captions(de: Tensor) -> list[str]:
    """Caption per swatch: ΔE00 to the previous colour, "< JND" where under 2.3."""
    return [""] + [f"ΔE {d:.1f}" + (" < JND" if d < JND else "") for d in de.tolist()]


def _neighbour_table(colors: Tensor, de: Tensor) -> str:
    rows = []
    for i, d in enumerate(de.tolist()):
        a, b = _hex(colors[i]), _hex(colors[i + 1])
        flag = ' class="jnd"' if d < JND else ""
        mark = "under JND" if d < JND else ""
        rows.append(f"<tr{flag}><td><i style=\"background:{a}\"></i>{a}</td>"
                    f"<td><i style=\"background:{b}\"></i>{b}</td><td>{d:.2f}</td><td>{mark}</td></tr>")
    n = int((de < JND).sum())
    return (f"<p>{n} of {len(rows)} neighbouring pairs are under the JND ({JND}).</p>"
            f'<table class="de"><tr><th>colour</th><th>next</th><th>ΔE00</th><th></th></tr>'
            f'{"".join(rows)}</table>')


_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h2{margin-top:2em;border-bottom:1px solid #ddd}
table.de{border-collapse:collapse;font:12px monospace}table.de td,table.de th{padding:2px 8px}
table.de i{display:inline-block;width:14px;height:14px;margin-right:4px;vertical-align:middle}
tr.jnd{background:#fff3c4}
.grid{display:grid;grid-template-columns:repeat(3,1fr);gap:12px}
.grid figure{margin:0}.grid img,.original img{max-width:100%;image-rendering:pixelated}"""


def render_html(rep: Report) -> str:
    """The report as one self-contained HTML page (no external requests)."""
    name = html.escape(rep.name)
    pct = [f"{100 * w:.1f}%" for w in rep.dominant_weights.tolist()]
    figures = "".join(
        f'<figure class="reduced"><img alt="{r.colors} colours" '
        f'src="{_data_uri(r.png, "image/png")}"><figcaption>{r.colors} colours: mean ΔE00 '
        f"{r.mean_de:.2f}; indexed PNG {r.png_bytes / 1024:.1f} KiB vs original "
        f"{rep.original_bytes / 1024:.1f} KiB ({100 * r.png_bytes / max(rep.original_bytes, 1):.0f}%)"
        f"</figcaption></figure>" for r in rep.reductions)
    sections = [
        ("image", "Image", f'<div class="original"><img alt="{name}" src="'
         f'{_data_uri(rep.original, rep.original_mime)}"></div><p>{name}: {rep.width} x '
         f"{rep.height} pixels, {rep.original_bytes / 1024:.1f} KiB</p>"),
        ("histogram", "Channel histogram", histogram_svg(rep.histogram)
         + "<p>red, green, blue and luminance counts</p>"),
        ("dominant", f"{len(rep.dominant)} dominant colours", _swatches(rep.dominant, pct)),
        ("sorted", "Dominant colours, sorted", _swatches(rep.dominant_sorted, _de_captions(rep.dominant_de))),
        ("neighbours", "ΔE00 between sorted neighbours",
         _neighbour_table(rep.dominant_sorted, rep.dominant_de)),
        ("palette", f"k-means palette ({len(rep.palette)} colours, sorted)",
         _swatches(rep.palette_sorted, _de_captions(rep.palette_de)) + _neighbour_table(rep.palette_sorted, rep.palette_de)),
        ("reduced", "Reduced colours", f'<div class="grid">{figures}</div>'),
    ]
    body = "".join(f'<section id="{sid}"><h2>{title}</h2>{content}</section>'
                   for sid, title, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{MARK}'
            f"<title>Colours of {name}</title><style>{_CSS}</style></head>"
            f"<body><h1>Colours of {name}</h1>{body}</body></html>\n")


def check_can_write(path: str | os.PathLike) -> None:
    """Raise ``FileExistsError`` if ``path`` exists and is not an earlier report."""
    path = Path(path)
    if not path.exists():
        return
    if path.is_file():
        with open(path, "rb") as f:
            if MARK.encode() in f.read(4096):
                return
    raise FileExistsError(f"refusing to overwrite {str(path)!r}: not a torchpalette report "
                          "(use --force)")


def write_report(rep: Report, path: str | os.PathLike, *, force: bool = False) -> None:
    """Write :func:`render_html` of ``rep`` to ``path`` atomically (temp file + rename).

    Raises:
        FileExistsError: ``path`` exists, is not an earlier report, and ``force`` is False.
    """
    path = Path(path)
    if not force:
        check_can_write(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(render_html(rep), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

