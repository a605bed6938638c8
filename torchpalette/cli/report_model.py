"""The data of a colour report: what :mod:`~torchpalette.cli.report` computes and
:mod:`~torchpalette.cli.report_html` renders (both import this module, neither the other)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

MARK = '<meta name="generator" content="torchpalette-report">'
"""Every report carries this mark, so ``write_report`` replaces earlier reports only."""


@dataclass
class Reduction:
    """The analysed image reduced to ``colors`` colours with ``dither``.

    Attributes:
        colors: the number of colours asked for.
        png: indexed PNG bytes of the reduced image.
        mean_de: mean CIEDE2000 to the analysed image over its opaque pixels.
        dither: ``"none"`` or a member of :data:`DITHERS`.
        palette: ``[K, 3]`` float sRGB, the colours actually used (``K <= colors``).
        weights: ``[K]`` share of the pixels of each colour in the k-means fit.
    """

    colors: int
    png: bytes
    mean_de: float
    dither: str = "none"
    palette: Tensor = field(default_factory=lambda: torch.zeros(0, 3))
    weights: Tensor = field(default_factory=lambda: torch.zeros(0))

    @property
    def png_bytes(self) -> int:
        return len(self.png)


@dataclass
class Report:
    """Everything the report shows (CPU tensors; colours ``[K, 3]`` float sRGB in [0, 1])."""

    name: str
    width: int  # of the decoded image
    height: int
    analysed_width: int  # of the image the palette, reductions and pictures use
    analysed_height: int
    original: bytes  # picture shown: the file itself, or the analysed image as PNG/JPEG
    original_mime: str
    original_bytes: int  # size of the image file (of a PNG of it for a tensor source)
    reference_png_bytes: int  # truecolour PNG of the analysed image, to compare with
    histogram: Tensor  # [4, bins] R, G, B, luminance counts of every pixel
    dominant: Tensor  # [N, 3] by count
    dominant_weights: Tensor  # [N]
    dominant_sorted: Tensor  # [N, 3]
    dominant_sorted_weights: Tensor  # [N]
    dominant_de: Tensor  # [N - 1] ΔE00 between sorted neighbours ([0] for one colour)
    palette: Tensor  # [K, 3] by weight, colours of weight 0 dropped
    palette_weights: Tensor  # [K]
    palette_sorted: Tensor  # [K, 3]
    palette_sorted_weights: Tensor  # [K]
    palette_de: Tensor  # [K - 1]
    reductions: list[Reduction]  # plain, one per REDUCED_COLORS entry
    dithered: list[Reduction] = field(default_factory=list)  # per count, one per DITHERS
    notes: list[str] = field(default_factory=list)  # library warnings and size decisions
