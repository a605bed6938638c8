"""Colour quantization as ``torch.nn.Module`` layers.

Three thin layers over the functional core (:func:`torchpalette.reduce_colors`,
:func:`torchpalette.apply_palette`, :func:`torchpalette.kmeans`): each stores its settings (and
a fitted palette as a buffer) and its ``forward`` calls one function, so layer and function
share their defaults and cannot drift.

* :class:`ColorQuantizer` reduces every image to its own k-means palette.
* :class:`PaletteQuantizer` maps every image onto one fixed palette; ``fit`` learns that palette
  for a whole dataset from a stream of batches (a 3-D colour histogram of counts and colour sums,
  then one weighted k-means on the occupied bins), and a straight-through estimator lets
  gradients pass so the layer can sit inside a model being trained.
* :class:`RandomColorReduction` is a data augmentation: with probability ``p`` an image is
  reduced to a random number of colours.

Every layer takes ``[3, H, W]`` or ``[B, 3, H, W]`` (any leading dims, RGBA too), uint8 or float
in [0, 1], on any device, and returns the input's shape, dtype, device and — for a
``torchvision.tv_tensors.Image`` — type. Extra positional inputs (labels, boxes, as
``torchvision.transforms.v2.Compose`` passes them) are returned unchanged, so the layers work
inside ``Compose`` and in ``DataLoader`` workers.

``torch.compile``: the layers compile; the input checks of the functional core read the data
(range, NaN) and cause graph breaks there, which is documented and allowed.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from . import _validate as v
from ._layers import (
    MAX_COLORS,
    StraightThrough,
    as_palette,
    check_colors_arg,
    fitmethod,
    layer_result,
    unwrap,
)
from ._palette_core import DEFAULT_BITS
from ._spaces import SPACES
from ._loss import DeltaELoss
from .fit import fit_palette
from .quantize import DITHERS, apply_palette, reduce_colors

__all__ = ["ColorQuantizer", "DeltaELoss", "PaletteQuantizer", "RandomColorReduction"]

# Defaults are defined once, in the functional core; the layers read them from there.
_REDUCE = inspect.signature(reduce_colors).parameters
_APPLY = inspect.signature(apply_palette).parameters
DEFAULT_COLORS: int = _REDUCE["colors"].default
DEFAULT_SPACE: str = _APPLY["space"].default
DEFAULT_DITHER: str = _APPLY["dither"].default

# --------------------------------------------------------------------------- ColorQuantizer


class ColorQuantizer(torch.nn.Module):
    """Reduce each image to its own ``colors``-colour k-means palette.

    ``forward`` is one call of :func:`torchpalette.reduce_colors`; a batch is clustered in one
    batched k-means (no loop over images).

    Args:
        colors: palette size per image, 1..256.
        space: clustering and matching space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"`` or ``"ordered"`` (Bayer 8x8).
        **palette_kw: passed on to :func:`torchpalette.palette` (``seed``, ``max_pixels``, ...).

    Shape:
        - Input: ``(*, 3|4, H, W)`` uint8, or float in [0, 1].
        - Output: the input's shape, dtype, device and tv_tensors type.

    Raises:
        TypeError: ``colors`` not an int, ``space``/``dither`` not a str; in ``forward``, a
            non-tensor or a dtype other than uint8/float.
        ValueError: ``colors`` outside 1..256, an unknown ``space``/``dither``; in ``forward``,
            a grey (1-channel) image, NaN, or float values outside [0, 1].

    Example:
        >>> import torch, torchpalette as tp
        >>> layer = tp.nn.ColorQuantizer(colors=4)
        >>> layer
        ColorQuantizer(colors=4, space='lab', dither='none')
        >>> image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
        >>> out = layer(image)
        >>> out.shape, out.dtype
        (torch.Size([2, 3, 16, 16]), torch.uint8)
        >>> bool((out[0].flatten(1).unique(dim=1).shape[1] <= 4))
        True
    """

    def __init__(
        self,
        colors: int = DEFAULT_COLORS,
        space: str = DEFAULT_SPACE,
        dither: str = DEFAULT_DITHER,
        **palette_kw: Any,
    ) -> None:
        super().__init__()
        self.colors = check_colors_arg(colors)
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.palette_kw = dict(palette_kw)

    def forward(self, image: Tensor, *rest: Any) -> Any:
        out = reduce_colors(
            unwrap(image), self.colors, space=self.space, dither=self.dither, **self.palette_kw
        )
        return layer_result(out, image, rest)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={val!r}" for k, val in self.palette_kw.items())
        return f"colors={self.colors}, space={self.space!r}, dither={self.dither!r}{extra}"


# --------------------------------------------------------------------------- PaletteQuantizer


class PaletteQuantizer(torch.nn.Module):
    """Map every image onto one fixed palette (nearest colour in ``space``).

    The palette is a buffer, so ``state_dict``/``load_state_dict`` and ``.to(device)`` carry it
    (a state dict with a different palette size loads too). With ``straight_through=True`` the
    output's gradient passes to the input unchanged (straight-through estimator), so the layer
    can sit inside a model being trained.

    Args:
        palette: ``[K, 3]`` (or ``[..., K, 3]`` broadcast over the batch) float sRGB in [0, 1],
            1 <= K <= 256; a :class:`~torchpalette.Palette`; a list of colour specs for
            :func:`torchpalette.parse_colors`; or ``None`` for a layer to :meth:`fit` or load.
        space: matching space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        straight_through: pass gradients to the input as if the layer were the identity.
        dither: ``"none"`` or ``"ordered"``.

    Shape:
        - Input: ``(*, 3|4, H, W)`` uint8, or float in [0, 1].
        - Output: the input's shape, dtype, device and tv_tensors type.

    Raises:
        TypeError: a palette that is not float; ``space``/``dither`` not a str.
        ValueError: a palette not ``[..., K, 3]``, K outside 1..256, values outside [0, 1] or
            NaN; unknown ``space``/``dither``. ``forward`` on a layer without palette raises
            ``RuntimeError``; bad images raise as in :func:`torchpalette.apply_palette`.

    Example:
        >>> import torch, torchpalette as tp
        >>> layer = tp.nn.PaletteQuantizer(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        >>> layer
        PaletteQuantizer(colors=2, space='lab', straight_through=True)
        >>> x = torch.tensor([0.1, 0.8]).view(1, 1, 2).expand(3, 1, 2).clone()
        >>> layer(x)[0]
        tensor([[0., 1.]])
        >>> images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
        >>> tp.nn.PaletteQuantizer.fit(images, colors=3).palette.shape
        torch.Size([3, 3])
    """

    palette: Tensor | None

    def __init__(
        self,
        palette: Any = None,
        space: str = DEFAULT_SPACE,
        straight_through: bool = True,
        *,
        dither: str = DEFAULT_DITHER,
    ) -> None:
        super().__init__()
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.straight_through = bool(straight_through)
        self.register_buffer("palette", as_palette(palette))

    def forward(self, image: Tensor, *rest: Any) -> Any:
        if self.palette is None:
            raise RuntimeError(
                "PaletteQuantizer: no palette; pass one, call fit() or load_state_dict() first"
            )
        x = unwrap(image)
        source = x.detach() if isinstance(x, Tensor) else x
        out = apply_palette(source, self.palette, space=self.space, dither=self.dither)
        if self.straight_through and isinstance(x, Tensor) and x.requires_grad:
            out = StraightThrough.apply(x, out)
        return layer_result(out, image, rest)

    def extra_repr(self) -> str:
        colors = None if self.palette is None else self.palette.shape[-2]
        dither = "" if self.dither == DEFAULT_DITHER else f", dither={self.dither!r}"
        return (
            f"colors={colors}, space={self.space!r}, "
            f"straight_through={self.straight_through}{dither}"
        )

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D401
        # A fitted palette may have another K than the layer it is loaded into: resize first.
        key = prefix + "palette"
        if key in state_dict:
            new = state_dict[key]
            if self.palette is None or self.palette.shape != new.shape:
                device = new.device if self.palette is None else self.palette.device
                self.palette = torch.empty_like(new, device=device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @fitmethod
    def fit(
        cls,
        self: PaletteQuantizer | None,
        images_or_loader: Any,
        colors: int = DEFAULT_COLORS,
        *,
        max_pixels: int | None = None,
        space: str | None = None,
        bits: int = DEFAULT_BITS,
        seed: int = 0,
        device: torch.device | str | None = None,
        process_group: Any = None,
        **layer_kw: Any,
    ) -> PaletteQuantizer:
        """Learn one ``colors``-colour palette for a whole dataset, streaming.

        :func:`torchpalette.fit.fit_palette` does the work: each batch adds its pixels to a
        ``2**bits``-per-channel colour histogram of pixel counts and colour sums (integers, so
        memory is bounded by the histogram and the result does not depend on batch order); one
        weighted k-means (``seed``, the same defaults as :func:`torchpalette.palette`) then
        clusters the occupied bins' mean colours in ``space``. When ``torch.distributed`` is
        initialised (or ``process_group`` is given) the statistics are all-reduced, so every
        rank gets the same palette as a single process fitting all ranks' images.

        Called on the class it returns a new layer (``space``, ``straight_through``, ``dither``
        from the keywords); called on a layer it refits that layer in place and returns it.

        Args:
            images_or_loader: an image tensor ``[..., 3|4, H, W]``, an iterable of them, or a
                DataLoader yielding tensors, ``(images, ...)`` tuples or ``{"image": ...}``.
            colors: palette size, 1..256.
            max_pixels: at most this many evenly spaced pixels per image (``None``: all).
            space: clustering space (default: the layer's, or ``"lab"``).
            bits: histogram bits per channel, 1..8.
            seed: k-means seed.
            device: where statistics and k-means live (default: the layer's palette device,
                else each batch's device).
            process_group: torch.distributed group to all-reduce over.

        Returns:
            The fitted :class:`PaletteQuantizer`, palette ``[colors, 3]`` sorted by pixel share.

        Raises:
            ValueError: no images, ``colors`` outside 1..256 or more than the colour bins seen,
                ``bits`` outside 1..8, bad images (as :func:`torchpalette.palette`).
            TypeError: a batch that is not an image tensor.
        """
        colors = check_colors_arg(colors)
        if space is None:
            space = self.space if self is not None else DEFAULT_SPACE
        if device is None and self is not None and self.palette is not None:
            device = self.palette.device
        fitted = fit_palette(
            images_or_loader, colors, space=space, max_pixels=max_pixels, bits=bits, seed=seed,
            device=device, process_group=process_group,
        )
        if self is None:
            return cls(fitted, space=space, **layer_kw)
        if layer_kw:
            raise TypeError(f"fit() on a layer got unexpected keywords {sorted(layer_kw)}")
        self.space = space
        self.palette = fitted.to(self.palette.dtype) if self.palette is not None else fitted
        return self


# --------------------------------------------------------------------------- augmentation


class RandomColorReduction(torch.nn.Module):
    """Augmentation: with probability ``p`` reduce an image to a random number of colours.

    Each image of a batch draws its own coin and its own ``k`` uniformly from
    ``colors = (low, high)`` (inclusive; an int fixes k). All randomness is drawn in
    :meth:`make_params` from ``generator`` (default: torch's global generator, so
    ``torch.manual_seed`` reproduces it); the reduction itself is deterministic and equals
    ``reduce_colors(image, k)`` for each image. Images sharing a ``k`` are reduced in one
    batched call, so the work is one call per distinct ``k`` in the batch, never one per image.

    Args:
        colors: ``(low, high)`` with 1 <= low <= high <= 256, or one int.
        p: probability of reducing each image, in [0, 1].
        space: clustering space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"`` or ``"ordered"``.
        generator: optional CPU ``torch.Generator`` for the draws.

    Shape:
        - Input: ``(*, 3|4, H, W)`` uint8, or float in [0, 1].
        - Output: the input's shape, dtype, device and tv_tensors type.

    Raises:
        TypeError: ``colors`` not an int or pair of ints, ``p`` not a number.
        ValueError: ``colors`` outside 1..256 or ``low > high``; ``p`` outside [0, 1].

    Example:
        >>> import torch, torchpalette as tp
        >>> aug = tp.nn.RandomColorReduction(colors=(2, 8), p=1.0)
        >>> aug
        RandomColorReduction(colors=(2, 8), p=1.0, space='lab', dither='none')
        >>> _ = torch.manual_seed(0)
        >>> image = torch.rand(3, 3, 8, 8)
        >>> aug(image).shape
        torch.Size([3, 3, 8, 8])
    """

    def __init__(
        self,
        colors: int | tuple[int, int] = (2, 64),
        p: float = 0.5,
        space: str = DEFAULT_SPACE,
        dither: str = DEFAULT_DITHER,
        *,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if isinstance(colors, (tuple, list)):
            if len(colors) != 2:
                raise ValueError(f"colors: expected an int or a (low, high) pair, got {colors!r}")
            low, high = (check_colors_arg(c, "colors") for c in colors)
            if low > high:
                raise ValueError(f"colors: expected low <= high, got ({low}, {high})")
        else:
            low = high = check_colors_arg(colors)
        self.colors = (low, high)
        p = v.check_positive(p, "p", allow_zero=True)
        if p > 1:
            raise ValueError(f"p: expected a probability in [0, 1], got {p}")
        self.p = p
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.generator = generator

    def make_params(self, n: int) -> tuple[Tensor, Tensor]:
        """Draw, for ``n`` images, whether each is reduced (bool ``[n]``) and its k (int64
        ``[n]``). Both are always drawn, so the stream of random numbers does not depend on
        the outcome."""
        apply = torch.rand(n, generator=self.generator) < self.p
        k = torch.randint(self.colors[0], self.colors[1] + 1, (n,), generator=self.generator)
        return apply, k

    def forward(self, image: Tensor, *rest: Any) -> Any:
        x = unwrap(image)
        x = v.check_image(x, "image", check_values=False)  # values are checked by reduce_colors
        flat = x.reshape(-1, *x.shape[-3:])
        apply, k = self.make_params(flat.shape[0])
        k = torch.where(apply, k, torch.zeros_like(k))
        out = flat
        for kk in k.unique().tolist():  # one batched call per distinct k, not per image
            if kk == 0:
                continue
            idx = (k == kk).nonzero().squeeze(1).to(flat.device)
            reduced = reduce_colors(flat[idx], kk, space=self.space, dither=self.dither)
            out = out.index_copy(0, idx, reduced)
        return layer_result(out.reshape(x.shape), image, rest)

    def extra_repr(self) -> str:
        return (
            f"colors={self.colors}, p={self.p}, space={self.space!r}, dither={self.dither!r}"
        )
