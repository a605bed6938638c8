"""Perceptual colour sorting (placeholder; issue 5)."""


def sort_colors(colors, *, repetitions=8):
    raise NotImplementedError
