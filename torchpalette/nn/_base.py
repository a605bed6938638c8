"""Shared plumbing of the quantizer layers (:mod:`torchpalette.nn`): the torchvision v2
Transform base (which entries of a sample are images, PIL in and out, clamping, tv_tensors
types), the straight-through estimator, settings in ``state_dict``, per-worker random draws,
palette arguments and the ``fit`` class/instance method.

Imported only by :mod:`torchpalette.nn`, which ``import torchpalette`` loads lazily: this
module imports torchvision's transforms (and with them ``torch._dynamo``).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .. import _validate as v
from .._types import Palette, Quantized, index_capacity

#: Float images with values outside these bounds warn (once per layer) before they are clamped.
RANGE_WARN = (-0.5, 1.5)


def is_pure_tensor(x: Any) -> bool:
    """A tensor that is no tv_tensor: an image by torchvision's rule when it is the first one
    of a sample without an explicit Image/Video (see ``v2.Transform``)."""
    return isinstance(x, Tensor) and not isinstance(x, tv_tensors.TVTensor)


class QuantizerTransform(v2.Transform):
    """Base of the quantizer layers: a ``v2.Transform`` (so an ``nn.Module``) that, in any
    pytree sample, quantizes images (``tv_tensors.Image``/``Video``, plain tensors by
    torchvision's rule, PIL images -> PIL) and passes masks, boxes, labels and everything else
    through untouched. Subclasses implement :meth:`quantize` on a plain tensor
    ``[..., 3|4, H, W]`` (float already clamped into [0, 1]) and name in ``_settings`` the
    attributes that change the output: they travel in ``state_dict`` (extra state)."""

    _transformed_types = (tv_tensors.Image, tv_tensors.Video, PIL.Image.Image, is_pure_tensor)
    _settings: tuple[str, ...] = ()

    def quantize(self, image: Tensor, params: dict[str, Any]) -> Tensor:
        raise NotImplementedError

    def check_inputs(self, flat_inputs: list[Any]) -> None:
        # A sample with nothing to quantize is a mistake (a numpy array, a list of lists),
        # not a pass-through: say so instead of returning it unchanged.
        if not any(isinstance(x, (Tensor, PIL.Image.Image)) for x in flat_inputs):
            got = ", ".join(sorted({type(x).__name__ for x in flat_inputs})) or "nothing"
            raise TypeError(
                "image: expected a torch.Tensor, tv_tensors.Image/Video or PIL image in the "
                f"sample, got {got}"
            )

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, PIL.Image.Image):
            alpha = inpt.mode in ("RGBA", "LA", "PA") or "transparency" in inpt.info
            mode = "RGBA" if alpha else "RGB"
            x = F.pil_to_tensor(inpt if inpt.mode == mode else inpt.convert(mode))
            return F.to_pil_image(self.quantize(x, params), mode=mode)
        x = plain(inpt)
        v.check_image(x, "image", check_values=False)
        out = self.quantize(self.prepare(x), params)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    def prepare(self, x: Tensor) -> Tensor:
        """:func:`prepare_image` for this layer."""
        return prepare_image(self, x)

    def get_extra_state(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._settings}

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or set(state) - set(self._settings):
            raise ValueError(
                f"{type(self).__name__}: expected a state with settings {list(self._settings)}, "
                f"got {sorted(state) if isinstance(state, dict) else type(state).__name__}"
            )
        for name, value in state.items():
            setattr(self, name, value)

    def __setstate__(self, state: dict[str, Any]) -> None:  # pickled before these attributes
        super().__setstate__(state)
        self.__dict__.setdefault("_warned", False)
        if "dither_strength" in self._settings:
            self.__dict__.setdefault("dither_strength", 1.0)


def strength_repr(strength: float) -> str:
    """The ``dither_strength`` part of a layer's repr: empty at the default (1.0)."""
    return "" if strength == 1.0 else f", dither_strength={strength}"


def plain(x: Any) -> Any:
    """A tv_tensor as a plain tensor; anything else unchanged. Only tv_tensors are unwrapped:
    under ``torch.export`` the input is a fake tensor, and ``as_subclass`` on it leaves a fake
    constant in the exported program."""
    return x.as_subclass(Tensor) if isinstance(x, tv_tensors.TVTensor) else x


def prepare_image(layer: torch.nn.Module, x: Tensor) -> Tensor:
    """A checked image ``[..., 3|4, H, W]`` ready to quantize: float values clamped into
    [0, 1] as torchvision's colour transforms clamp (the gradient passes the clamp
    unchanged, as it passes the quantization). In eager mode NaN raises, and values far
    outside [0, 1] (0..255 floats, normalised tensors) warn once per layer: clamping them
    is almost certainly not what the caller meant."""
    if not x.is_floating_point():
        return x
    if v.checks_enabled() and x.numel():
        lo, hi = (float(t) for t in torch.aminmax(x.detach()))  # one sync for both checks
        if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
            v.check_finite(x, "image")  # raises, naming the problem
        if lo < RANGE_WARN[0] or hi > RANGE_WARN[1]:
            warn_once(layer, f"float image values in [{lo:.3g}, {hi:.3g}] lie far outside "
                      "[0, 1] (0..255 floats or normalised images?); clamped into [0, 1]",
                      key="_warned_range")
    return straight_through(x.detach().clamp(0.0, 1.0), x)


def straight_through(out: Tensor, image: Tensor) -> Tensor:
    """``out`` in the forward pass; in the backward pass the incoming gradient reaches
    ``image`` unchanged (Bengio et al. 2013) and ``out``'s own graph (a learnable palette)
    gets it too. ``image - image.detach()`` is exactly 0, so the values are ``out``'s."""
    if not (image.requires_grad and image.is_floating_point() and torch.is_grad_enabled()):
        return out
    return out + (image - image.detach()).to(out.dtype)


def warn_once(layer: torch.nn.Module, message: str, key: str = "_warned") -> None:
    """One warning per layer (and process) and kind (``key``), not one per sample or batch."""
    if not layer.__dict__.get(key, False):
        layer.__dict__[key] = True
        warnings.warn(f"{type(layer).__name__}: {message} (warned once)", UserWarning, stacklevel=4)


def worker_generator(layer: torch.nn.Module, generator: torch.Generator | None):
    """The generator a layer draws from. None: torch's global one (which a DataLoader seeds
    per worker from its base seed, itself drawn from the global generator, so
    ``torch.manual_seed`` reproduces a run). Inside a DataLoader worker a given ``generator``
    would be the same copy in every worker: there it is replaced, once per worker, by a
    generator seeded from its seed and the worker's seed."""
    info = torch.utils.data.get_worker_info()
    if generator is None or info is None:
        return generator
    cached = layer.__dict__.get("_worker_generator")
    if cached is None or cached[0] != info.seed:
        seed = (generator.initial_seed() * 0x9E3779B97F4A7C15 + info.seed) % (1 << 63)
        cached = (info.seed, torch.Generator().manual_seed(seed))
        layer.__dict__["_worker_generator"] = cached
    return cached[1]


def check_index_dtype(index_dtype: Any, k: int) -> torch.dtype:
    """An ``index_dtype`` that can address ``k`` colours (as :func:`torchpalette.quantize`)."""
    dtypes = (torch.uint8, torch.int16, torch.int32, torch.int64)
    if index_dtype not in dtypes:
        raise TypeError(f"index_dtype: expected one of {[str(d) for d in dtypes]} or None, "
                        f"got {index_dtype!r}")
    if k > index_capacity(index_dtype):
        raise ValueError(f"index_dtype: expected a dtype that holds {k} palette indices, "
                         f"got {index_dtype}")
    return index_dtype


def check_colors_arg(colors: Any, name: str = "colors") -> int:
    return v.check_int(colors, name, low=1)  # no cap: token datasets use 512 (ImageGPT)


def colors_alias(colors: Any, kw: dict[str, Any], default: Any) -> Any:
    """``k=`` as an alias of ``colors=`` (the name :func:`torchpalette.palette` uses)."""
    if "k" not in kw:
        return colors
    k = kw.pop("k")
    if colors != default and colors != k:
        raise TypeError(f"colors: got colors={colors!r} and its alias k={k!r}; give one")
    return k


class fitmethod:
    """``PaletteQuantizer.fit(...)`` builds a new layer; ``layer.fit(...)`` refits ``layer``
    in place (keeping its settings and device) and returns it, as scikit-learn users expect."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.__doc__, self.__name__ = fn.__doc__, fn.__name__  # what help() and Sphinx read

    def __get__(self, obj: Any, cls: type) -> Callable[..., Any]:
        return functools.wraps(self.fn)(functools.partial(self.fn, cls, obj))


def as_palette(palette: Any) -> Tensor | None:
    """Tensor ``[..., K, 3]`` / :class:`Palette` / list of colour specs -> float ``[..., K, 3]``
    (any K >= 1)."""
    if palette is None:
        return None
    if isinstance(palette, Palette):
        palette = palette.colors
    if not isinstance(palette, Tensor):
        from ..color import parse_colors  # colour names, hex strings, 0..255 tuples

        palette = parse_colors(list(palette))
    palette = plain(palette)
    v.check_colors(palette, "palette", min_ndim=2)
    return palette.detach().clone()


def decode(indices: Tensor, palette: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Indices ``[..., H, W]`` (any integer dtype) into ``palette [..., K, 3]`` sRGB (batch
    dims broadcast) -> image ``[..., 3, H, W]`` of ``dtype``: :meth:`Quantized.image`, the
    package's one decoding (uint8 colours are ``round(255 c)``). A gather: a palette that
    requires grad gets the gradient of the pixels of each colour."""
    batch = torch.broadcast_shapes(indices.shape[:-2], palette.shape[:-2])
    idx = indices.expand(*batch, *indices.shape[-2:])
    pal = palette.expand(*batch, *palette.shape[-2:])
    return Quantized(idx, pal, pal[..., 0], None, dtype).image()
