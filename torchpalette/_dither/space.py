"""The colour maths shared by the dithers: where errors live and how "nearest" is measured.

Both dithers accumulate errors in linear light (see :mod:`torchpalette._dither.fs`) and choose
the nearest palette colour in the quantization space (CIELAB, Oklab or sRGB). Inside their
loops a value ``v [B, n, 3]`` in linear light is mapped by a few element-wise ops to features
``f`` with ``space(v) = A f + c`` (``A`` a constant 3x3 matrix); the palette side of the squared
distance is then folded into one ``[B, K, 4]`` matrix of rows ``(m_k, bias_k)``, so that

    ``|space(v) - p_k|^2 - |A f|^2 = m_k . f + bias_k``

and the nearest colour of every pixel of a front is one ``bmm`` against ``(f, 1)`` and one
:func:`first_argmin`.

The formulas and constants are kornia.color's (Lab: D65, threshold 0.008856; sRGB transfer
function) and Ottosson's Oklab matrices; the tests compare them with ``torchpalette``'s own
conversions.
"""

from __future__ import annotations

import kornia.color as kc
import torch
from torch import Tensor

from .._spaces import D65_WHITE as _WHITE
from .._spaces import F_TO_LAB as _LAB_A
from .._spaces import LAB_EPSILON as _THR
from .._spaces import OKLAB_M1 as _OK_M1
from .._spaces import OKLAB_M2 as _OK_M2
from .._spaces import SPACES  # noqa: F401 (the dithers' spaces, re-exported)
from .._spaces import SRGB_TO_XYZ as _SRGB_TO_XYZ

_LAB_C = (-16.0, 0.0, 0.0)
_GTHR = 0.0031308  # sRGB transfer function: its linear toe
_IDENTITY = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
#: Rec. 709 luma weights of R, G, B: luminance of linear light (the ordered dither's colour
#: order) and luma of the sRGB values (the edge factor).
LUMA = (0.2126, 0.7152, 0.0722)


def _t(m: tuple | float, like: Tensor) -> Tensor:
    return torch.tensor(m, dtype=like.dtype, device=like.device)


def srgb_to_linear(rgb: Tensor) -> Tensor:
    """sRGB ``[B, 3, N]`` float in [0, 1] -> linear light ``[B, 3, N]`` (kornia's formula)."""
    return kc.rgb_to_linear_rgb(rgb.unsqueeze(-1)).squeeze(-1)


class Features:
    """Linear light -> features ``f`` of ``space`` (``space(v) = A f + c``), built once per call
    on the input's device and dtype so the loops allocate no constants."""

    def __init__(self, space: str, like: Tensor) -> None:
        self.space = space
        self.c = _t((0.0, 0.0, 0.0), like)
        self.m = _t(_IDENTITY, like)  # sRGB: only the transfer function (m unused)
        if space == "lab":
            self.m = _t(_SRGB_TO_XYZ, like) / _t(_WHITE, like).unsqueeze(-1)
            self.a, self.c = _t(_LAB_A, like), _t(_LAB_C, like)
            self.slope = _t(7.787, like)  # the cube root's linear toe
        elif space == "oklab":
            self.m, self.a = _t(_OK_M1, like), _t(_OK_M2, like)
        else:
            self.a, self.slope = _t(_IDENTITY, like), _t(12.92, like)

    def __call__(self, v: Tensor, out: Tensor | None = None) -> Tensor:
        """Linear light ``[B, n, 3]`` (clamped to [0, 1]) -> features ``[B, n, 3]``, written
        to ``out`` if given (a view of a :func:`feature_buffer`)."""
        if self.space == "lab":
            t = torch.matmul(v, self.m.T)
            # kornia's piecewise cube root (linear below 0.008856), written with clamps
            # instead of a boolean mask: cbrt(max(t, thr)) + 7.787 min(t - thr, 0)
            return torch.addcmul(t.clamp_min(_THR).pow_(1.0 / 3.0),
                                 t.sub_(_THR).clamp_max_(0.0), self.slope, out=out)
        if self.space == "oklab":
            return torch.pow(torch.matmul(v, self.m.T).clamp_min_(0.0), 1.0 / 3.0, out=out)
        return torch.addcmul(v.clamp_min(_GTHR).pow_(1.0 / 2.4).mul_(1.055).sub_(0.055),
                             (v - _GTHR).clamp_max_(0.0), self.slope, out=out)

    def plain(self, v: Tensor) -> Tensor:
        """As ``__call__``, with every product and sum a separate op in a fixed order (no fused
        multiply-add, no BLAS), as the compiled CPU loop computes it, so both paths give
        bit-identical features (up to the ``pow`` of the two math libraries)."""
        if self.space == "srgb":
            return (v.clamp_min(_GTHR).pow(1.0 / 2.4) * 1.055 - 0.055
                    + (v - _GTHR).clamp_max(0.0) * self.slope)
        mt = self.m.T
        t = v[..., 0:1] * mt[0] + v[..., 1:2] * mt[1] + v[..., 2:3] * mt[2]
        if self.space == "lab":
            return t.clamp_min(_THR).pow(1.0 / 3.0) + (t - _THR).clamp_max(0.0) * self.slope
        return t.clamp_min(0.0).pow(1.0 / 3.0)

    def to_space(self, v: Tensor) -> Tensor:
        """Linear light ``[B, n, 3]`` -> coordinates in the space ``[B, n, 3]``."""
        return torch.matmul(self(v), self.a.T) + self.c

    def fold(self, pal_space: Tensor) -> Tensor:
        """Palette in the space ``[B, K, 3]`` -> ``[B, K, 4]`` rows ``(m_k, bias_k)`` with
        ``m_k . f + bias_k = |A f + c - p_k|^2 - |A f|^2``: with features ``(f, 1)`` from a
        :func:`feature_buffer`, all distances of a batch are one ``bmm``."""
        r = self.c - pal_space  # [B, K, 3]
        return torch.cat([2.0 * torch.matmul(r, self.a), r.square().sum(-1, keepdim=True)], -1)


def plain_distances(f: Tensor, m: Tensor) -> Tensor:
    """Features ``f [B, n, 3]``, folded palette ``m [B, K, 4]`` -> ``[B, K, n]`` distances
    (up to a per-pixel term), summed in the compiled loop's order, one op at a time."""
    g = f.transpose(1, 2).unsqueeze(2)  # [B, 3, 1, n]
    return g[:, 0] * m[..., 0:1] + g[:, 1] * m[..., 1:2] + g[:, 2] * m[..., 2:3] + m[..., 3:4]


def feature_buffer(b: int, n: int, like: Tensor) -> Tensor:
    """``[B, n, 4]`` buffer whose last column is 1: features go to ``[..., :3]``."""
    buf = like.new_empty(b, n, 4)
    buf[..., 3] = 1.0
    return buf


def palette_coords(pal: Tensor, space: str) -> Tensor:
    """Colours ``[B, K, 3]`` sRGB -> the same colours in ``space`` ``[B, K, 3]``."""
    f = Features(space, pal)
    return f.to_space(srgb_to_linear(pal.transpose(1, 2)).transpose(1, 2))


def int_view(dtype: torch.dtype) -> torch.dtype:
    """The integer type of the same width as ``dtype`` (for :func:`first_argmin`)."""
    return torch.int32 if dtype == torch.float32 else torch.int64


def first_argmin(d: Tensor, ramp: Tensor) -> Tensor:
    """``argmin`` over dim 1 of distances ``d [B, K, n]`` (float32/float64) -> ``[B, n]``,
    the first index on ties; ``ramp`` is ``arange(K)`` of :func:`int_view` shaped ``[1, K, 1]``.

    Two fast reductions instead of ``argmin`` (an order of magnitude slower over a short dim
    on CPU): with ``s = d - min d >= 0``, exactly 0 at the minima, the integer view of ``s``
    is 0 there and at least ``2**23`` (float32; ``2**52`` float64) elsewhere (two distances
    never differ by a subnormal amount in practice), so ``min_k bits(s) + k`` is the first
    index of the minimum. ``d`` is overwritten.
    """
    d -= d.amin(1, keepdim=True)
    return d.view(ramp.dtype).add_(ramp).amin(1)
