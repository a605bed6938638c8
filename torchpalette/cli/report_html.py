"""Render a :class:`~torchpalette.cli.report.Report` as one self-contained, interactive page.

Every picture is inline (data URIs and SVG) and the style sheet and script are inline
(:mod:`~torchpalette.cli.report_assets`), so the page works from a ``file://`` URL offline.
Each colour is a swatch card (``<button class="swatch">``) carrying its hex code, RGB, CIELAB
(from :func:`torchpalette.srgb_to_lab`) and weight; each reduced image is a comparison slider
over the original, with its palette under it. Sections that need two colours say why they are
empty when there is only one.
"""

from __future__ import annotations

import base64
from html import escape

from torch import Tensor

import torchpalette as tp

from .figures import histogram_legend, histogram_svg
from .report_assets import CSS, SCRIPT
from .report_model import MARK, Reduction, Report

__all__ = ["render_html", "swatch_cards", "MARK"]

_DITHER_NAMES = {"none": "no dither", "ordered": "ordered dither",
                 "floyd-steinberg": "Floyd-Steinberg dither"}


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _colours(n: int) -> str:
    return f"{n} colour" + ("" if n == 1 else "s")


def _kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def _swatch_infos(colors: Tensor, weights: Tensor | None) -> list[tuple[str, str]]:
    """``(hex, "hex · RGB r g b · Lab L a b · weight w%")`` per colour of ``[K, 3]``."""
    if len(colors) == 0:
        return []
    c = colors.detach().float().cpu().clamp(0, 1)
    hexes = tp.to_hex(c)
    rgb = c.mul(255).round().int().tolist()
    lab = tp.srgb_to_lab(c).tolist()
    out = []
    for i, hx in enumerate(hexes):
        text = (f"{hx} · RGB {rgb[i][0]} {rgb[i][1]} {rgb[i][2]} · "
                f"Lab {lab[i][0]:.1f} {lab[i][1]:.1f} {lab[i][2]:.1f}")
        if weights is not None:
            text += f" · weight {100 * float(weights[i]):.2f}%"
        out.append((hx, text))
    return out


def _button(hx: str, info: str, inner: str = "") -> str:
    return (f'<button type="button" class="swatch" style="--c:{hx}" data-hex="{hx}" '
            f'data-info="{escape(info)}" title="{escape(info)} (click to copy)">{inner}</button>')


def swatch_cards(colors: Tensor, weights: Tensor | None = None,
                 captions: list[list[tuple[str, str]]] | None = None) -> str:
    """Colours as a grid of swatch cards: colour, hex code and caption lines under it.

    Args:
        colors: ``[K, 3]`` float sRGB in [0, 1].
        weights: ``[K]`` shares in [0, 1] (shown on hover), or None.
        captions: per colour, extra ``(text, css_class)`` lines under the hex code.

    Returns:
        ``<div class="swatches">`` with ``K`` ``<button class="swatch">`` cards.

    Example:
        >>> import torch
        >>> from torchpalette.cli.report_html import swatch_cards
        >>> html = swatch_cards(torch.tensor([[1.0, 0.0, 0.0]]), torch.tensor([1.0]))
        >>> html.count('class="swatch"'), "#ff0000" in html, "Lab 53.2 80.1 67.2" in html
        (1, True, True)
    """
    cards = []
    for i, (hx, info) in enumerate(_swatch_infos(colors, weights)):
        lines = [(hx, "hex")] + (captions[i] if captions is not None else [])
        spans = "".join(f'<span class="label {cls}">{escape(text)}</span>' for text, cls in lines)
        cards.append(_button(hx, info, f'<span class="chip"></span>{spans}'))
    return f'<div class="swatches">{"".join(cards)}</div>'


def _chips(colors: Tensor, weights: Tensor | None) -> str:
    """A reduced image's palette as small label-less swatches (details on hover)."""
    return ('<div class="chips">'
            + "".join(_button(hx, info) for hx, info in _swatch_infos(colors, weights))
            + "</div>")


def _pct(weights: Tensor) -> list[str]:
    return [f"{100 * w:.1f}%" for w in weights.tolist()]


def _de_lines(de: Tensor) -> list[list[tuple[str, str]]]:
    """Caption lines per sorted swatch: ΔE00 to the previous colour, flagged under the JND."""
    lines: list[list[tuple[str, str]]] = [[("ΔE –", "de")]]
    for d in de.tolist():
        lines.append([(f"ΔE {d:.1f}", "de")] + ([("< JND", "jnd")] if d < tp.JND else []))
    return lines


def _neighbour_table(colors: Tensor, de: Tensor) -> str:
    if len(de) == 0:
        return ('<p class="empty">No neighbouring pairs: only one colour was found, and a '
                "colour difference needs two.</p>")
    hexes = tp.to_hex(colors.float().clamp(0, 1))
    rows = []
    for i, d in enumerate(de.tolist()):
        jnd = d < tp.JND
        cls = ' class="jnd"' if jnd else ""
        rows.append(f'<tr{cls}><td><i style="background:{hexes[i]}">'
                    f'</i>{hexes[i]}</td><td><i style="background:{hexes[i + 1]}"></i>'
                    f'{hexes[i + 1]}</td><td>{d:.2f}</td><td>{"under JND" if jnd else ""}</td>'
                    "</tr>")
    n = int((de < tp.JND).sum())
    return (f"<p>{n} of {len(rows)} neighbouring pairs are under the JND ({tp.JND}).</p>"
            '<table class="de"><tr><th>colour</th><th>next</th><th>ΔE00</th><th></th></tr>'
            f'{"".join(rows)}</table>')


def _one_colour_note(k: int) -> str:
    return ('<p class="empty">Only one colour: nothing to sort, no neighbour to compare.</p>'
            if k < 2 else "")


def _image_section(rep: Report) -> str:
    name = escape(rep.name)
    shown_w = max(rep.analysed_width, 256)  # tiny images are shown enlarged, pixelated
    pix = " pixelated" if rep.analysed_width < 400 else ""
    size = f"{rep.width} x {rep.height} pixels, {_kib(rep.original_bytes)}"
    if (rep.analysed_width, rep.analysed_height) != (rep.width, rep.height):
        size += f"; analysed at {rep.analysed_width} x {rep.analysed_height}"
    notes = "".join(f"<li>{escape(n)}</li>" for n in rep.notes)
    return (f'<figure class="original{pix}"><img alt="{name}" style="width:{shown_w}px" '
            f'src="{_data_uri(rep.original, rep.original_mime)}"></figure><p>{name}: {size}</p>'
            + (f'<ul class="notes">{notes}</ul>' if notes else ""))


def _histogram_section(rep: Report) -> str:
    return ('<input type="checkbox" id="logscale" checked> <label for="logscale">log scale '
            "(counts as log10(1 + n), so one large peak does not flatten the rest)</label>"
            f'<figure class="hist">{histogram_svg(rep.histogram, scale="both")}</figure>'
            f"{histogram_legend()}<p>Pixels per level (0-255) of red, green, blue and "
            f"luminance, over all {rep.width} x {rep.height} pixels.</p>")


def _reduced_figure(r: Reduction, rep: Report) -> str:
    pix = " pixelated" if rep.analysed_width < 400 else ""
    what = f"{_colours(r.colors)}, {_DITHER_NAMES.get(r.dither, r.dither)}"
    share = 100 * r.png_bytes / max(rep.reference_png_bytes, 1)
    width = max(rep.analysed_width, 256)  # a tiny image is enlarged, not stretched to fill
    return (f'<figure class="reduced{pix}" data-colors="{r.colors}" data-dither="{r.dither}">'
            f'<div class="compare" style="max-width:{width}px"><img alt="{what}" '
            f'src="{_data_uri(r.png, "image/png")}">'
            '<div class="before"></div><div class="split"></div><input type="range" min="0" '
            f'max="100" value="50" aria-label="original | {what}"></div>'
            f"{_chips(r.palette, r.weights if r.dither == 'none' else None)}"
            f"<figcaption>{what}: mean ΔE00 {r.mean_de:.2f}; indexed PNG {_kib(r.png_bytes)} "
            f"({share:.0f}% of a truecolour PNG, {_kib(rep.reference_png_bytes)}). Left of "
            f"the line: the original; drag to compare. Palette: {_colours(len(r.palette))}."
            "</figcaption></figure>")


def _reduced_section(rep: Report) -> str:
    by_n: dict[int, list] = {}
    for r in rep.reductions + rep.dithered:
        by_n.setdefault(r.colors, []).append(r)
    rows = "".join(f'<h3>{_colours(n)}</h3><div class="reduced">'
                   + "".join(_reduced_figure(r, rep) for r in rs) + "</div>"
                   for n, rs in by_n.items())
    return ("<p>Each image reduced to n colours by its own k-means palette, without and "
            "with dithering; the original shows left of the line.</p>" + rows)


def _sections(rep: Report) -> list[tuple[str, str, str]]:
    dom_sorted_caps = [[(p, "w")] + de for p, de in zip(
        _pct(rep.dominant_sorted_weights), _de_lines(rep.dominant_de), strict=True)]
    pal_caps = [[(p, "w")] + de for p, de in
                zip(_pct(rep.palette_sorted_weights), _de_lines(rep.palette_de), strict=True)]
    k_dom, k_pal = len(rep.dominant), len(rep.palette)
    return [
        ("image", "Image", _image_section(rep)),
        ("histogram", "Channel histogram", _histogram_section(rep)),
        ("dominant", f"{k_dom} dominant {_colours(k_dom).split()[1]}",
         swatch_cards(rep.dominant, rep.dominant_weights,
                      [[(p, "w")] for p in _pct(rep.dominant_weights)])),
        ("sorted", "Dominant colours, sorted", _one_colour_note(k_dom)
         + swatch_cards(rep.dominant_sorted, rep.dominant_sorted_weights, dom_sorted_caps)),
        ("neighbours", "ΔE00 between sorted neighbours",
         _neighbour_table(rep.dominant_sorted, rep.dominant_de)),
        ("palette", f"k-means palette ({_colours(k_pal)}, sorted)", _one_colour_note(k_pal)
         + swatch_cards(rep.palette_sorted, rep.palette_sorted_weights, pal_caps)
         + _neighbour_table(rep.palette_sorted, rep.palette_de)),
        ("reduced", "Reduced colours", _reduced_section(rep)),
    ]


def render_html(rep: Report) -> str:
    """The report as one self-contained HTML page (no external requests).

    Args:
        rep: a :class:`~torchpalette.cli.report.Report`.

    Returns:
        The page; sections ``image``, ``histogram``, ``dominant``, ``sorted``,
        ``neighbours``, ``palette`` and ``reduced``, in the notebook's order.
    """
    name = escape(rep.name)
    body = "".join(f'<section id="{sid}"><h2>{title}</h2>{content}</section>'
                   for sid, title, content in _sections(rep))
    # the original once, as the background of every comparison slider's left part
    uri = _data_uri(rep.original, rep.original_mime)
    before = f'.compare .before{{background-image:url("{uri}")}}'
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">{MARK}'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Colours of {name}</title><style>{CSS}\n{before}</style></head>"
            f"<body><h1>Colours of {name}</h1>{body}"
            '<p id="info" role="status" aria-live="polite">Hover or focus a swatch for its '
            "RGB, Lab and weight; click it to copy its hex code.</p>"
            f"<script>{SCRIPT}</script></body></html>\n")
