"""Quantization (placeholder; issue 4)."""


def apply_palette(image, palette, *, space="lab", dither="none"):
    raise NotImplementedError


def reduce_colors(image, colors=16, *, space="lab", dither="none", **palette_kw):
    raise NotImplementedError
