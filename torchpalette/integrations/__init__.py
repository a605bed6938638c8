"""Thin integrations of palette tokens with data frameworks, each importing its framework only
when called, so the core install stays light:

* :mod:`~torchpalette.integrations.hf`: :class:`~torchpalette.integrations.hf.PaletteTokenizer`
  for ``datasets.Dataset.map(batched=True, with_rank=True)`` (``pip install torchpalette[hf]``);
* :mod:`~torchpalette.integrations.ray`: :class:`~torchpalette.integrations.ray.RayQuantizer`
  for ``ray.data.Dataset.map_batches`` and the two-pass dataset palette
  (``pip install torchpalette[ray]``).

Both quantize like ``torchpalette quantize --format tokens``: the same palette and indices for
the same options, indices ``uint8`` up to 256 colours and ``uint16`` beyond.
"""

from ._common import imagegpt_palette, index_dtype

__all__ = ["imagegpt_palette", "index_dtype"]
