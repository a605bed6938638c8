"""The colour notebook of one image, analysed at a bounded cost, for a self-contained HTML page.

:func:`make_report` computes everything the notebook shows, in its order: the image and its
size, the channel histogram, the dominant colours (3-D histogram), the same colours sorted
perceptually, the CIEDE2000 difference between sorted neighbours (pairs under the just
noticeable difference, JND = 2.3, flagged), the k-means palette (sorted) with its neighbour
differences, and the image reduced to 2, 4, 8, 16, 32 and 64 colours, plain and with each
dither of :data:`DITHERS`, with each one's mean CIEDE2000 to the original, its palette and its
size as an indexed PNG. :func:`~torchpalette.cli.report_html.render_html` turns that into one
HTML page that makes no external request.

Any image size: the counting sections (histogram, dominant colours) count every pixel of the
decoded image, the histogram in bands of rows so its scratch memory stays small; the k-means
palette, the reductions and the pictures shown use the image resized (antialiased) to at most
:data:`ANALYSIS_PIXELS` pixels, as the notebook resizes before k-means. A 48-megapixel JPEG then
costs its decoded pixels plus a few hundred megabytes.

Degenerate images (one colour, 1x1) and one-colour settings (``colors=1``, ``top_n=1``) give
a report whose two-colour sections say why they are empty. Library warnings (e.g. fewer
distinct colours than asked) become notes in the report instead of raw ``UserWarning`` lines.

Reports carry a ``<meta name="generator" content="torchpalette-report">`` mark, so
:func:`write_report` can replace an earlier report but refuses any other file unless forced.
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

import torchpalette as tp
from torchpalette.io import SAMPLE

from .report_html import render_html
from .report_model import MARK, Reduction, Report

__all__ = ["Report", "Reduction", "make_report", "render_html", "write_report",
           "check_can_write", "analysis_size", "MARK", "REDUCED_COLORS", "DITHERS",
           "ANALYSIS_PIXELS", "SAMPLE"]

REDUCED_COLORS = (2, 4, 8, 16, 32, 64)
# every dither shown next to the plain reduction
DITHERS = ("ordered", "floyd-steinberg")
ANALYSIS_PIXELS = 512 * 512  # the bundled sample is analysed at full size
_BAND_PIXELS = 1 << 21  # histogram scratch is ~40 bytes a pixel: count 2M pixels at a time
_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
         ".webp": "image/webp", ".bmp": "image/bmp", ".gif": "image/gif"}


def analysis_size(height: int, width: int, max_pixels: int = ANALYSIS_PIXELS) -> tuple[int, int]:
    """The ``(height, width)`` an image is analysed at: the same aspect, at most ``max_pixels``.

    Args:
        height: image height, >= 1.
        width: image width, >= 1.
        max_pixels: pixel budget, >= 1.

    Returns:
        ``(h, w)`` with ``h * w <= max_pixels``, each >= 1; the input size when it fits.

    Example:
        >>> from torchpalette.cli.report import analysis_size
        >>> analysis_size(6000, 8000), analysis_size(512, 512), analysis_size(1, 10**7)
        ((443, 591), (512, 512), (1, 262144))
    """
    if height * width <= max_pixels:
        return height, width
    s = math.sqrt(max_pixels / (height * width))
    h, w = max(1, int(height * s)), max(1, int(width * s))
    while h * w > max_pixels:  # the max(1, .) of a very thin image can overshoot
        w = max_pixels // h
    return h, w


def _resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``[C, H, W]`` -> uint8 ``[C, h, w]``, antialiased (area-like) when shrinking."""
    if tuple(image.shape[-2:]) == size:
        return image
    x = image[None]
    if x.device.type != "cpu":  # uint8 antialiased resizing exists on the CPU only
        x = x.float()
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)[0] if out.is_floating_point() else out[0]


def _banded_histogram(image: Tensor) -> Tensor:
    """``tp.histogram`` of every pixel of ``[C, H, W]``, counted a band of rows at a time (the
    counts add up), so a 48-megapixel image needs no gigabytes of scratch."""
    rows = max(1, _BAND_PIXELS // image.shape[-1])
    bands = [tp.histogram(image[:, r:r + rows]) for r in range(0, image.shape[-2], rows)]
    return torch.stack(bands).sum(0)


def _png(image: Tensor, palette: Tensor | None = None) -> bytes:
    with tempfile.TemporaryDirectory(prefix="torchpalette-") as tmp:
        path = Path(tmp) / "image.png"
        tp.write_image(image.cpu(), path, palette=None if palette is None else palette.cpu())
        return path.read_bytes()


def _jpeg(image: Tensor) -> bytes:
    with tempfile.TemporaryDirectory(prefix="torchpalette-") as tmp:
        path = Path(tmp) / "image.jpg"
        tp.write_image(image.cpu(), path)
        return path.read_bytes()


def _rgb24(image: Tensor) -> Tensor:
    """uint8 ``[C, H, W]`` -> ``[H*W]`` int64 codes ``r << 16 | g << 8 | b``."""
    x = image[:3].flatten(1).long()
    return x[0] << 16 | x[1] << 8 | x[2]


def _mean_de(image: Tensor, reduced: Tensor) -> float:
    """Mean ΔE00 of ``reduced`` to ``image`` (uint8 ``[C, H, W]``) over pixels that are not
    fully transparent: exact, but each distinct (original, reduced) colour pair is computed
    once and weighted by its pixel count (a reduced image has few colours, so pairs repeat)."""
    key = _rgb24(image) << 24 | _rgb24(reduced)
    if image.shape[0] == 4:
        key = key[image[3].flatten() > 0]
    if key.numel() == 0:
        return 0.0
    pairs, counts = torch.unique(key, return_counts=True)

    def rgb(code: Tensor) -> Tensor:
        return torch.stack([code >> 16 & 255, code >> 8 & 255, code & 255], -1).float() / 255

    de = tp.delta_e(rgb(pairs >> 24), rgb(pairs & 0xFFFFFF))
    return float((de * counts).sum() / counts.sum())


def _used(pal: tp.Palette) -> tuple[Tensor, Tensor]:
    """Palette colours of weight > 0 only (the library pads an image of few colours with
    weight-0 duplicates), rounded to 8 bits as an indexed PNG stores them."""
    keep = pal.weights > 0
    keep[0] = True  # weights sort descending: the first always stays
    return pal.colors[keep].mul(255).round().div(255), pal.weights[keep]


def _sorted_with_de(colors: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Perceptually sorted colours and weights, and ΔE00 between neighbours (``[0]`` when
    there is only one colour: ``adjacent_delta_e`` needs two)."""
    order = tp.sort_colors(colors)[1]
    s = colors[order]
    de = tp.adjacent_delta_e(s) if len(s) > 1 else s.new_zeros(0)
    return s, weights[order], de


def _fit_alpha(reduced: Tensor) -> Tensor:
    """An RGBA reduction whose (colour, alpha) pairs fit the 256 entries of a PNG palette:
    partial alpha (not 0, not 255) rounded to coarser levels until they fit, else to 0 or 255
    (so an indexed PNG of any semi-transparent image can be written)."""
    if reduced.shape[0] != 4:
        return reduced
    a = reduced[3].to(torch.int64)
    key = _rgb24(reduced).reshape(a.shape) << 8
    partial = (a > 0) & (a < 255)
    for shift in range(9):
        level = ((a >> shift) << shift) + ((1 << shift) - 1) // 2
        level = torch.where(partial, level.clamp(1, 254), a)
        if len(torch.unique(key | level)) <= 256:
            break
    else:
        level = torch.where(partial, torch.where(a >= 128, 255, 0), a)
    out = reduced.clone()
    out[3] = level.to(torch.uint8)
    return out


def _reduce(work: Tensor, n: int, seed: int) -> list[Reduction]:
    """The plain and dithered reductions of ``work`` to ``n`` colours, one palette for all:
    the plain one is ``tp.quantize``'s own (one search), the dithered ones reuse its palette."""
    q = tp.quantize(work, n, seed=seed)
    colors, weights = _used(tp.Palette(q.palette, q.weights))
    out = []
    for dither in ("none", *DITHERS):
        reduced = q.image() if dither == "none" else tp.apply_palette(work, colors, dither=dither)
        reduced = _fit_alpha(reduced)
        out.append(Reduction(n, _png(reduced, colors), _mean_de(work, reduced), dither,
                             colors.cpu(), weights.cpu()))
    return out


def _load(source: str | os.PathLike | Tensor, device) -> tuple[Tensor, Path | None]:
    if isinstance(source, Tensor):
        if source.dtype != torch.uint8 or source.ndim != 3 or source.shape[0] not in (3, 4):
            raise ValueError(f"source: expected a uint8 image [3|4, H, W], got {source.dtype} "
                             f"{list(source.shape)}")
        return source.to(device), None
    path = Path(source)
    return tp.read_image(path).to(device), path


def _shown(image: Tensor, work: Tensor, path: Path | None) -> tuple[bytes, str, int]:
    """Picture of the image section: the file itself when it is analysed at full size in a
    format browsers show, else the analysed image (JPEG when opaque: a fraction of a PNG)."""
    mime = _MIME.get(path.suffix.lower()) if path is not None else None
    file_bytes = path.stat().st_size if path is not None else len(_png(image))
    if mime and path is not None and work.shape == image.shape:
        return path.read_bytes(), mime, file_bytes
    if work.shape[0] == 3 and work.shape[-1] * work.shape[-2] > 4096:
        return _jpeg(work), "image/jpeg", file_bytes
    return _png(work), "image/png", file_bytes


def _notes(caught: list[warnings.WarningMessage], image: Tensor, work: Tensor) -> list[str]:
    """One line per distinct warning, plus what was analysed at which size."""
    notes = []
    if work.shape != image.shape:
        notes.append(f"Large image: the histogram and dominant colours count all "
                     f"{image.shape[-1]} x {image.shape[-2]} pixels; the k-means palette, the "
                     f"reductions and the pictures use it resized to {work.shape[-1]} x "
                     f"{work.shape[-2]} (at most {ANALYSIS_PIXELS:,} pixels).")
    seen = set()
    for w in caught:
        text = str(w.message)
        if "fewer distinct colours than k" in text:
            text = ("The image has fewer distinct colours than some palette sizes asked for: "
                    "those palettes show only the colours that exist.")
        if text not in seen:
            seen.add(text)
            notes.append(text)
    return notes


def make_report(
    source: str | os.PathLike | Tensor,
    *,
    top_n: int = 32,
    colors: int = 32,
    device: torch.device | str = "cpu",
    reduced: tuple[int, ...] = REDUCED_COLORS,
    seed: int = 0,
    max_pixels: int = ANALYSIS_PIXELS,
) -> Report:
    """Compute every section of the report for an image.

    Args:
        source: an image file (png, jpg, webp, bmp, tiff, gif), or a uint8 image
            ``[3|4, H, W]``.
        top_n: number of dominant colours, >= 1.
        colors: size of the k-means palette, >= 1.
        device: where the computation runs.
        reduced: colour counts of the reduced images.
        seed: k-means seed.
        max_pixels: pixel budget of the analysed image (k-means, reductions, pictures).

    Returns:
        A :class:`Report` of CPU tensors; library warnings are in ``notes``, never raised.

    Raises:
        ValueError: unreadable image or bad sizes (from the functions called).
        FileNotFoundError: ``source`` does not exist.

    Example:
        >>> import torch
        >>> from torchpalette.cli.report import make_report, render_html
        >>> image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
        >>> rep = make_report(image, top_n=4, colors=4, reduced=(2, 4))
        >>> [r.colors for r in rep.reductions], rep.palette.shape, "<svg" in render_html(rep)
        ([2, 4], torch.Size([4, 3]), True)
        >>> make_report(torch.zeros(3, 1, 1, dtype=torch.uint8), colors=1).palette_de.shape
        torch.Size([0])
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image, path = _load(source, device)
        h, w = image.shape[-2:]
        work = _resize(image, analysis_size(h, w, max_pixels))
        dom = tp.dominant_colors(image, top_n=top_n)
        dom_sorted, dom_sorted_w, dom_de = _sorted_with_de(dom.colors, dom.weights)
        pal_colors, pal_weights = _used(tp.palette(work, k=colors, seed=seed))
        pal_sorted, pal_sorted_w, pal_de = _sorted_with_de(pal_colors, pal_weights)
        plain, dithered = [], []
        for n in reduced:
            first, *rest = _reduce(work, n, seed)
            plain.append(first)
            dithered.extend(rest)
        shown, mime, file_bytes = _shown(image, work, path)
        hist = _banded_histogram(image)
    return Report(
        name=path.name if path is not None else "image", width=image.shape[-1],
        height=image.shape[-2], analysed_width=work.shape[-1], analysed_height=work.shape[-2],
        original=shown, original_mime=mime, original_bytes=file_bytes,
        reference_png_bytes=len(_png(work)), histogram=hist.cpu(), dominant=dom.colors.cpu(),
        dominant_weights=dom.weights.cpu(), dominant_sorted=dom_sorted.cpu(),
        dominant_sorted_weights=dom_sorted_w.cpu(), dominant_de=dom_de.cpu(),
        palette=pal_colors.cpu(), palette_weights=pal_weights.cpu(),
        palette_sorted=pal_sorted.cpu(), palette_sorted_weights=pal_sorted_w.cpu(),
        palette_de=pal_de.cpu(), reductions=plain, dithered=dithered,
        notes=_notes(caught, image, work))


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
