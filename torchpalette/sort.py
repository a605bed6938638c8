"""Perceptual colour sorting: the "step sort".

Sorting colours by hue alone puts dark and light shades of one hue side by side; sorting by
luminance mixes hues. The step sort (A. Zucconi, "The incredibly challenging task of sorting
colours", 2015, https://www.alanzucconi.com/2015/09/30/colour-sorting/) compromises: hue is
bucketed into ``repetitions`` steps, colours inside a step are ordered by perceived luminance
``sqrt(0.241 R + 0.691 G + 0.068 B)`` and then by (bucketed) HSV value, and luminance and value
run backwards in every other step, so that the end of one step meets the start of the next
smoothly.

Greys have no defined hue (HSV hue of a grey is an arbitrary 0, i.e. red); they are taken out of
the hue steps and put first, dark to light. A colour is grey when its chroma
``max(R, G, B) - min(R, G, B)`` is below :data:`GREY_CHROMA`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _validate as v

__all__ = ["sort_colors", "GREY_CHROMA"]

#: Chroma (max - min of R, G, B in [0, 1]) below which a colour counts as grey: 0.02 is about
#: 5 of 255 levels, larger than 8-bit rounding and JPEG noise on neutral areas and smaller than
#: any colour whose hue is visible.
GREY_CHROMA = 0.02


def _step_keys(colors: Tensor, repetitions: int) -> tuple[Tensor, Tensor, Tensor]:
    """Sort keys, most significant first: (hue step or -1 for greys, luminance, value step)."""
    c = colors.to(torch.float64)
    r, g, b = c.unbind(-1)
    hi, lo = c.amax(-1), c.amin(-1)
    chroma = hi - lo
    safe = torch.where(chroma > 0, chroma, 1.0)
    # HSV hue in [0, 1): sector by the largest channel.
    hue = torch.where(
        hi == r, ((g - b) / safe) % 6, torch.where(hi == g, (b - r) / safe + 2, (r - g) / safe + 4)
    ) / 6
    lum = torch.sqrt(0.241 * r + 0.691 * g + 0.068 * b)
    grey = chroma < GREY_CHROMA
    h_step = (hue * repetitions).floor().clamp(max=repetitions - 1)
    v_step = (hi * repetitions).floor()
    odd = (h_step % 2 == 1) & ~grey
    lum = torch.where(odd, 1 - lum, lum)
    v_step = torch.where(odd, repetitions - v_step, v_step)
    h_step = torch.where(grey, -1.0, h_step)
    return h_step, lum, v_step


def sort_colors(colors: Tensor, *, repetitions: int = 8) -> tuple[Tensor, Tensor]:
    """Sort colours perceptually with the step sort (greys first, then hue steps).

    Args:
        colors: ``[..., K, 3]`` float sRGB in [0, 1].
        repetitions: number of hue steps, >= 1. More steps follow the hue more closely; fewer
            give longer runs ordered by luminance.

    Returns:
        ``(sorted, index)``: ``sorted [..., K, 3]`` (the input's dtype and device) and
        ``index [..., K]`` int64 with ``sorted == colors.gather(-2, index[..., None]
        .expand_as(colors))``. Greys (chroma below :data:`GREY_CHROMA`) come first, dark to
        light; then hue steps in hue order (red, yellow, green, cyan, blue, magenta), inside a
        step by luminance then value, reversed in odd steps. Exact ties keep input order.

    Raises:
        TypeError: not a float tensor, or ``repetitions`` not an int.
        ValueError: shape not ``[..., K, 3]``, empty, NaN/inf or values outside [0, 1], or
            ``repetitions < 1``.

    Note:
        Lexicographic order by three stable sorts, least significant key first, all batched
        along the last dim (A. Zucconi 2015, see the module docstring).

    Example:
        >>> import torch, torchpalette as tp
        >>> colors = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 0.0],
        ...                        [0.0, 1.0, 0.0], [0.1, 0.1, 0.1]])
        >>> _, index = tp.sort_colors(colors)
        >>> index  # greys dark to light, then red, green, blue
        tensor([4, 1, 2, 3, 0])
    """
    v.check_colors(colors, "colors", min_ndim=2)
    repetitions = v.check_int(repetitions, "repetitions", low=1)
    keys = _step_keys(colors, repetitions)
    index = torch.arange(colors.shape[-2], device=colors.device).expand(colors.shape[:-1])
    for key in reversed(keys):
        order = torch.sort(key.gather(-1, index), dim=-1, stable=True).indices
        index = index.gather(-1, order)
    index = index.contiguous()
    return colors.gather(-2, index[..., None].expand_as(colors)), index
