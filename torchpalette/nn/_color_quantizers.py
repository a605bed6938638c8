"""The k-means layers: :class:`ColorQuantizer` (each image to its own palette) and
:class:`RandomColorReduction` (the augmentation). Public home: :mod:`torchpalette.nn`."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors

from .. import _validate as v
from .._palette_core import check_options
from .._spaces import SPACES
from ..quantize import DITHERS, quantize, reduce_colors
from ._base import (
    QuantizerTransform,
    check_colors_arg,
    colors_alias,
    plain,
    straight_through,
    strength_repr,
    warn_once,
    worker_generator,
)
from ._ops import apply_palette_traceable, image_palette_op, reduce_at_k_op
from ._palette_quantizer import (
    DEFAULT_COLORS,
    DEFAULT_DITHER,
    DEFAULT_DITHER_STRENGTH,
    DEFAULT_SPACE,
)


class ColorQuantizer(QuantizerTransform):
    """Reduce each image to its own ``colors``-colour k-means palette.

    In eager mode one call of :func:`torchpalette.reduce_colors` per sample (a batch is
    clustered in one batched k-means); compiled, the palette is an opaque operator and the
    exact per-pixel assignment compiles (on CUDA the eager default is the look-up-table
    assignment, ``assign="bins"``, +0.04 mean dE00; pass ``assign="exact"`` for the same
    result as compiled). Fewer distinct colours than ``colors`` warn once per layer.

    Args:
        colors: palette size per image, >= 1 (``k=`` is an alias).
        space: clustering and matching space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"`` (as
            :func:`torchpalette.apply_palette`).
        dither_strength: 0..1, how much of each pixel's error the dither mixes in (0: no
            dither, 1: full), as :func:`torchpalette.quantize`.
        straight_through: pass the incoming gradient to the input unchanged.
        **palette_kw: passed on to :func:`torchpalette.reduce_colors` (``seed``,
            ``max_pixels``, ``assign``, ...).

    Raises:
        TypeError: ``colors`` not an int, ``space``/``dither`` not a str, unknown keywords; in
            ``forward``, a sample without image or a dtype other than uint8/float.
        ValueError: ``colors`` < 1, an unknown ``space``/``dither``, ``dither_strength``
            outside [0, 1]; in ``forward``,
            a grey (1-channel) image or NaN.

    Example:
        >>> import torch, torchpalette as tp
        >>> layer = tp.nn.ColorQuantizer(colors=4)
        >>> layer
        ColorQuantizer(colors=4, space='lab', dither='none')
        >>> image = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
        >>> out = layer({"image": image, "label": 3})
        >>> out["image"].shape, out["image"].dtype, out["label"]
        (torch.Size([2, 3, 16, 16]), torch.uint8, 3)
        >>> bool((out["image"][0].flatten(1).unique(dim=1).shape[1] <= 4))
        True
    """

    _settings = ("colors", "space", "dither", "straight_through", "palette_kw",
                 "dither_strength")

    def __init__(
        self,
        colors: int = DEFAULT_COLORS,
        space: str = DEFAULT_SPACE,
        dither: str = DEFAULT_DITHER,
        straight_through: bool = True,
        *,
        dither_strength: float = DEFAULT_DITHER_STRENGTH,
        **palette_kw: Any,
    ) -> None:
        super().__init__()
        self.colors = check_colors_arg(colors_alias(colors, palette_kw, DEFAULT_COLORS))
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.dither_strength = v.check_unit(dither_strength, "dither_strength")
        self.straight_through = bool(straight_through)
        self.palette_kw = dict(palette_kw)
        self._options = _options_json(self.palette_kw)
        opts = {n: x for n, x in palette_kw.items() if n != "assign"}
        check_options(self.colors, self.space, opts.pop("max_pixels", None), opts.pop("seed", 0),
                      opts.pop("method", "hist"), opts.pop("bits", 5), opts, "ColorQuantizer")

    def quantize(self, image: Tensor, params: dict[str, Any]) -> Tensor:
        x = image.detach()
        if torch.compiler.is_compiling():
            flat = x.reshape(-1, *x.shape[-3:])
            pal = image_palette_op(flat, self.colors, self.space, self._options)
            out = apply_palette_traceable(flat, pal, self.space, self.dither,
                                          self.dither_strength).reshape(x.shape)
        else:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                out = reduce_colors(x, self.colors, space=self.space, dither=self.dither,
                                    dither_strength=self.dither_strength, **self.palette_kw)
            for w in caught:
                warn_once(self, str(w.message))
        return straight_through(out, image) if self.straight_through else out

    def quantize_with_indices(
        self, image: Tensor, index_dtype: torch.dtype | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Output, indices and palette from one :func:`torchpalette.quantize` call (one
        search; eager): ``image [..., 3|4, H, W]`` -> (image as :meth:`forward`, ``[..., H,
        W]`` indices, uint8 up to 256 colours, ``[..., colors, 3]`` palette)."""
        x = plain(image)
        v.check_image(x, "image", check_values=False)
        x = self.prepare(x)
        q = quantize(x.detach(), self.colors, space=self.space, dither=self.dither,
                     index_dtype=index_dtype, dither_strength=self.dither_strength,
                     **self.palette_kw)
        out = q.image()
        out = straight_through(out, x) if self.straight_through else out
        return out, q.indices, q.palette

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        self._options = _options_json(self.palette_kw)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={val!r}" for k, val in self.palette_kw.items())
        st = "" if self.straight_through else ", straight_through=False"
        return (f"colors={self.colors}, space={self.space!r}, dither={self.dither!r}"
                f"{strength_repr(self.dither_strength)}{st}{extra}")


def _options_json(palette_kw: dict[str, Any]) -> str:
    """The palette keywords for the compiled path's palette operator (the ``assign`` of the
    eager path aside: compiled, pixels take the exact nearest colour)."""
    return json.dumps({n: val for n, val in palette_kw.items() if n != "assign"}, sort_keys=True)


class RandomColorReduction(QuantizerTransform):
    """Augmentation: with probability ``p`` reduce an image to a random number of colours.

    Each image of a batch draws its own coin and its own ``k`` uniformly from
    ``colors = (low, high)`` (inclusive; an int fixes k); ``same_on_batch=True`` draws once
    for the whole batch. Every draw happens in :meth:`make_params`, from ``generator`` or,
    by default, torch's global generator (so ``torch.manual_seed`` reproduces a run, and
    DataLoader workers, which torch seeds each from its own seed, draw independently; a given
    ``generator`` is re-seeded per worker from its seed and the worker's).

    A batch is reduced in one batched call whatever its k's (no loop over images or k): when
    every reduced image has the same k the result is ``reduce_colors(image, k)``; with mixed
    k every image is clustered at the batch's largest k with its extra clusters masked out,
    and pixels take their colour bin's cluster colour (``torchpalette.nn._ops``; at most k
    colours per image, mean dE00 within a few hundredths of ``reduce_colors``, see
    ``benchmarks/RESULTS.md``). Low-colour images warn once per layer, not per sample.

    Args:
        colors: ``(low, high)`` with 1 <= low <= high <= 256, or one int (``k=`` is an alias).
        p: probability of reducing each image, in [0, 1].
        space: clustering space, ``"lab"``, ``"oklab"`` or ``"srgb"``.
        dither: ``"none"``, ``"ordered"`` or ``"floyd-steinberg"``.
        dither_strength: 0..1, how much of each pixel's error the dither mixes in.
        same_on_batch: one coin and one k for all images of a batch.
        per_frame: a draw per frame of a ``tv_tensors.Video`` ``[..., T, 3|4, H, W]``
            (default: one per clip, so its colours do not flicker from frame to frame).
        straight_through: pass the incoming gradient to the input unchanged.
        generator: optional CPU ``torch.Generator`` for the draws (eager mode).

    Raises:
        TypeError: ``colors`` not an int or pair of ints, ``p`` not a number.
        ValueError: ``colors`` < 1 or ``low > high``; ``p`` or ``dither_strength`` outside
            [0, 1].

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

    _settings = ("colors", "p", "space", "dither", "same_on_batch", "per_frame",
                 "straight_through", "dither_strength")

    def __init__(
        self,
        colors: int | tuple[int, int] = (2, 64),
        p: float = 0.5,
        space: str = DEFAULT_SPACE,
        dither: str = DEFAULT_DITHER,
        *,
        dither_strength: float = DEFAULT_DITHER_STRENGTH,
        same_on_batch: bool = False,
        per_frame: bool = False,
        straight_through: bool = True,
        generator: torch.Generator | None = None,
        k: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if k is not None:
            colors = colors_alias(colors, {"k": k}, (2, 64))
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
        self.dither_strength = v.check_unit(dither_strength, "dither_strength")
        self.same_on_batch = bool(same_on_batch)
        self.per_frame = bool(per_frame)
        self.straight_through = bool(straight_through)
        self.generator = generator

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Tensor]:
        """Draw, for the images of a sample (the most any image entry holds), whether each is
        reduced (``apply`` bool ``[n]``) and its k (``k`` int64 ``[n]``). Both are always
        drawn, so the stream of random numbers does not depend on the outcome. The frames of
        a ``Video`` clip share one draw unless ``per_frame``."""
        n = max((math.prod(x.shape[:-3]) if isinstance(x, Tensor) else 1) for x in flat_inputs)
        frames = 1
        if not self.per_frame:
            clips = [x for x in flat_inputs if isinstance(x, tv_tensors.Video) and x.ndim >= 4]
            frames = clips[0].shape[-4] if clips else 1
        draws = 1 if self.same_on_batch else -(-n // frames)
        if torch.compiler.is_compiling():
            apply = torch.rand(draws) < self.p
            k = torch.randint(self.colors[0], self.colors[1] + 1, (draws,))
        else:
            g = worker_generator(self, self.generator)
            apply = torch.rand(draws, generator=g) < self.p
            k = torch.randint(self.colors[0], self.colors[1] + 1, (draws,), generator=g)
        if self.same_on_batch:
            return {"apply": apply.expand(n), "k": k.expand(n)}
        # frame f of clip c is image c * frames + f of the flattened batch
        return {"apply": apply.repeat_interleave(frames)[:n], "k": k.repeat_interleave(frames)[:n]}

    def quantize(self, image: Tensor, params: dict[str, Any]) -> Tensor:
        flat = image.detach().reshape(-1, *image.shape[-3:])
        n = flat.shape[0]
        k = torch.where(params["apply"][:n], params["k"][:n], 0)
        out, degenerate = reduce_at_k_op(flat, k, self.space, self.dither, 0,
                                         self.dither_strength)
        if not torch.compiler.is_compiling() and bool(degenerate.any()):
            warn_once(self, "an image has fewer distinct colours than its k")
        out = out.reshape(image.shape)
        return straight_through(out, image) if self.straight_through else out

    def extra_repr(self) -> str:
        extra = strength_repr(self.dither_strength)
        extra += ", same_on_batch=True" if self.same_on_batch else ""
        extra += ", per_frame=True" if self.per_frame else ""
        extra += "" if self.straight_through else ", straight_through=False"
        return (
            f"colors={self.colors}, p={self.p}, space={self.space!r}, "
            f"dither={self.dither!r}{extra}"
        )

