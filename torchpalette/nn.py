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

import functools
import inspect
import sys
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from . import _validate as v
from ._image import split_alpha
from .kmeans import kmeans
from .palette import SPACES, Palette, _from_space, _to_space
from .quantize import DITHERS, apply_palette, reduce_colors

__all__ = ["ColorQuantizer", "DeltaELoss", "PaletteQuantizer", "RandomColorReduction"]

# Defaults are defined once, in the functional core; the layers read them from there.
_REDUCE = inspect.signature(reduce_colors).parameters
_APPLY = inspect.signature(apply_palette).parameters
DEFAULT_COLORS: int = _REDUCE["colors"].default
DEFAULT_SPACE: str = _APPLY["space"].default
DEFAULT_DITHER: str = _APPLY["dither"].default

MAX_COLORS = 256  # one byte per index, as indexed PNG and GIF store them


# --------------------------------------------------------------------------- helpers


def _unwrap(image: Any) -> Tensor:
    """A plain ``Tensor`` view of ``image`` (tv_tensors would route every op through
    ``__torch_function__``); non-tensors pass on to the functional core's type check."""
    if isinstance(image, Tensor) and type(image) is not Tensor:
        return image.as_subclass(Tensor)
    return image


def _rewrap(out: Tensor, like: Any) -> Tensor:
    """Give ``out`` the tv_tensors type (and metadata) of ``like``. torchvision is only looked
    up when ``like`` is a tensor subclass, so importing torchpalette never imports it."""
    if type(like) is Tensor:
        return out
    tvt = sys.modules.get("torchvision.tv_tensors")
    if tvt is not None and isinstance(like, tvt.TVTensor):
        return tvt.wrap(out, like=like)
    return out


def _result(out: Tensor, like: Any, rest: tuple) -> Any:
    out = _rewrap(out, like)
    return (out, *rest) if rest else out


class _StraightThrough(torch.autograd.Function):
    """Forward: the quantized image; backward: the identity (Bengio et al. 2013)."""

    @staticmethod
    def forward(ctx, image: Tensor, quantized: Tensor) -> Tensor:  # noqa: ARG004
        return quantized.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ARG004
        return grad, None


def _check_colors_arg(colors: Any, name: str = "colors") -> int:
    return v.check_int(colors, name, low=1, high=MAX_COLORS)


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
        self.colors = _check_colors_arg(colors)
        self.space = v.check_choice(space, "space", SPACES)
        self.dither = v.check_choice(dither, "dither", DITHERS)
        self.palette_kw = dict(palette_kw)

    def forward(self, image: Tensor, *rest: Any) -> Any:
        out = reduce_colors(
            _unwrap(image), self.colors, space=self.space, dither=self.dither, **self.palette_kw
        )
        return _result(out, image, rest)

    def extra_repr(self) -> str:
        extra = "".join(f", {k}={val!r}" for k, val in self.palette_kw.items())
        return f"colors={self.colors}, space={self.space!r}, dither={self.dither!r}{extra}"


# --------------------------------------------------------------------------- PaletteQuantizer


class _fitmethod:
    """``PaletteQuantizer.fit(...)`` builds a new layer; ``layer.fit(...)`` refits ``layer``
    in place (keeping its settings and device) and returns it, as scikit-learn users expect."""

    def __init__(self, fn):
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __get__(self, obj, cls):
        return functools.wraps(self.fn)(functools.partial(self.fn, cls, obj))


def _as_palette(palette: Any) -> Tensor | None:
    """Tensor ``[..., K, 3]`` / :class:`Palette` / list of colour specs -> float ``[..., K, 3]``."""
    if palette is None:
        return None
    if isinstance(palette, Palette):
        palette = palette.colors
    if not isinstance(palette, Tensor):
        from .color import parse_colors  # colour names, hex strings, 0..255 tuples

        palette = parse_colors(list(palette))
    palette = _unwrap(palette)
    v.check_colors(palette, "palette", min_ndim=2)
    v.check_int(palette.shape[-2], "palette colours (K of [..., K, 3])", low=1, high=MAX_COLORS)
    return palette.detach().clone()


def _batches(images_or_loader: Any) -> Iterable[Tensor]:
    """Yield image tensors from a tensor, a list of images, or a DataLoader whose batches are
    tensors, ``(images, labels, ...)`` tuples/lists, or dicts with an ``"image"`` entry."""
    if isinstance(images_or_loader, Tensor):
        yield images_or_loader
        return
    for item in images_or_loader:
        if isinstance(item, dict):
            item = item.get("image", next(iter(item.values()), None))
        elif isinstance(item, (tuple, list)) and not isinstance(item, Tensor):
            item = item[0] if len(item) else None
        yield item


# Statistics are integers (exact, so sums do not depend on batch order, rank count or
# all-reduce order): colour sums in units of 1 / (255 * 2**16) of the sRGB range.
_FIX_SHIFT = 16
_CHUNK_PIXELS = 1 << 22  # bounds the per-batch working memory (~40 bytes per pixel)


def _accumulate(stats: Tensor, images: Tensor, bits: int, max_pixels: int | None) -> None:
    """Add the pixels of ``images`` ``[..., 3|4, H, W]`` to ``stats`` ``[bins**3, 4]`` int64
    (count, sum R, sum G, sum B per bin); alpha-0 pixels are not counted."""
    c, h, w = images.shape[-3:]
    flat = images.reshape(-1, c, h * w)
    n = h * w
    if max_pixels is not None and n > max_pixels:  # evenly spaced, deterministic subsample
        flat = flat[..., torch.arange(max_pixels, device=flat.device) * n // max_pixels]
        n = max_pixels
    nb = 1 << bits
    step = max(1, _CHUNK_PIXELS // n)
    for start in range(0, flat.shape[0], step):  # chunks bound memory; not one pass per image
        rgb, alpha = split_alpha(flat[start : start + step].unsqueeze(-1))
        rgb = rgb.squeeze(-1)
        if rgb.dtype == torch.uint8:
            fixed = rgb.long() << _FIX_SHIFT
        else:
            fixed = (rgb.double() * (255 << _FIX_SHIFT)).round_().long()
        # bin of a channel = round(255 x) >> (8 - bits), as palette() bins
        b = ((fixed + (1 << _FIX_SHIFT - 1)) >> _FIX_SHIFT) >> (8 - bits)
        index = ((b[:, 0] * nb + b[:, 1]) * nb + b[:, 2]).reshape(-1)
        keep = torch.ones_like(index) if alpha is None else (alpha.reshape(-1) > 0).long()
        values = torch.cat([keep[:, None], fixed.transpose(1, 2).reshape(-1, 3) * keep[:, None]], 1)
        stats.index_add_(0, index, values)


def _distributed(process_group: Any) -> bool:
    """True when a group is given or torch.distributed is initialised (never imports it)."""
    dist = sys.modules.get("torch.distributed")
    if process_group is not None:
        return True
    return dist is not None and dist.is_available() and dist.is_initialized()


def _all_reduce(stats: Tensor, process_group: Any) -> Tensor:
    """Sum ``stats`` over the ranks when torch.distributed is initialised (or a group given)."""
    if not _distributed(process_group):
        return stats
    import torch.distributed as dist

    comm = stats
    if dist.get_backend(process_group) == "nccl" and stats.device.type != "cuda":
        comm = stats.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(comm, op=dist.ReduceOp.SUM, group=process_group)
    return comm.to(stats.device)


def _broadcast(colors: Tensor, process_group: Any) -> Tensor:
    """Give every rank rank 0's palette, so ranks on different hardware still agree."""
    if not _distributed(process_group):
        return colors
    import torch.distributed as dist

    comm = colors.contiguous()
    if dist.get_backend(process_group) == "nccl" and colors.device.type != "cuda":
        comm = comm.to(torch.device("cuda", torch.cuda.current_device()))
    src = 0 if process_group is None else dist.get_global_rank(process_group, 0)
    dist.broadcast(comm, src=src, group=process_group)
    return comm.to(colors.device)


def _palette_from_stats(stats: Tensor, colors: int, space: str, seed: int) -> Tensor:
    """Weighted k-means on the occupied bins -> sRGB palette ``[colors, 3]``, most used first."""
    occupied = stats[:, 0].nonzero().squeeze(1)
    if occupied.numel() == 0:
        raise ValueError("images_or_loader: expected at least one pixel with alpha > 0, got none")
    if occupied.numel() < colors:
        raise ValueError(
            f"colors: expected at most {occupied.numel()} (the distinct colour bins seen in "
            f"images_or_loader), got {colors}"
        )
    counts = stats[occupied, 0].double()
    means = stats[occupied, 1:].double() / (counts[:, None] * (255 << _FIX_SHIFT))
    points = _to_space(means.float(), space)
    generator = torch.Generator().manual_seed(seed)  # CPU draws: the same on every device
    result = kmeans(points, colors, weights=counts.float(), generator=generator)
    mass = torch.zeros(colors, dtype=torch.float64, device=points.device)
    mass.index_add_(0, result.labels, counts)
    order = torch.sort(mass, descending=True, stable=True).indices
    return _from_space(result.centroids[order], space).clamp(0, 1)


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
        self.register_buffer("palette", _as_palette(palette))

    def forward(self, image: Tensor, *rest: Any) -> Any:
        if self.palette is None:
            raise RuntimeError(
                "PaletteQuantizer: no palette; pass one, call fit() or load_state_dict() first"
            )
        x = _unwrap(image)
        source = x.detach() if isinstance(x, Tensor) else x
        out = apply_palette(source, self.palette, space=self.space, dither=self.dither)
        if self.straight_through and isinstance(x, Tensor) and x.requires_grad:
            out = _StraightThrough.apply(x, out)
        return _result(out, image, rest)

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

    @_fitmethod
    def fit(
        cls,
        self: PaletteQuantizer | None,
        images_or_loader: Any,
        colors: int = DEFAULT_COLORS,
        *,
        max_pixels: int | None = None,
        space: str | None = None,
        bits: int = 6,
        seed: int = 0,
        device: torch.device | str | None = None,
        process_group: Any = None,
        **layer_kw: Any,
    ) -> PaletteQuantizer:
        """Learn one ``colors``-colour palette for a whole dataset, streaming.

        Each batch adds its pixels to a ``2**bits``-per-channel colour histogram of pixel
        counts and colour sums (integers, so memory is bounded by the histogram and the result
        does not depend on batch order); one weighted k-means (``seed``) then clusters the
        occupied bins' mean colours in ``space``. When ``torch.distributed`` is initialised (or
        ``process_group`` is given) the statistics are all-reduced, so every rank gets the same
        palette as a single process fitting all ranks' images.

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
        colors = _check_colors_arg(colors)
        bits = v.check_int(bits, "bits", low=1, high=8)
        if max_pixels is not None:
            max_pixels = v.check_int(max_pixels, "max_pixels", low=1)
        if space is None:
            space = self.space if self is not None else DEFAULT_SPACE
        v.check_choice(space, "space", SPACES)
        if device is None and self is not None and self.palette is not None:
            device = self.palette.device
        stats = None
        for batch in _batches(images_or_loader):
            batch = v.check_image(_unwrap(batch), "images_or_loader")
            if stats is None:
                device = torch.device(device) if device is not None else batch.device
                stats = torch.zeros(1 << 3 * bits, 4, dtype=torch.int64, device=device)
            _accumulate(stats, batch.to(device), bits, max_pixels)
        if stats is None:
            device = torch.device(device or "cpu")
            stats = torch.zeros(1 << 3 * bits, 4, dtype=torch.int64, device=device)
        stats = _all_reduce(stats, process_group)
        fitted = _broadcast(_palette_from_stats(stats, colors, space, seed), process_group)
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
            low, high = (_check_colors_arg(c, "colors") for c in colors)
            if low > high:
                raise ValueError(f"colors: expected low <= high, got ({low}, {high})")
        else:
            low = high = _check_colors_arg(colors)
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
        x = _unwrap(image)
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
        return _result(out.reshape(x.shape), image, rest)

    def extra_repr(self) -> str:
        return (
            f"colors={self.colors}, p={self.p}, space={self.space!r}, dither={self.dither!r}"
        )


# ------------------------------------------------------------------ ΔE as a loss
from .difference import METHODS as _DE_METHODS  # noqa: E402  (appended section)
from .difference import SPACES as _DE_SPACES  # noqa: E402
from .difference import delta_e as _delta_e  # noqa: E402

_DELTA_E = inspect.signature(_delta_e).parameters
_REDUCTIONS = ("mean", "sum", "none")


class DeltaELoss(torch.nn.Module):
    """Colour difference ΔE between images as a loss: one :func:`torchpalette.delta_e` call,
    then a reduction.

    Args:
        method: ``"ciede2000"`` (default), ``"cie94"``, ``"cie76"`` or ``"cmc"``, as in
            :func:`torchpalette.delta_e`. cie94 and cmc take ``target`` as the reference.
        space: ``"srgb"`` (default; float values in [0, 1], clamp model outputs first) or
            ``"lab"``.
        dim: the channel dim, ``-3`` for ``[..., 3, H, W]`` images (``-1`` for ``[..., 3]``
            colours).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the per-pixel ΔE).

    Shape:
        - input: ``[..., 3, H, W]`` (3 channels at ``dim``), float.
        - target: broadcastable with ``input``, same device.
        - output: a scalar, or for ``"none"`` the broadcast shape without ``dim``
          (``[..., H, W]``). float32 (float64 for float64 inputs), also under autocast.

    Raises:
        TypeError, ValueError: in ``__init__`` for a bad argument, naming it; in ``forward`` as
            :func:`torchpalette.delta_e`.

    Example:
        >>> import torch, torchpalette as tp
        >>> loss = tp.nn.DeltaELoss()
        >>> loss
        DeltaELoss(method='ciede2000', space='srgb', dim=-3, reduction='mean')
        >>> x = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
        >>> value = loss(x, torch.zeros(2, 3, 4, 4))
        >>> value.backward()
        >>> round(float(value.detach()), 2), x.grad.shape
        (39.74, torch.Size([2, 3, 4, 4]))
    """

    def __init__(
        self,
        method: str = _DELTA_E["method"].default,
        space: str = _DELTA_E["space"].default,
        dim: int = -3,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.method = v.check_choice(method, "method", _DE_METHODS)
        self.space = v.check_choice(space, "space", _DE_SPACES)
        self.dim = v.check_int(dim, "dim")
        self.reduction = v.check_choice(reduction, "reduction", _REDUCTIONS)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:  # noqa: A002 (torch's name)
        loss = _delta_e(target, input, method=self.method, space=self.space, dim=self.dim)
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss

    def extra_repr(self) -> str:
        return (
            f"method={self.method!r}, space={self.space!r}, dim={self.dim}, "
            f"reduction={self.reduction!r}"
        )
