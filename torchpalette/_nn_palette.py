"""PaletteQuantizer: one palette (fixed, fitted to a dataset, or learnt) for every image.
Public home: :mod:`torchpalette.nn` (this module keeps ``nn.py`` readable in one sitting)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._image import like_input, merge_alpha, split_alpha, to_float
from ._layers import QuantizerTransform, as_palette, check_colors_arg, fitmethod, straight_through
from ._palette_core import DEFAULT_BITS
from ._spaces import SPACES, to_space, to_space_cf
from .fit import fit_palette
from .quantize import DITHERS, apply_palette, palette_indices, reduce_colors

_APPLY = inspect.signature(apply_palette).parameters
DEFAULT_COLORS: int = inspect.signature(reduce_colors).parameters["colors"].default
DEFAULT_SPACE: str = _APPLY["space"].default
DEFAULT_DITHER: str = _APPLY["dither"].default


class PaletteQuantizer(QuantizerTransform):
    """Map every image onto one palette (nearest colour in ``space``); optionally learn it.

    The palette is a buffer (``learnable=False``) or an ``nn.Parameter`` (``learnable=True``),
    so ``state_dict`` and ``.to(device)`` carry it (a state with another palette size loads
    too); ``space``, ``dither``, ``straight_through`` and ``temperature`` travel in the state
    as well, so a loaded layer quantizes as the saved one did. A learnt palette is clamped into
    [0, 1] when used.

    Gradients: the output is gathered from the palette, so a learnable palette receives the
    gradient of the pixels that took each colour (hard assignment). ``straight_through=True``
    also passes the incoming gradient to the input unchanged (straight-through estimator);
    ``straight_through=False`` gives the input none (a learnable palette still gets its own;
    a fixed one makes the layer a constant). With ``temperature=τ``, in training mode each
    pixel becomes a soft mixture of the colours, weights ``softmax(-|x - c_j|^2 / τ)`` over the
    squared distances in ``space`` (ColorCNN, Yuan et al., CVPR 2020), differentiable in the
    input and the palette; in eval mode the hard assignment.

    Args:
        palette: ``[K, 3]`` (or ``[..., K, 3]`` broadcast over the batch) float sRGB in [0, 1],
            any K >= 1; a :class:`~torchpalette.Palette`; colour specs for
            :func:`torchpalette.parse_colors`; or ``None`` for a layer to :meth:`fit` or load.
        space: matching space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        straight_through: pass the incoming gradient to the input unchanged.
        learnable: hold the palette as an ``nn.Parameter``.
        temperature: soft assignment in training mode (``None``: always hard).
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"`` (hard assignment only).

    Shape:
        - Input: any pytree sample; images ``[..., 3|4, H, W]`` uint8 or float (clamped into
          [0, 1]), tv_tensors Image/Video or PIL images.
        - Output: the sample with each image quantized (shape, dtype, device, type kept).

    Raises:
        TypeError: a palette that is not float; ``space``/``dither`` not a str.
        ValueError: a palette not ``[..., K, 3]``, values outside [0, 1] or NaN; unknown
            ``space``/``dither``; ``temperature <= 0``. ``forward`` on a layer without palette
            raises ``RuntimeError``; NaN images raise ``ValueError`` (eager mode).

    Example:
        >>> import torch, torchpalette as tp
        >>> layer = tp.nn.PaletteQuantizer(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        >>> layer
        PaletteQuantizer(colors=2, space='lab', straight_through=True)
        >>> x = torch.tensor([0.1, 0.8]).view(1, 1, 2).expand(3, 1, 2).clone()
        >>> layer(x)[0]
        tensor([[0., 1.]])
        >>> layer.indices(x)
        tensor([[0, 1]])
        >>> images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
        >>> tp.nn.PaletteQuantizer.fit(images, colors=3).palette.shape
        torch.Size([3, 3])
    """

    _settings = ("space", "dither", "straight_through", "temperature")
    palette: Tensor | None

    def __init__(
        self,
        palette: Any = None,
        space: str = DEFAULT_SPACE,
        straight_through: bool = True,
        learnable: bool = False,
        temperature: float | None = None,
        *,
        dither: str = DEFAULT_DITHER,
    ) -> None:
        super().__init__()
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.straight_through = bool(straight_through)
        self.temperature = None if temperature is None else v.check_positive(
            temperature, "temperature"
        )
        self.learnable = bool(learnable)
        pal = as_palette(palette)
        if self.learnable:
            self.register_parameter("palette", None if pal is None else torch.nn.Parameter(pal))
        else:
            self.register_buffer("palette", pal)

    def _palette(self) -> Tensor:
        if self.palette is None:
            raise RuntimeError(
                "PaletteQuantizer: no palette; pass one, call fit() or load_state_dict() first"
            )
        if not self.learnable:
            return self.palette
        # clamped into [0, 1] for use; the gradient passes the clamp (a colour on the border,
        # such as black or white, keeps learning)
        return straight_through(self.palette.detach().clamp(0.0, 1.0), self.palette)

    def quantize(self, image: Tensor, params: dict[str, Any]) -> Tensor:
        pal = self._palette()
        if self.temperature is not None and self.training:
            return soft_assign(image, pal, self.space, self.temperature)
        out = apply_palette(image, pal, space=self.space, dither=self.dither)
        return straight_through(out, image) if self.straight_through else out

    def indices(self, image: Tensor) -> Tensor:
        """Palette index of every pixel (hard assignment, any K): ``image [..., 3|4, H, W]``
        (float clamped into [0, 1]) -> ``[..., H, W]`` int64."""
        x = image.as_subclass(Tensor) if isinstance(image, Tensor) else image
        x = v.check_image(x, "image", check_values=False)
        if x.is_floating_point():
            v.check_finite(x, "image")
            x = x.clamp(0.0, 1.0)
        return palette_indices(x, self._palette().detach(), space=self.space, dither=self.dither)

    def extra_repr(self) -> str:
        colors = None if self.palette is None else self.palette.shape[-2]
        extra = "" if self.dither == DEFAULT_DITHER else f", dither={self.dither!r}"
        extra += ", learnable=True" if self.learnable else ""
        extra += "" if self.temperature is None else f", temperature={self.temperature}"
        return (
            f"colors={colors}, space={self.space!r}, "
            f"straight_through={self.straight_through}{extra}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # A fitted palette may have another K than the layer it is loaded into: resize first.
        key = prefix + "palette"
        if key in state_dict:
            new = state_dict[key]
            if self.palette is None or self.palette.shape != new.shape:
                device = new.device if self.palette is None else self.palette.device
                self._set_palette(torch.empty_like(new, device=device))
        elif strict and self.palette is None:
            missing_keys.append(key)  # an unfitted layer needs a palette from the state
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _set_palette(self, value: Tensor) -> None:
        """Replace the palette, a buffer or a Parameter as the layer holds it (a Parameter of
        the same shape is updated in place, so an optimizer built on it keeps working)."""
        if not self.learnable:
            self.palette = value
        elif self.palette is not None and self.palette.shape == value.shape:
            with torch.no_grad():
                self.palette.copy_(value)
        else:
            self.palette = torch.nn.Parameter(value.detach().clone())

    @fitmethod
    def fit(
        cls,
        self: PaletteQuantizer | None,
        images_or_loader: Any,
        colors: int = DEFAULT_COLORS,
        *,
        key: Any = None,
        max_pixels: int | None = None,
        space: str | None = None,
        bits: int = DEFAULT_BITS,
        seed: int = 0,
        device: torch.device | str | None = None,
        process_group: Any = None,
        **layer_kw: Any,
    ) -> PaletteQuantizer:
        """Learn one ``colors``-colour palette for a whole dataset, streaming
        (:func:`torchpalette.fit.fit_palette`: a colour histogram of counts and sums, all-reduced
        under ``torch.distributed``, then one weighted k-means in ``space``).

        Called on the class it returns a new layer (``space``, ``straight_through``,
        ``learnable``, ``temperature``, ``dither`` from the keywords); called on a layer it
        refits that layer in place and returns it. ``k=`` is an alias of ``colors=``.

        Args:
            images_or_loader: an image tensor ``[..., 3|4, H, W]``, an iterable of them, or a
                DataLoader yielding tensors, ``(images, ...)`` tuples or dicts.
            colors: palette size, >= 1 (any size: 512 as ImageGPT).
            key: the entry of dict (or tuple) batches that holds the images (default:
                ``"image"``, else the first entry).
            max_pixels, space, bits, seed, device, process_group: as
                :func:`torchpalette.fit.fit_palette` (``space`` defaults to the layer's).

        Returns:
            The fitted :class:`PaletteQuantizer`, palette ``[colors, 3]`` sorted by pixel share.

        Raises:
            ValueError: no images, ``colors`` < 1 or more than the colour bins seen,
                ``bits`` outside 1..8, a missing ``key``, bad images.
            TypeError: a batch that is not an image tensor.
        """
        if "k" in layer_kw:
            colors = layer_kw.pop("k")
        colors = check_colors_arg(colors)
        if space is None:
            space = self.space if self is not None else DEFAULT_SPACE
        if device is None and self is not None and self.palette is not None:
            device = self.palette.device
        fitted = fit_palette(
            images_or_loader, colors, space=space, max_pixels=max_pixels, bits=bits, seed=seed,
            device=device, process_group=process_group, key=key,
        )
        if self is None:
            return cls(fitted, space=space, **layer_kw)
        if layer_kw:
            raise TypeError(f"fit() on a layer got unexpected keywords {sorted(layer_kw)}")
        self.space = space
        self._set_palette(fitted.to(self.palette.dtype) if self.palette is not None else fitted)
        return self


def soft_assign(image: Tensor, palette: Tensor, space: str, temperature: float) -> Tensor:
    """Soft quantization: every pixel of ``image [..., 3|4, H, W]`` (in [0, 1]) becomes
    ``sum_j w_j c_j`` with ``w = softmax_j(-|x - c_j|^2 / temperature)``, distances in
    ``space`` between the pixel and palette ``[..., K, 3]`` -> image of the input's dtype.
    Differentiable in the image and the palette; float32 (float64) even under autocast."""
    rgb, alpha = split_alpha(image)
    h, w = rgb.shape[-2:]
    dtype = torch.float64 if image.dtype == torch.float64 else torch.float32
    x = to_float(rgb, dtype).reshape(-1, 3, h * w)  # [B, 3, P]
    b, k = x.shape[0], palette.shape[-2]
    pal = torch.broadcast_to(palette, (*rgb.shape[:-3], k, 3)).reshape(b, k, 3)
    with _policy.no_autocast(x):
        pal = pal.to(dtype)
        xs, ps = to_space_cf(x, space, dtype), to_space(pal, space)  # [B, 3, P], [B, K, 3]
        dist = ((ps * ps).sum(-1, keepdim=True) - 2.0 * torch.bmm(ps, xs)
                + (xs * xs).sum(1, keepdim=True))  # [B, K, P]
        weights = torch.softmax(-dist / temperature, dim=1)
        out = torch.bmm(pal.transpose(1, 2), weights)  # [B, 3, P]
    out = like_input(out.reshape(*rgb.shape[:-3], 3, h, w), image)
    return merge_alpha(out, alpha)
