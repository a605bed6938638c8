"""palette(): an image's weighted k-means colour palette.

Pixels are clustered in a perceptual space (CIELAB by default, or Oklab, or plain sRGB) with
the batched k-means of :func:`torchpalette.kmeans`; the palette is the cluster centres converted
back to sRGB, weighted by the fraction of pixels in each cluster. Pixels with alpha 0 carry no
weight.

Two methods:

* ``"hist"`` (default): pixels are counted in colour bins and the bins clustered as weighted
  points (each the mean of its pixels). With ``bits=None`` (default) the resolution follows
  the image, each image decided alone (a batch gives the palettes of a loop): an image with
  at most 1,024 distinct colours, or fewer than 8 occupied 5-bit bins per palette colour, is
  clustered on its exact (8-bit) colours, found by a sort of the pixel codes or by counting
  inside the occupied 5-bit bins (never a dense ``2**24`` table), so an image with ``<= k``
  colours comes back exactly; any other image (a photo) is clustered on its 5-bit bins, at
  the speed of the fixed histogram. ``bits=8`` clusters every image on its exact colours:
  photos coarse-to-fine (5-bit bins, then Lloyd steps on the exact colours). Measured mean
  dE00 against scikit-learn's KMeans in Lab (n_init=1, 3 seeds) on 8 photos of ~100k pixels
  (``benchmarks/RESULTS.md``) at k = 8 / 16 / 32 / 64: default +0.01 / +0.05 / +0.06 / +0.06;
  ``bits=8`` +0.01 / +0.02 / +0.01 / +0.01, at 4-9x the time of the default. Other
  ``bits`` (1..7) cluster fixed ``2**(3 bits)`` bins, as before.
* ``"exact"``: every pixel is a point (``max_pixels`` bounds the cost by subsampling).

The engine (binning, clustering, sorting) is ``torchpalette._palette_core``, shared with
:func:`torchpalette.reduce_colors`, the layers and dataset palettes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from . import _policy
from . import _validate as v
from ._assign import ALPHAS, label_rgba, shares
from ._palette_core import METHODS, check_options, image_palette
from ._spaces import SPACES
from ._types import Palette

__all__ = ["Palette", "palette", "SPACES", "METHODS"]


def palette(
    image: Tensor,
    k: int = 16,
    *,
    space: str = "lab",
    max_pixels: int | None = None,
    seed: int = 0,
    method: str = "hist",
    bits: int | None = None,
    alpha: str = "keep",
    **kmeans_kw: Any,
) -> Palette:
    """Weighted k-means palette of each image.

    Args:
        image: ``[..., 3|4, H, W]`` uint8, or float sRGB in [0, 1]; alpha-0 pixels are ignored.
        k: palette size (>= 1). Images with fewer distinct colours than ``k`` (occupied bins,
            with a fixed ``bits``) warn and get duplicate colours of weight 0 (copies of the
            heaviest one with adaptive bits).
        space: clustering space, ``"lab"`` (CIELAB D65), ``"oklab"`` or ``"srgb"``.
        max_pixels: cluster at most this many pixels per image (a random subset, the same
            positions for every image of a batch); ``None`` uses all.
        seed: seed of the k-means++ draws (and of the subset).
        method: ``"hist"`` (3-D histogram bins as weighted points, fast) or ``"exact"``
            (every pixel a point).
        bits: bits per channel of the ``"hist"`` bins: ``None`` (default) adapts to the image
            up to exact colours; 8: exact colours, coarse-to-fine (above); 1..7 fixes them
            (5 was the default before).
        alpha: ``"keep"`` (default): an RGB palette of the visible pixels. ``"quantize"``: an
            RGBA palette ``[..., max(k, 2), 4]`` with alpha quantized, as
            :func:`torchpalette.quantize` builds it (a transparent entry first where there
            are transparent pixels, then opaque entries, then semi-transparent ones; weights
            are shares of the visible pixels, not sorted).
        **kmeans_kw: passed to :func:`torchpalette.kmeans` (``max_iter``, ``tol``,
            ``n_init``); ``tol`` defaults to 1e-2 here and ``n_init`` to 3 for ``k <= 4``
            (small palettes: one seeding can land in a clearly worse local optimum), else 1.

    Returns:
        :class:`Palette`: colours ``[..., k, 3]`` sRGB in [0, 1] (float32, or the image's
        float dtype) and weights ``[..., k]`` (sum 1, sorted descending).

    Raises:
        TypeError: not a tensor, wrong dtype, non-int ``k``/``seed``/``bits``.
        ValueError: bad shape, empty, NaN, float values outside [0, 1], ``k < 1``, unknown
            ``space``/``method``.

    An image whose pixels all have alpha 0 does not fail its batch: it gets the palette of its
    (invisible) colours with all weights 0.

    Example:
        >>> import torch, torchpalette as tp
        >>> img = torch.zeros(3, 4, 4, dtype=torch.uint8)
        >>> img[0, :, :1] = 255  # a red quarter, the rest black
        >>> pal = tp.palette(img, k=2)
        >>> (pal.colors * 255).round(), pal.weights
        (tensor([[  0.,   0.,   0.],
                [255.,   0.,   0.]]), tensor([0.7500, 0.2500]))
    """
    v.check_image(image, "image")
    v.check_choice(alpha, "alpha", ALPHAS)
    opt = check_options(k, space, max_pixels, seed, method, bits, kmeans_kw)
    v.check_k_fits(opt.k, image)
    if alpha == "quantize":
        with torch.no_grad(), _policy.no_autocast(image):
            labels, rgba = label_rgba(image.detach(), space, "none", opt=opt)
            weights = shares(image, labels, rgba.shape[-2]).to(rgba.dtype)
        batch = image.shape[:-3]
        return Palette(rgba.reshape(*batch, -1, 4), weights.reshape(*batch, -1))
    with _policy.no_autocast(image):  # float32 colours and distances, as without autocast
        return image_palette(image, opt)[0]
