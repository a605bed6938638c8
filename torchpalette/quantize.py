"""Colour quantization: every pixel an index into a palette.

:func:`quantize` is the one primitive: it returns a :class:`Quantized` holding each pixel's
palette index (in the smallest integer dtype that holds K), the palette and its weights, either
the image's own k-means palette (:func:`torchpalette.palette`, ``colors=``) or a given one
(``palette=``), after one validation and at most one search per pixel. Its views return images
or indices: :func:`reduce_colors` (own palette), :func:`apply_palette` and
:func:`palette_indices` (given palette); ``Quantized.image()`` decodes bit-identically to them.
Distances are measured in a perceptual space (CIELAB by default, or Oklab, or sRGB); the search
is the package's one chunked nearest-colour search (``torchpalette._nearest``).

How pixels find their colour (``assign``) is decided in one place, ``torchpalette._assign``:

* ``"exact"``: the nearest palette colour of every pixel.
* ``"auto"`` (default): images whose exact colours the palette counted (few colours, or
  ``bits=8``) label each exact colour once and look pixels up through that table (the labels
  of ``"exact"`` for uint8 images; for float ones, of each 8-bit level's mean); the others get
  the exact search on the CPU and ``"bins"`` on other devices.
* ``"bins"``: as ``"auto"``, and every other image through its coarse bins: each pixel takes
  its 5-bit bin's k-means label, no distances (about +0.04 mean dE00 against ``"exact"`` at
  k=16 on the benchmark photos, ``benchmarks/RESULTS.md``).
* ``"refined"``: the nearest colour of each 5-bit bin's centre through a table, and the exact
  search only for pixels of bins near a decision boundary (+0.005 mean dE00).

Which of these an image gets depends on that image alone, never on its batch. Dithering
(``torchpalette._dither``) chooses among palette colours per pixel: ``"floyd-steinberg"``
diffuses each pixel's error (in linear light) to its neighbours in raster order, batched over
images in wavefronts; ``"ordered"`` is Knoll's pattern dithering (a plan of palette colours
whose mean approaches the pixel, one picked by an 16x16 threshold map), so it mixes any hues.
Dithering implies the per-pixel search (``assign`` ``"exact"`` or ``"auto"``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._assign import ALPHAS, DITHERS, label_pixels, label_rgba, plan, shares
from ._image import split_alpha
from ._palette_core import check_options, image_palette
from ._spaces import SPACES
from ._types import Palette, Quantized, index_capacity, index_dtype_for

__all__ = ["Quantized", "apply_palette", "palette_indices", "quantize", "reduce_colors"]

_INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32, torch.int64)


def quantize(
    image: Tensor,
    colors: int | None = None,
    *,
    palette: Tensor | Palette | None = None,
    space: str = "lab",
    dither: str = "none",
    assign: str = "auto",
    index_dtype: torch.dtype | None = None,
    alpha: str = "keep",
    dither_strength: float = 1.0,
    **palette_kw: Any,
) -> Quantized:
    """Palette indices and palette of each image, in one call: one validation, one search.

    Either the image's own ``colors``-colour k-means palette (:func:`torchpalette.palette`,
    all images of a batch in one batched pass) or a given ``palette``.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha passes through to
            :meth:`Quantized.image`, and alpha-0 pixels neither shape nor weigh the palette.
        colors: size of each image's own palette (>= 1; 16 when neither ``colors`` nor
            ``palette`` is given); ``k=`` is accepted as an alias.
        palette: ``[..., K, 3]`` sRGB float in [0, 1] (or a :class:`Palette`), batch dims
            broadcastable to the image's, instead of an own palette. It keeps its autograd
            history: :meth:`Quantized.image` sends gradients to the colours used.
        space: where "nearest" is measured (and palettes clustered): ``"lab"``, ``"oklab"`` or
            ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"`` (module docstring).
        assign: ``"auto"``, ``"exact"``, ``"bins"`` or ``"refined"`` (module docstring);
            ``"bins"`` needs an own palette of the ``"hist"`` method, ``"bins"`` and
            ``"refined"`` need ``dither="none"``.
        index_dtype: dtype of the indices; default the smallest that holds K: ``uint8`` up to
            256 colours, ``int16`` up to 32,768, ``int32`` beyond. ``torch.int64`` gives the
            indices torch's indexing ops take.
        alpha: ``"keep"`` (default): alpha passes through, the palette is RGB. ``"quantize"``
            (implied by an RGBA ``palette [..., K, 4]``): alpha is a quantized channel of an
            RGBA palette ``[..., K, 4]`` (``max(colors, 2)`` entries for an own palette,
            unused ones repeating entry 0): transparent pixels share one entry, opaque pixels
            map to opaque entries, semi-transparent ones to the nearest entry in premultiplied
            coordinates (``torchpalette._alpha``); ``assign`` is then the exact search, and a
            dither chooses among the opaque entries for the opaque pixels.
        dither_strength: 0..1, how much of each pixel's error the dither mixes in (0: no
            dither, 1: full dither). Both dithers are selective on top of it: pixels on
            edges and in texture (luma range over 3x3 above 4 on 0..100) dither less, down
            to 0.2 of the strength (``torchpalette._dither.strength``). Pixels of alpha 0
            influence no other pixel in any dither.
        **palette_kw: own palette only, passed to :func:`torchpalette.palette` (``seed``,
            ``method``, ``max_pixels``, ``bits``, k-means options).

    Returns:
        :class:`Quantized`: ``indices [..., H, W]``, ``palette [..., K, 3]``, ``weights
        [..., K]`` (own palette: sorted descending, as :func:`torchpalette.palette`; given
        palette: each entry's share of the visible pixels), ``alpha`` and the input dtype;
        ``.image()`` decodes. Palettes and distances are float32 (float64 for float64
        images), even under autocast; indices carry no gradient.

    Raises:
        TypeError: wrong types or dtypes; both ``colors`` and ``palette``; palette options
            with a given palette.
        ValueError: bad shapes, NaN, values out of range, unknown ``space``/``dither``/
            ``assign``, an ``assign`` that the other options exclude, a palette on another
            device, an ``index_dtype`` too small for K.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.zeros(3, 4, 4, dtype=torch.uint8)
        >>> img[0, :, :1] = 255  # a red quarter, the rest black
        >>> q = tp.quantize(img, colors=2)
        >>> q.indices.dtype, q.indices[0].tolist(), q.weights.tolist()
        (torch.uint8, [1, 0, 0, 0], [0.75, 0.25])
        >>> torch.equal(q.image(), tp.reduce_colors(img, 2))
        True
        >>> tp.quantize(img, palette=torch.tensor([[1.0, 0, 0], [0, 0, 0]])).indices[0].tolist()
        [0, 1, 1, 1]
    """
    v.check_choice(alpha, "alpha", ALPHAS)
    strength = v.check_unit(dither_strength, "dither_strength")
    if palette is not None:
        return _quantize_given(image, colors, palette, space, dither, assign, index_dtype,
                               alpha, palette_kw, strength)
    colors = _colors_alias(colors, palette_kw)
    v.check_image(image, "image")
    labels_mode, fallback = plan(assign, dither, palette_kw.get("method", "hist"),
                                  palette_kw.get("max_pixels"), image.device)
    opt = check_options(
        colors, space, palette_kw.pop("max_pixels", None), palette_kw.pop("seed", 0),
        palette_kw.pop("method", "hist"), palette_kw.pop("bits", None), palette_kw,
        caller="quantize",
    )
    v.check_k_fits(opt.k, image, "colors")
    if alpha == "quantize":
        _exact_only(assign)
        idtype = _index_dtype(index_dtype, max(opt.k, 2))
        with torch.no_grad(), _policy.no_autocast(image):
            labels, rgba = label_rgba(image.detach(), space, dither, opt=opt, strength=strength)
            weights = shares(image, labels, rgba.shape[-2]).to(rgba.dtype)
        return _result(image, labels, rgba.reshape(*image.shape[:-3], -1, 4), weights, idtype)
    idtype = _index_dtype(index_dtype, opt.k)
    with torch.no_grad(), _policy.no_autocast(image):  # piecewise constant: no gradient
        pal, found = image_palette(image.detach(), opt, labels=labels_mode)
        labels = label_pixels(image.detach(), pal.colors, space, dither, fallback, found,
                              strength)
    return _result(image, labels, pal.colors, pal.weights, idtype)


def _quantize_given(
    image: Any, colors: Any, palette: Any, space: str, dither: str, assign: str,
    index_dtype: Any, alpha: str, palette_kw: dict[str, Any], strength: float = 1.0,
) -> Quantized:
    """:func:`quantize` with a given palette."""
    if colors is not None or "k" in palette_kw:
        raise TypeError("quantize: got both colors (or k) and palette; give one")
    if palette_kw:
        raise TypeError(
            f"quantize: unexpected keyword {sorted(palette_kw)[0]!r} with a given palette "
            "(palette options need colors=)"
        )
    pal, batch = _check_palette(image, palette, space, dither)
    _, fallback = plan(assign, dither, "given", None, image.device)
    idtype = _index_dtype(index_dtype, pal.shape[-2])
    pal = torch.broadcast_to(pal, (*batch, *pal.shape[-2:]))
    if alpha == "quantize" and pal.shape[-1] == 3:
        raise ValueError(
            f"palette: expected RGBA entries [..., K, 4] with alpha='quantize', got shape "
            f"{v.shape_str(pal.shape)}"
        )
    if pal.shape[-1] == 4:
        _exact_only(assign)
    with torch.no_grad(), _policy.no_autocast(image):
        if pal.shape[-1] == 4:
            labels, _ = label_rgba(image.detach(), space, dither,
                                   palette=pal.detach().reshape(-1, *pal.shape[-2:]),
                                   strength=strength)
        else:
            labels = label_pixels(image.detach(), pal.detach(), space, dither, fallback, None,
                                  strength)
        weights = shares(image, labels, pal.shape[-2]).to(
            pal.dtype if pal.is_floating_point() else torch.float32)
    return _result(image, labels, pal, weights, idtype)


def _result(image: Tensor, labels: Tensor, pal: Tensor, weights: Tensor,
            idtype: torch.dtype) -> Quantized:
    """Pack labels ``[B, H*W]`` and the palette into a :class:`Quantized` of the image's
    batch shape."""
    batch, hw = image.shape[:-3], image.shape[-2:]
    alpha = None if pal.shape[-1] == 4 else split_alpha(image)[1]  # RGBA palettes hold it
    indices = labels.to(idtype).reshape(*batch, *hw)
    return Quantized(indices, pal, weights.reshape(*batch, -1), alpha, image.dtype)


def _exact_only(assign: str) -> None:
    """RGBA palettes are searched exactly: ``assign`` must be ``"auto"`` or ``"exact"``."""
    if assign not in ("auto", "exact"):
        raise ValueError(
            f"assign: expected 'exact' or 'auto' with an RGBA palette (alpha='quantize'), "
            f"got {assign!r}"
        )


def _index_dtype(index_dtype: Any, k: int) -> torch.dtype:
    """Checked ``index_dtype`` of a ``k``-colour palette (None: the smallest that holds k)."""
    if index_dtype is None:
        return index_dtype_for(k)
    if index_dtype not in _INDEX_DTYPES:
        names = ", ".join(str(d) for d in _INDEX_DTYPES)
        raise TypeError(f"index_dtype: expected one of {names} or None, got {index_dtype!r}")
    if k > index_capacity(index_dtype):
        raise ValueError(
            f"index_dtype: expected a dtype that holds {k} palette indices, got {index_dtype} "
            f"(at most {index_capacity(index_dtype)})"
        )
    return index_dtype


def _colors_alias(colors: Any, palette_kw: dict[str, Any]) -> Any:
    """``k=`` is accepted as an alias of ``colors=`` (the name :func:`torchpalette.palette`
    uses); giving both differently is an error. Neither: 16."""
    if "k" not in palette_kw:
        return 16 if colors is None else colors
    k = palette_kw.pop("k")
    if colors is not None and colors != k:
        raise TypeError(f"quantize: got colors={colors!r} and its alias k={k!r}; give one")
    return k


def _check_palette(image: Any, pal: Any, space: str, dither: str) -> tuple[Tensor, tuple[int, ...]]:
    v.check_image(image, "image")
    if isinstance(pal, Palette):
        pal = pal.colors
    v.check_colors(pal, "palette", min_ndim=2, channels=(3, 4))
    v.check_choice(space, "space", SPACES)
    v.check_choice(dither, "dither", DITHERS)
    try:
        batch = v.broadcast_shape(image.shape[:-3], pal.shape[:-2])
    except RuntimeError:
        batch = None
    if batch is None or tuple(batch) != tuple(image.shape[:-3]):
        raise ValueError(
            f"palette: expected batch dims broadcastable to the image's "
            f"{v.shape_str(image.shape[:-3])}, got shape {v.shape_str(pal.shape)}"
        )
    if pal.device != image.device:
        raise ValueError(f"palette: expected device {image.device}, got {pal.device}")
    return pal, tuple(batch)


def palette_indices(
    image: Tensor, palette: Tensor | Palette, *, space: str = "lab", dither: str = "none",
    dither_strength: float = 1.0,
) -> Tensor:
    """Index of the nearest palette colour for every pixel (for indexed images): the indices
    of :func:`quantize` with a given palette, as int64.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha is ignored.
        palette: ``[..., K, 3]`` sRGB float in [0, 1] (or a :class:`Palette`), batch dims
            broadcastable to the image's.
        space: where "nearest" is measured: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` (pattern dithering, 16x16 threshold map) or
            ``"floyd-steinberg"`` (error diffusion); see the module docstring. Pixels of
            alpha 0 influence no other pixel.
        dither_strength: 0..1, how much of each pixel's error is mixed in (0: no dither,
            1: full dither).

    Returns:
        ``[..., H, W]`` int64 indices into the palette's K colours (ties: the lower index).

    Raises:
        TypeError: wrong types or dtypes.
        ValueError: bad shapes, NaN, values out of range, unknown ``space``/``dither``,
            palette on another device.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.tensor([[[0.1, 0.9]], [[0.1, 0.9]], [[0.1, 0.9]]])  # [3, 1, 2]
        >>> tp.palette_indices(img, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))
        tensor([[1, 0]])
    """
    q = quantize(image, palette=palette, space=space, dither=dither, index_dtype=torch.int64,
                 dither_strength=dither_strength)
    return q.indices


def apply_palette(
    image: Tensor, palette: Tensor | Palette, *, space: str = "lab", dither: str = "none",
    dither_strength: float = 1.0,
) -> Tensor:
    """Replace every pixel by its nearest palette colour: ``quantize(image,
    palette=palette).image()``.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha passes through.
        palette: ``[..., K, 3]`` sRGB float in [0, 1] (or a :class:`Palette`), batch dims
            broadcastable to the image's.
        space: where "nearest" is measured: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` (pattern dithering, 16x16 threshold map) or
            ``"floyd-steinberg"`` (error diffusion); see the module docstring. Pixels of
            alpha 0 influence no other pixel.
        dither_strength: 0..1, how much of each pixel's error is mixed in (0: no dither,
            1: full dither).

    Returns:
        Image of the input's shape and dtype. uint8 output holds exactly the palette
        colours rounded to uint8 (``round(255 c)``), so it maps 1:1 onto palette entries.
        The output is gathered from the palette: a palette that requires grad receives the
        gradient of the pixels that took each colour; the image gets none (the output is
        piecewise constant in it; the layers offer a straight-through estimator). Under
        ``torch.autocast`` the search still runs in float32.

    Raises:
        TypeError: wrong types or dtypes.
        ValueError: bad shapes, NaN, values out of range, unknown ``space``/``dither``.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.tensor([[[10, 200]], [[10, 200]], [[10, 200]]], dtype=torch.uint8)
        >>> tp.apply_palette(img, torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]))[:, 0]
        tensor([[  0, 255],
                [  0, 255],
                [  0, 255]], dtype=torch.uint8)
    """
    return quantize(image, palette=palette, space=space, dither=dither,
                    dither_strength=dither_strength).image()


def reduce_colors(
    image: Tensor,
    colors: int = 16,
    *,
    space: str = "lab",
    dither: str = "none",
    assign: str = "auto",
    dither_strength: float = 1.0,
    **palette_kw: Any,
) -> Tensor:
    """Reduce each image to its own ``colors``-colour k-means palette: ``quantize(image,
    colors).image()``.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha passes through and
            alpha-0 pixels do not shape the palette.
        colors: palette size (>= 1); ``k=`` is accepted as an alias (the name
            :func:`torchpalette.palette` and the CLI's ``palette -k`` use).
        space: ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"`` (see :func:`apply_palette`).
        assign: how pixels find their colour: ``"auto"``, ``"exact"``, ``"bins"`` or
            ``"refined"``, see :func:`quantize` and the module docstring.
        dither_strength: 0..1, how much of each pixel's error is mixed in.
        **palette_kw: passed to :func:`torchpalette.palette` (``seed``, ``method``,
            ``max_pixels``, ``bits``, k-means options).

    Returns:
        Image of the input's shape and dtype with at most ``colors`` distinct colours. It
        carries no gradient (piecewise constant in the image; the layers' straight-through
        estimator passes one). Palettes and distances are float32 even under autocast.

    Raises:
        TypeError, ValueError: as :func:`quantize`.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
        >>> out = tp.reduce_colors(img, 4)
        >>> out.shape, out.dtype, len(out[0].flatten(1).unique(dim=1).T) <= 4
        (torch.Size([2, 3, 8, 8]), torch.uint8, True)
        >>> lut = tp.reduce_colors(img, 4, assign="bins")  # look-up table, as on CUDA
        >>> len(lut[1].flatten(1).unique(dim=1).T) <= 4
        True
    """
    if "k" in palette_kw:  # the alias; 16 is the default, i.e. colors not given
        colors = _colors_alias(None if colors == 16 else colors, palette_kw)
    return quantize(image, colors, space=space, dither=dither, assign=assign,
                    dither_strength=dither_strength, **palette_kw).image()
