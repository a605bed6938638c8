"""torchpalette: colour clustering, dominant colours, colour difference and quantization as
batched, device-agnostic PyTorch operations. This module only re-exports the public API, in the
order of the colour notebook it grew from:

1. colours: :mod:`~torchpalette.color` (conversions, parsing, hex) and :mod:`~torchpalette.io`;
2. histogram -> dominant colours: :mod:`~torchpalette.histogram`;
3. sorted swatches: :mod:`~torchpalette.sort`;
4. ΔE between neighbours: :mod:`~torchpalette.difference`;
5. k-means palette: :mod:`~torchpalette.kmeans`, :mod:`~torchpalette.palette`
   (and :mod:`~torchpalette.fit` for one palette of a whole dataset);
6. images reduced to a few colours: :mod:`~torchpalette.quantize`, and as layers
   :mod:`~torchpalette.nn`.

The command-line app is :mod:`torchpalette.cli`, built on this API.

:mod:`torchpalette.nn` (the layers, torchvision v2 Transforms) is loaded on first use of
``tp.nn``: torchvision's transforms import ``torch._dynamo``, about a second that a user of the
functions alone should not pay. Value checks can be turned off with :func:`set_checks`.
"""

import importlib
from typing import Any

from ._validate import set_checks
from .color import lab_to_srgb, oklab_to_srgb, parse_colors, srgb_to_lab, srgb_to_oklab, to_hex
from .difference import JND, adjacent_delta_e, delta_e
from .fit import fit_palette
from .histogram import dominant_colors, histogram
from .io import read_image, write_image
from .kmeans import KMeansResult, kmeans
from .palette import Palette, palette
from .quantize import Quantized, apply_palette, palette_indices, quantize, reduce_colors
from .sort import sort_colors

__version__ = "0.1.0"

__all__ = [
    "JND",
    "KMeansResult",
    "Palette",
    "Quantized",
    "adjacent_delta_e",
    "apply_palette",
    "delta_e",
    "dominant_colors",
    "fit_palette",
    "histogram",
    "kmeans",
    "lab_to_srgb",
    "nn",
    "oklab_to_srgb",
    "palette",
    "palette_indices",
    "parse_colors",
    "quantize",
    "read_image",
    "reduce_colors",
    "set_checks",
    "sort_colors",
    "srgb_to_lab",
    "srgb_to_oklab",
    "to_hex",
    "write_image",
]


def __getattr__(name: str) -> Any:
    """``tp.nn`` imports :mod:`torchpalette.nn` on first use (see the module docstring)."""
    if name == "nn":
        return importlib.import_module(".nn", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
