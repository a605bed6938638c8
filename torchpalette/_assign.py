"""How pixels find their palette colour: the one assignment decision of quantization.

:func:`plan` turns ``assign``, ``dither`` and the palette options into what the palette engine
labels on the way (``torchpalette._palette_core.LABELS``) and how the remaining images are
labelled (the exact search, the refined search or a dither); :func:`label_pixels` carries it
out and always returns one thing, labels ``[B, P]`` int64. The strategies themselves are
described in :mod:`torchpalette.quantize`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._alpha import opaque_substitutes, quantize_rgba
from ._dither import dither_labels
from ._image import split_alpha
from ._nearest import search, search_near_boundaries
from ._palette_core import PaletteOptions, PixelLabels
from ._spaces import to_space

DITHERS = ("none", "ordered", "floyd-steinberg")
ASSIGNS = ("auto", "exact", "bins", "refined")
ALPHAS = ("keep", "quantize")


def plan(
    assign: str, dither: str, method: str, max_pixels: Any, device: torch.device
) -> tuple[str | None, str]:
    """The one assignment decision: (labels the palette engine finds on the way, one of
    ``_palette_core.LABELS``; how the remaining images are labelled: ``"search"``,
    ``"refined"`` or ``"dither"``). ``method="given"``: a palette was given."""
    v.check_choice(dither, "dither", DITHERS)
    v.check_choice(assign, "assign", ASSIGNS)
    if dither != "none":
        if assign not in ("auto", "exact"):
            raise ValueError(
                f"assign: expected 'exact' or 'auto' with dither={dither!r} ({assign!r} needs "
                f"dither='none'), got {assign!r}"
            )
        return None, "dither"
    if assign == "refined":
        return None, "refined"
    own_hist = method == "hist" and max_pixels is None  # labels of every pixel on the way
    if assign == "bins":
        if method != "hist":
            raise ValueError(
                "assign: expected 'exact', 'auto' or 'refined' with "
                + ("a given palette" if method == "given" else f"method={method!r}")
                + " ('bins' needs an own palette of the 'hist' method), got 'bins'"
            )
        return ("bins" if own_hist else None), "search"
    if assign == "exact" or not own_hist:
        return None, "search"
    return _policy.auto_labels(device), "search"


def label_pixels(
    image: Tensor, pal: Tensor, space: str, dither: str, fallback: str,
    found: PixelLabels | None, strength: float = 1.0,
) -> Tensor:
    """Labels ``[B, H*W]`` int64 of a checked, detached image against ``pal [..., K, 3]``:
    those ``found`` by the palette engine, the rest by ``fallback`` (a dither of
    ``strength``; alpha-0 pixels influence no other)."""
    h, w = image.shape[-2:]
    rgb, alpha = split_alpha(image)
    rgb = rgb.reshape(-1, 3, h * w)
    alpha = None if alpha is None else alpha.reshape(-1, 1, h * w)
    pal = pal.reshape(rgb.shape[0], -1, 3)
    if found is None:
        return search_pixels(rgb, pal, space, dither, (h, w), fallback == "refined", strength,
                             alpha)
    if bool(found.known.all()):
        return found.labels
    rest = (~found.known).nonzero().squeeze(1)  # images the engine did not label
    labels = found.labels.clone()
    labels[rest] = search_pixels(rgb[rest], pal[rest], space, dither, (h, w),
                                 fallback == "refined", strength,
                                 None if alpha is None else alpha[rest])
    return labels


def search_pixels(
    rgb: Tensor, pal: Tensor, space: str, dither: str, hw: tuple[int, int], refine: bool = False,
    strength: float = 1.0, alpha: Tensor | None = None,
) -> Tensor:
    """Unchecked nearest-colour search: ``rgb [B, 3, P]`` (uint8 or float sRGB), palette
    ``[B, K, 3]`` sRGB float -> labels ``[B, P]`` int64. Chunked over P, batched over B.
    ``refine`` (no dither): the per-pixel search only near decision boundaries; a ``dither``
    other than ``"none"`` chooses among palette colours with ``torchpalette._dither``
    (``strength`` 0 is no dither; pixels of ``alpha [B, 1, P]`` 0 influence no other)."""
    b, _, p = rgb.shape
    dtype = torch.float64 if torch.float64 in (rgb.dtype, pal.dtype) else torch.float32
    pal = pal.to(dtype)
    with _policy.single_thread_if_small(rgb, b * p, _policy.SMALL_PIXELS):
        if dither != "none" and strength > 0:
            x = rgb if rgb.dtype == torch.uint8 else rgb.to(dtype)  # uint8: converted by bands
            vis = None if alpha is None else alpha.reshape(b, *hw) > 0
            pal = pal.expand(b, -1, -1).contiguous()
            return dither_labels(x.reshape(b, 3, *hw), pal, dither, space, strength=strength,
                                 visible=vis).reshape(b, p)
        ps = to_space(pal, space).expand(b, -1, -1)  # [B, K, 3]
        pa = torch.cat([ps * -2.0, (ps * ps).sum(-1, keepdim=True)], -1)  # [B, K, 4]
        if refine:
            return search_near_boundaries(rgb, ps, pa, space, dtype)
        return search(rgb, ps, pa, space, dtype)


def shares(image: Tensor, labels: Tensor, k: int) -> Tensor:
    """Each entry's share ``[B, K]`` of an image's visible pixels (alpha > 0), float64."""
    _, alpha = split_alpha(image)
    w = torch.ones(labels.shape, dtype=torch.float64, device=labels.device)
    if alpha is not None:
        w = (alpha.reshape(labels.shape) > 0).to(torch.float64)
    counts = torch.zeros(labels.shape[0], k, dtype=torch.float64, device=labels.device)
    counts.scatter_add_(1, labels, w)
    return counts / counts.sum(-1, keepdim=True).clamp_min(1.0)


def label_rgba(
    image: Tensor, space: str, dither: str, *, opt: PaletteOptions | None = None,
    palette: Tensor | None = None, strength: float = 1.0,
) -> tuple[Tensor, Tensor]:
    """Labels ``[B, H*W]`` and RGBA palettes ``[B, K, 4]`` of a checked, detached image
    ``[..., 3|4, H, W]`` with alpha quantized (``torchpalette._alpha``): each image's own
    palette (``opt``) or the given ``palette [B, K, 4]``. A dither decides the opaque pixels
    among the opaque entries."""
    h, w = image.shape[-2:]
    x = image.reshape(-1, image.shape[-3], h * w)
    labels, pal = quantize_rgba(x, space, opt=opt, palette=palette)
    if dither == "none" or strength == 0:
        return labels, pal
    sub = opaque_substitutes(pal)  # [B, K]: non-opaque entries replaced by an opaque one
    cols = pal[..., :3].gather(1, sub.unsqueeze(-1).expand(-1, -1, 3))
    alpha = x[:, 3:] if x.shape[1] == 4 else None
    dithered = sub.gather(1, search_pixels(x[:, :3], cols, space, dither, (h, w),
                                           strength=strength, alpha=alpha))
    if x.shape[1] == 3:
        return dithered, pal
    solid = x[:, 3] == (255 if x.dtype == torch.uint8 else 1)
    return torch.where(solid, dithered, labels), pal
