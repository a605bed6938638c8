"""What the integrations share: images in framework form -> uint8 tensors, one quantize call,
the index dtype rule, and ImageGPT's palette form."""

from __future__ import annotations

import importlib
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _validate as v
from ..quantize import quantize


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{module}: expected it installed for this integration, got none "
                          f"(pip install 'torchpalette[{extra}]')") from None


def index_dtype(k: int) -> torch.dtype:
    """The index dtype of a ``k``-entry palette: ``torch.uint8`` up to 256, else ``torch.uint16``
    (``torch.int32`` past 65,536).

    Example:
        >>> index_dtype(256), index_dtype(512)
        (torch.uint8, torch.uint16)
    """
    k = v.check_int(k, "k", low=1)
    return torch.uint8 if k <= 256 else torch.uint16 if k <= 65536 else torch.int32


def imagegpt_palette(centers: Any) -> Tensor:
    """ImageGPT's ``kmeans_centers.npy`` (RGB in [-1, 1], ``[K, 3]``) -> sRGB ``[K, 3]`` in
    [0, 1]: ``(c + 1) / 2``.

    Example:
        >>> imagegpt_palette([[-1.0, 0.0, 1.0]])
        tensor([[0.0000, 0.5000, 1.0000]])
    """
    c = torch.as_tensor(np.asarray(centers), dtype=torch.float32)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"centers: expected shape [K, 3], got {list(c.shape)}")
    if not bool(torch.isfinite(c).all()) or float(c.min()) < -1 or float(c.max()) > 1:
        raise ValueError("centers: expected values in [-1, 1] (ImageGPT's form), got others")
    return (c + 1) / 2


def as_palette(palette: Any) -> Tensor | None:
    """``None``, a float ``[K, 3]`` in [0, 1] or a uint8 ``[K, 3]`` (0-255) -> float32 or None."""
    if palette is None:
        return None
    p = torch.as_tensor(np.asarray(palette))
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"palette: expected shape [K, 3], got {list(p.shape)}")
    return p.float() / 255 if p.dtype == torch.uint8 else p.float()


def to_uint8_chw(image: Any) -> Tensor:
    """A PIL image, an ``[H, W, 3|4]`` / ``[H, W]`` array or a ``[3, H, W]`` uint8 tensor ->
    uint8 ``[3, H, W]`` (alpha dropped: tokens are RGB, as ImageGPT's)."""
    if isinstance(image, Tensor):
        t = image
        if t.ndim == 3 and t.shape[0] in (3, 4):
            return t[:3].to(torch.uint8)
        raise ValueError(f"image: expected a [3|4, H, W] tensor, got {list(t.shape)}")
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL
        image = np.asarray(image.convert("RGB"))
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.dtype != np.uint8:
        raise ValueError(f"image: expected uint8 [H, W, 3|4], got {a.dtype} {list(a.shape)}")
    return torch.from_numpy(np.require(a[:, :, :3], requirements=["C", "W"])).permute(2, 0, 1)


def quantize_images(images: list[Tensor], *, colors: int, palette: Tensor | None, space: str,
                    dither: str, seed: int, device: torch.device | str
                    ) -> list[tuple[Tensor, Tensor]]:
    """uint8 ``[3, H, W]`` images -> ``(indices [H, W], palette [K, 3])`` each, on the CPU;
    equal-shaped images in one batch, as ``torchpalette quantize`` batches them."""
    out: list[Any] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(tuple(im.shape), []).append(i)
    for members in groups.values():
        x = torch.stack([images[i] for i in members]).to(device)
        with warnings.catch_warnings():  # few distinct colours is normal in a dataset
            warnings.filterwarnings("ignore", message=".*fewer distinct colours.*")
            q = (quantize(x, colors, space=space, dither=dither, seed=seed) if palette is None
                 else quantize(x, palette=palette.to(x.device), space=space, dither=dither))
        pals = q.palette.expand(len(members), *q.palette.shape[-2:])
        dtype = index_dtype(pals.shape[-2])  # uint16 past 256 (tp.quantize's int16 is signed)
        for i, a, p in zip(members, q.indices.cpu(), pals.float().cpu(), strict=True):
            out[i] = (a.to(torch.int64).to(dtype), p)
    return out


def palette_u8(palette: Tensor) -> np.ndarray:
    """Float ``[..., K, 3]`` in [0, 1] -> uint8 ``round(255 x)`` (half to even, float64), the
    rounding of the command's palette files."""
    return (palette.double() * 255).round().clamp(0, 255).to(torch.uint8).numpy()
