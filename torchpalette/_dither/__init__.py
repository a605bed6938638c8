"""Dithering: palette indices that mix palette colours so that the image looks right from afar.

:func:`dither_labels` (``labels.py``) is the one entry point; ``fs.py`` holds Floyd–Steinberg,
``ordered.py`` Knoll's pattern dithering, ``space.py`` the colour maths both share.
"""

from .labels import METHODS, dither_labels

__all__ = ["METHODS", "dither_labels"]
