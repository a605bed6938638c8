"""Colour quantization as layers: torchvision v2 Transforms (so ``nn.Module``s).

Three thin layers over the functional core (:func:`torchpalette.reduce_colors`,
:func:`torchpalette.apply_palette`): each stores its settings (and a palette) and quantizes
the images of a sample with one call, so layer and function share their defaults.

* :class:`ColorQuantizer` reduces every image to its own k-means palette.
* :class:`PaletteQuantizer` maps every image onto one palette: fixed, fitted to a dataset
  (``fit``), or learnt (``learnable=True``, optional soft assignment with ``temperature``).
* :class:`RandomColorReduction` is a data augmentation: with probability ``p`` an image is
  reduced to a random number of colours.
* :class:`PaletteVQ` learns a palette as a VQ codebook (EMA updates, k-means initialisation,
  dead-colour re-seeding, commitment loss; quantized image, indices and loss from one call).
* :class:`DeltaELoss` is ΔE between images as a loss (a plain module).

Samples: any pytree (a tensor, ``(image, label)``, ``{"image": ..., "mask": ...}``, nested).
As every v2 transform they quantize ``tv_tensors.Image``/``Video``, plain tensors by
torchvision's rule (the first plain tensor when the sample has no Image/Video), and PIL images
(returned as PIL); masks, boxes, labels and everything else pass through untouched. Images are
``[..., 3|4, H, W]`` uint8, or float; float images are clamped into [0, 1] first (as
torchvision's colour transforms clamp), NaN raises in eager mode, and values far outside
[0, 1] (0..255 floats, normalised tensors) warn once per layer before the clamp. Output keeps
shape, dtype, device and type. Under ``torch.autocast`` palettes and distances are float32.
Indices (``PaletteQuantizer.indices``, ``PaletteVQ``) take :func:`torchpalette.quantize`'s
dtype: uint8 up to 256 colours (``index_dtype=`` overrides).

Temperatures (soft assignment) are in squared units of about one JND of the matching space
(2.3 in Lab, 0.023 in Oklab and sRGB; ``torchpalette.nn._soft.SPACE_UNIT``), so ``τ = 1``
is soft near the boundary between two colours and hard elsewhere, in every space.

Gradients: every quantizing layer has ``straight_through=True`` by default: the output is the
quantized image, and the incoming gradient reaches the input unchanged.

``torch.compile(layer, fullgraph=True, dynamic=True)``: one graph for any H, W, B (plus the one
dynamo makes for a batch of 1) and, for the k-means layers, any k; the nearest-colour search
runs as one chunk without a Python loop when compiled. PaletteQuantizer and ``.indices`` compile
whole (forward and backward); dithering is sequential, so a dithered layer's search is the
opaque operator ``torchpalette::palette_indices`` and its colours are gathered outside it (a
learnable palette keeps its gradient); every layer's ``dither_strength`` (0..1, as
:func:`torchpalette.quantize`) is an argument of that operator, so it compiles too. The
same forms export: ``torch.export.export`` (default,
non-strict) with dynamic B, H, W runs at other sizes than traced, and PaletteQuantizer exports
to ONNX. k-means is data-dependent (convergence loop, host checks), so in ColorQuantizer and
RandomColorReduction the palette step is a ``torch.library`` custom operator, opaque to the
compiler (``torchpalette.nn._ops``), and the rest compiles around it: ColorQuantizer's per-pixel
assignment compiles; RandomColorReduction's draws and mixing compile and its k-means plus
look-up-table assignment stay in the operator (per-image k is a tensor, so a new k never
recompiles). A compiled RandomColorReduction draws from torch's global generator (a
``generator`` object cannot enter a graph). Value checks run in eager mode only;
``torchpalette.set_checks(False)`` (or ``TORCHPALETTE_CHECKS=0``) turns them off. Samples of
tv_tensors are not traceable by dynamo in torchvision 0.29: compile on plain tensors.
"""

from ._color_quantizers import ColorQuantizer, RandomColorReduction
from ._loss import DeltaELoss
from ._palette_quantizer import PaletteQuantizer
from ._vq import PaletteVQ, VQOutput

__all__ = ["ColorQuantizer", "DeltaELoss", "PaletteQuantizer", "PaletteVQ",
           "RandomColorReduction", "VQOutput"]

# The public home of every layer: reprs, pickles and docs name ``torchpalette.nn.X``.
for _cls in (ColorQuantizer, DeltaELoss, PaletteQuantizer, PaletteVQ, RandomColorReduction,
             VQOutput):
    _cls.__module__ = __name__
del _cls
