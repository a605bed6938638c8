"""torchpalette: colour clustering, dominant colours, colour difference and quantization as
batched, device-agnostic PyTorch operations. This module only re-exports the public API."""

from . import nn
from .color import lab_to_srgb, oklab_to_srgb, parse_colors, srgb_to_lab, srgb_to_oklab, to_hex
from .difference import JND, adjacent_delta_e, delta_e
from .histogram import dominant_colors, histogram
from .io import read_image, write_image
from .kmeans import KMeansResult, kmeans
from .palette import Palette, palette
from .quantize import apply_palette, reduce_colors
from .sort import sort_colors

__version__ = "0.1.0"

__all__ = [
    "JND",
    "KMeansResult",
    "Palette",
    "adjacent_delta_e",
    "apply_palette",
    "delta_e",
    "dominant_colors",
    "histogram",
    "kmeans",
    "lab_to_srgb",
    "nn",
    "oklab_to_srgb",
    "palette",
    "parse_colors",
    "read_image",
    "reduce_colors",
    "sort_colors",
    "srgb_to_lab",
    "srgb_to_oklab",
    "to_hex",
    "write_image",
]
