"""Every input check of torchpalette, in one place.

Each check raises ``TypeError`` for a wrong type or dtype and ``ValueError`` for a wrong shape,
range or value, and its message names the argument, what was expected and what was given, e.g.
``image: expected shape [..., 3|4, H, W], got [5, 5]``. Checks that need the data (range, NaN)
cost one reduction; they are done once per public call, never inside iterations.

The value checks (NaN/inf and range, the ones that read the data back to the host) run in
eager mode only: inside ``torch.compile`` they are skipped, so they never break a graph. They
can be turned off for production loops with :func:`set_checks` (``torchpalette.set_checks``)
or by starting Python with ``TORCHPALETTE_CHECKS=0``; shape, type and dtype checks always run.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "check_tensor",
    "check_image",
    "check_colors",
    "check_data",
    "check_finite",
    "check_range",
    "check_int",
    "check_choice",
    "check_positive",
    "shape_str",
    "set_checks",
    "checks_enabled",
]

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

# The one switch of the value checks (see the module docstring); read at call time.
_CHECKS = {"values": os.environ.get("TORCHPALETTE_CHECKS", "1").strip().lower()
           not in ("0", "false", "no", "off")}


def set_checks(enabled: bool) -> bool:
    """Turn the value checks (NaN/inf, range: one host read-back per call) on or off for the
    whole process; return the previous setting. Shape, type and dtype checks always run, and
    inside ``torch.compile`` the value checks are skipped whatever this says.

    Example:
        >>> import torchpalette as tp
        >>> previous = tp.set_checks(False)  # e.g. in a training loop
        >>> _ = tp.set_checks(previous)
    """
    previous = _CHECKS["values"]
    _CHECKS["values"] = bool(enabled)
    return previous


def checks_enabled() -> bool:
    """Whether value checks run now: switched on and not inside a ``torch.compile`` trace."""
    return _CHECKS["values"] and not torch.compiler.is_compiling()


def shape_str(shape: Sequence[int]) -> str:
    """``[2, 3, 4]`` style text for a shape, as used in every error message."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"


def broadcast_shape(*shapes: Sequence[int]) -> torch.Size:
    """``torch.broadcast_shapes`` without its first-call cost (it imports torch's reference
    implementations: ~0.3 s, more on a busy machine, in every new process). Raises
    ``RuntimeError`` as it does when the shapes do not broadcast."""
    if torch.compiler.is_compiling():  # symbolic sizes: torch's own rules
        return torch.broadcast_shapes(*shapes)
    ndim = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(-ndim, 0):
        sizes = {s[i] for s in shapes if len(s) >= -i} - {1}
        if len(sizes) > 1:
            raise RuntimeError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return torch.Size(out)


def check_tensor(x: Any, name: str) -> Tensor:
    """Raise ``TypeError`` unless ``x`` is a ``torch.Tensor``; return it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_nonempty(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``x`` has no elements."""
    if x.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty tensor, got shape {shape_str(x.shape)}")


def check_data(
    x: Tensor, name: str, low: float | None = None, high: float | None = None
) -> None:
    """Raise ``ValueError`` if ``x`` holds NaN/inf or (when bounds are given) values outside
    ``[low, high]``. One ``aminmax`` pass and one host sync cover all of it (NaN propagates
    through min/max), so checking a large tensor costs a single read. Skipped when
    :func:`checks_enabled` is False (switched off, or inside ``torch.compile``)."""
    if not checks_enabled():
        return
    if not x.is_floating_point():
        if low is None and high is None:
            return
        lo, hi = torch.aminmax(x.detach())
        lo_v, hi_v = float(lo), float(hi)
    else:
        lo_v, hi_v = (float(t) for t in torch.aminmax(x.detach()))
        if math.isnan(lo_v) or math.isnan(hi_v):
            raise ValueError(f"{name}: expected finite values, got NaN")
        if math.isinf(lo_v) or math.isinf(hi_v):
            raise ValueError(f"{name}: expected finite values, got infinity")
    if (low is not None and lo_v < low) or (high is not None and hi_v > high):
        raise ValueError(
            f"{name}: expected values in [{low:g}, {high:g}], got values in [{lo_v:g}, {hi_v:g}]"
        )


def check_finite(x: Tensor, name: str) -> None:
    """Raise ``ValueError`` if a floating ``x`` holds NaN or infinity."""
    if x.is_floating_point():
        check_data(x, name)


def check_range(x: Tensor, name: str, low: float, high: float) -> None:
    """Raise ``ValueError`` unless every value of ``x`` lies in ``[low, high]`` (NaN/inf too)."""
    check_data(x, name, low, high)


def check_float_dtype(x: Tensor, name: str) -> None:
    """Raise ``TypeError`` unless ``x`` has a floating dtype."""
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype, got {x.dtype}")


def check_image(
    image: Any,
    name: str = "image",
    *,
    allow_alpha: bool = True,
    check_values: bool = True,
) -> Tensor:
    """Validate an image ``[..., 3|4, H, W]``: uint8, or float in [0, 1].

    Args:
        image: the candidate image.
        name: argument name used in error messages.
        allow_alpha: accept 4 channels (RGBA).
        check_values: for float images, check for NaN/inf and the [0, 1] range.

    Returns:
        The same tensor, unchanged.

    Raises:
        TypeError: not a tensor, or a dtype other than uint8 / float.
        ValueError: fewer than 3 dims, a channel count other than 3 (or 4), an empty image,
            NaN/inf, or float values outside [0, 1].
    """
    check_tensor(image, name)
    channels = "3|4" if allow_alpha else "3"
    if image.dtype != torch.uint8 and image.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected dtype uint8 or a float dtype, got {image.dtype}")
    if image.ndim < 3:
        raise ValueError(
            f"{name}: expected shape [..., {channels}, H, W], got {shape_str(image.shape)}"
        )
    c = image.shape[-3]
    if c not in ((3, 4) if allow_alpha else (3,)):
        hint = " (grey images: expand to 3 channels first)" if c == 1 else ""
        raise ValueError(
            f"{name}: expected {channels} channels at dim -3 of [..., {channels}, H, W], "
            f"got {c} in shape {shape_str(image.shape)}{hint}"
        )
    check_nonempty(image, name)
    if check_values and image.is_floating_point():
        check_data(image, name, 0.0, 1.0)
    return image


def check_colors(
    colors: Any,
    name: str = "colors",
    *,
    min_ndim: int = 1,
    value_range: tuple[float, float] | None = (0.0, 1.0),
    check_values: bool = True,
    channels: tuple[int, ...] = (3,),
) -> Tensor:
    """Validate a channel-last colour tensor ``[..., 3]`` of a floating dtype.

    Args:
        colors: the candidate colours.
        name: argument name used in error messages.
        min_ndim: fewest dims (2 for ``[..., K, 3]`` lists of colours).
        channels: accepted sizes of the last dim (``(3, 4)``: RGBA palettes too).
        value_range: allowed closed range (sRGB: (0, 1)); ``None`` skips the range check
            (Lab, Oklab).
        check_values: check for NaN/inf and the range.

    Raises:
        TypeError: not a tensor, or not a floating dtype.
        ValueError: wrong shape, empty, NaN/inf, or out of range.
    """
    check_tensor(colors, name)
    check_float_dtype(colors, name)
    c = "|".join(str(n) for n in channels)
    want = f"[..., K, {c}]" if min_ndim >= 2 else f"[..., {c}]"
    if colors.ndim < min_ndim or colors.shape[-1] not in channels:
        raise ValueError(f"{name}: expected shape {want}, got {shape_str(colors.shape)}")
    check_nonempty(colors, name)
    if check_values:
        check_data(colors, name, *(value_range or (None, None)))
    return colors


def check_int(
    value: Any, name: str, *, low: int | None = None, high: int | None = None
) -> int:
    """Validate an integer argument in ``[low, high]`` (either bound optional); return it."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        isinstance(value, Tensor) and value.ndim == 0 and not value.is_floating_point()
    ):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise ValueError(f"{name}: expected an int in [{lo}, {hi}], got {value}")
    return value


def check_positive(value: Any, name: str, *, allow_zero: bool = False) -> float:
    """Validate a real number > 0 (or >= 0); return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    value = float(value)
    # comparisons only (False for NaN): math.isnan breaks a compiled graph, where an int
    # argument such as DeltaELoss's kC=1 traces as a symbolic number under dynamic=True
    ok = (value >= 0 if allow_zero else value > 0) and value < math.inf
    if not ok:
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite number {rel}, got {value}")
    return value


MAX_PADDED_K = 1 << 16
"""A palette size may exceed an image's pixel count (weight-0 padding) up to this."""


def check_k_fits(k: int, image: Tensor, name: str = "k") -> None:
    """Raise ``ValueError`` when ``k`` is above both the pixels per image and
    ``MAX_PADDED_K``: every entry past the pixel count is padding, and allocating it first
    (k=10**8 on an 8x8 image) took gigabytes."""
    pixels = image.shape[-1] * image.shape[-2]
    if isinstance(k, int) and k > max(pixels, MAX_PADDED_K):
        raise ValueError(f"{name}: expected at most the pixels per image ({pixels}) or "
                         f"{MAX_PADDED_K}, got {k}")


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """Validate that ``value`` is one of ``choices``; return it."""
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected one of {list(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name}: expected one of {list(choices)}, got {value!r}")
    return value


def check_kmeans_options(*, max_iter: int = 100, tol: float = 1e-4, n_init: int = 1) -> None:
    """Validate the scalar k-means options of :func:`torchpalette.kmeans` and palettes."""
    check_int(max_iter, "max_iter", low=0)
    check_int(n_init, "n_init", low=1)
    check_positive(tol, "tol", allow_zero=True)


def check_unit(value: Any, name: str) -> float:
    """Validate a real number in [0, 1] (a strength, a share); return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"{name}: expected a number in [0, 1], got {value}")
    return value
