"""PaletteQuantizer: one palette (fixed, fitted to a dataset, or learnt) for every image.
Public home: :mod:`torchpalette.nn`."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import Tensor

from .. import _validate as v
from .._palette_core import DEFAULT_BITS
from .._spaces import SPACES
from .._types import index_dtype_for
from ..fit import fit_palette
from ..quantize import DITHERS, apply_palette, palette_indices, reduce_colors
from ._base import (
    QuantizerTransform,
    as_palette,
    check_colors_arg,
    check_index_dtype,
    decode,
    fitmethod,
    plain,
    straight_through,
    strength_repr,
)
from ._ops import apply_palette_traceable
from ._soft import hard_soft, soft_assign

_APPLY = inspect.signature(apply_palette).parameters
DEFAULT_COLORS: int = inspect.signature(reduce_colors).parameters["colors"].default
DEFAULT_SPACE: str = _APPLY["space"].default
DEFAULT_DITHER: str = _APPLY["dither"].default
DEFAULT_DITHER_STRENGTH: float = _APPLY["dither_strength"].default


class PaletteQuantizer(QuantizerTransform):
    """Map every image onto one palette (nearest colour in ``space``); optionally learn it.

    The palette is a buffer (``learnable=False``) or an ``nn.Parameter`` (``learnable=True``),
    so ``state_dict`` and ``.to(device)`` carry it; ``space``, ``dither``, ``straight_through``,
    ``learnable``, ``temperature``, ``hard_forward`` and ``dither_strength`` travel in the
    state as well, so a loaded layer quantizes as the saved one did (it is learnable when
    saved so or built so). Loading copies a learnable palette in place
    (the ``Parameter`` an optimizer holds stays the one trained); a state with another
    palette size raises for a learnable palette (an optimizer built on the old ``Parameter``
    would silently stop training it) and resizes a fixed one. Pass ``palette=K`` (an int) for
    a learnable layer whose ``K``-colour ``Parameter`` exists before the optimizer is built
    and is filled by :meth:`fit` or ``load_state_dict``. A learnt palette is clamped into
    [0, 1] when used.

    Gradients: the output is gathered from the palette, so a learnable palette receives the
    gradient of the pixels that took each colour (hard assignment). ``straight_through=True``
    also passes the incoming gradient to the input unchanged (straight-through estimator);
    ``straight_through=False`` gives the input none (a learnable palette still gets its own;
    a fixed one makes the layer a constant). With ``temperature=τ``, in training mode each
    pixel becomes a soft mixture of the colours, weights ``softmax(-|x - c_j|^2 / (τ u^2))``
    over the squared distances in ``space``, ``u`` about one JND of the space (2.3 in Lab,
    0.023 in Oklab and sRGB, so τ = 1 means the same everywhere; ColorCNN, Yuan et al., CVPR
    2020), differentiable in the input and the palette; in eval mode the hard assignment.
    ``hard_forward=True`` keeps the hard assignment in the forward pass and the soft one's
    gradient in the backward pass, so training sees what eval sees.

    Args:
        palette: ``[K, 3]`` (or ``[..., K, 3]`` broadcast over the batch) float sRGB in [0, 1],
            any K >= 1; a :class:`~torchpalette.Palette`; colour specs for
            :func:`torchpalette.parse_colors`; an int K (a grey ramp of K colours, to
            :meth:`fit` or load into); or ``None`` for a layer to :meth:`fit` or load.
        space: matching space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        straight_through: pass the incoming gradient to the input unchanged.
        learnable: hold the palette as an ``nn.Parameter``.
        temperature: soft assignment in training mode (``None``: always hard), in squared
            JNDs of ``space`` (see :mod:`torchpalette.nn`).
        hard_forward: with ``temperature``, hard output and soft gradient in training mode.
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"`` (hard assignment only).
        dither_strength: 0..1, how much of each pixel's error the dither mixes in (as
            :func:`torchpalette.quantize`; 0 is no dither, 1 full).

    Shape:
        - Input: any pytree sample; images ``[..., 3|4, H, W]`` uint8 or float (clamped into
          [0, 1]), tv_tensors Image/Video or PIL images.
        - Output: the sample with each image quantized (shape, dtype, device, type kept).

    Raises:
        TypeError: a palette that is not float; ``space``/``dither`` not a str.
        ValueError: a palette not ``[..., K, 3]``, values outside [0, 1] or NaN; unknown
            ``space``/``dither``; ``temperature <= 0``; ``dither_strength`` outside [0, 1].
            ``forward`` on a layer without palette raises ``RuntimeError``; NaN images raise
            ``ValueError`` (eager mode).

    Example:
        >>> import torch, torchpalette as tp
        >>> layer = tp.nn.PaletteQuantizer(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        >>> layer
        PaletteQuantizer(colors=2, space='lab', straight_through=True)
        >>> x = torch.tensor([0.1, 0.8]).view(1, 1, 2).expand(3, 1, 2).clone()
        >>> layer(x)[0]
        tensor([[0., 1.]])
        >>> layer.indices(x)
        tensor([[0, 1]], dtype=torch.uint8)
        >>> out, idx = layer.quantize_with_indices(x)  # one search for both
        >>> bool((out == layer(x)).all()), idx.dtype
        (True, torch.uint8)
        >>> images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
        >>> tp.nn.PaletteQuantizer.fit(images, colors=3).palette.shape
        torch.Size([3, 3])
    """

    _settings = ("space", "dither", "straight_through", "learnable", "temperature",
                 "hard_forward", "dither_strength")
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
        dither_strength: float = DEFAULT_DITHER_STRENGTH,
        hard_forward: bool = False,
    ) -> None:
        super().__init__()
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.dither_strength = v.check_unit(dither_strength, "dither_strength")
        self.straight_through = bool(straight_through)
        self.temperature = None if temperature is None else v.check_positive(
            temperature, "temperature"
        )
        self.hard_forward = bool(hard_forward)
        self.learnable = bool(learnable)
        if isinstance(palette, int) and not isinstance(palette, bool):
            k = check_colors_arg(palette, "palette")
            palette = torch.linspace(0.0, 1.0, k).unsqueeze(-1).expand(k, 3)
        self._hold(as_palette(palette))

    def _hold(self, pal: Tensor | None) -> None:
        """Hold ``pal`` as a Parameter (learnable) or a buffer, replacing what is held."""
        if "palette" in self._parameters:
            del self._parameters["palette"]
        if "palette" in self._buffers:
            del self._buffers["palette"]
        if self.learnable:
            param = None if pal is None else torch.nn.Parameter(pal.detach().clone())
            self.register_parameter("palette", param)
        else:
            self.register_buffer("palette", None if pal is None else pal.detach())

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
        soft = None
        if self.temperature is not None and self.training:
            soft = soft_assign(image, pal, self.space, self.temperature)
            if not self.hard_forward:
                return soft
        out = apply_palette_traceable(image, pal, self.space, self.dither, self.dither_strength)
        if soft is not None:
            return hard_soft(out, soft)
        return straight_through(out, image) if self.straight_through else out

    def indices(self, image: Tensor, index_dtype: torch.dtype | None = None) -> Tensor:
        """Palette index of every pixel (hard assignment, any K): ``image [..., 3|4, H, W]``
        (float clamped into [0, 1]) -> ``[..., H, W]``, as :func:`torchpalette.quantize`:
        ``uint8`` up to 256 colours, ``int16`` up to 32,768, ``int32`` beyond, or
        ``index_dtype`` (``torch.int64`` for torch's indexing ops)."""
        x = plain(image)
        x = v.check_image(x, "image", check_values=False)
        if x.is_floating_point():
            v.check_finite(x, "image")
            x = x.clamp(0.0, 1.0)
        return self._indices(x, index_dtype)

    def _indices(self, x: Tensor, index_dtype: torch.dtype | None) -> Tensor:
        pal = self._palette().detach()
        k = pal.shape[-2]
        dtype = check_index_dtype(index_dtype, k) if index_dtype is not None else (
            index_dtype_for(k))
        if self.dither != "none" and torch.compiler.is_compiling():
            from ._ops import palette_indices_op  # the opaque dithered search

            flat = x.reshape(-1, *x.shape[-3:])[:, :3]
            idx = palette_indices_op(flat, pal.reshape(-1, k, 3), self.space, self.dither,
                                     self.dither_strength)
            idx = idx.reshape(*x.shape[:-3], *x.shape[-2:])
        else:
            idx = palette_indices(x, pal, space=self.space, dither=self.dither,
                                  dither_strength=self.dither_strength)
        return idx.to(dtype)

    def quantize_with_indices(
        self, image: Tensor, index_dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor]:
        """The quantized image and its indices from one search (hard assignment):
        ``image [..., 3|4, H, W]`` -> (``[..., 3|4, H, W]`` as :meth:`forward` in eval mode,
        gradients as there; ``[..., H, W]`` indices as :meth:`indices`)."""
        x = plain(image)
        v.check_image(x, "image", check_values=False)
        x = self.prepare(x)
        idx = self._indices(x.detach(), index_dtype)
        out = decode(idx, self._palette(), x.dtype)
        if x.shape[-3] == 4:
            out = torch.cat([out, x[..., 3:, :, :]], dim=-3)
        out = straight_through(out, x) if self.straight_through else out
        return out, idx

    def extra_repr(self) -> str:
        colors = None if self.palette is None else self.palette.shape[-2]
        extra = "" if self.dither == DEFAULT_DITHER else f", dither={self.dither!r}"
        extra += strength_repr(self.dither_strength)
        extra += ", learnable=True" if self.learnable else ""
        extra += "" if self.temperature is None else f", temperature={self.temperature}"
        extra += ", hard_forward=True" if self.hard_forward else ""
        return (
            f"colors={colors}, space={self.space!r}, "
            f"straight_through={self.straight_through}{extra}"
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        key = prefix + "palette"
        extra = state_dict.get(prefix + "_extra_state")
        # learnable if saved so (a resumed layer keeps training its palette) or built so (a
        # fitted palette loads into a layer built to fine-tune it)
        if isinstance(extra, dict) and extra.get("learnable") and not self.learnable:
            self.learnable = True
            self._hold(self.palette)
        if isinstance(extra, dict):
            extra = {**extra, "learnable": self.learnable}
            state_dict[prefix + "_extra_state"] = extra
        if key in state_dict:
            new = state_dict[key]
            if self.palette is None:  # a palette-less layer becomes a working one
                self._hold(torch.empty_like(new))
            elif self.palette.shape != new.shape:
                if isinstance(self.palette, torch.nn.Parameter):
                    raise ValueError(
                        f"{type(self).__name__}: palette: expected shape "
                        f"{v.shape_str(self.palette.shape)} (the learnable palette is copied in "
                        "place, so an optimizer built on it keeps training it), got "
                        f"{v.shape_str(new.shape)}; build the layer with that many colours "
                        "(palette=K) before building the optimizer"
                    )
                self._hold(torch.empty_like(new, device=self.palette.device))
        elif strict and self.palette is None:
            missing_keys.append(key)  # an unfitted layer needs a palette from the state
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def _set_palette(self, value: Tensor) -> None:
        """Replace the palette; a palette of the same shape is copied in place (a Parameter
        stays the one an optimizer holds)."""
        if self.palette is not None and self.palette.shape == value.shape:
            with torch.no_grad():
                self.palette.copy_(value)
        else:
            self._hold(value)

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
