"""Histograms and dominant colours (placeholder; issue 5)."""
from .palette import Palette


def histogram(image, bins=256):
    raise NotImplementedError


def dominant_colors(image, top_n=32, *, bins=16):
    raise NotImplementedError
