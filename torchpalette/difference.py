"""Colour difference (placeholder; issue 3)."""
JND = 2.3


def delta_e(a, b, method="ciede2000", space="srgb", kL=1.0, kC=1.0, kH=1.0):
    raise NotImplementedError


def adjacent_delta_e(colors, method="ciede2000"):
    raise NotImplementedError
