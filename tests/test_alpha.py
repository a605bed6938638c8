"""Alpha as a quantized channel: RGBA palettes in tp.quantize / tp.palette (torchpalette._alpha)."""

from __future__ import annotations

import pytest
import torch

import torchpalette as tp


def _rgba(seed: int = 0, size: int = 24) -> torch.Tensor:
    """A uint8 RGBA image: a transparent band with garbage colours under it, a semi-transparent
    band at two alpha levels and an opaque rest."""
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (4, size, size), dtype=torch.uint8, generator=g)
    img[3] = 255
    img[3, :5] = 0
    img[3, 5:8] = 96
    img[3, 8:10, : size // 2] = 200
    return img


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_own_rgba_palette_keeps_transparency(dtype):
    img = _rgba()
    x = img if dtype == torch.uint8 else img.float() / 255
    q = tp.quantize(x, 8, alpha="quantize")
    assert q.palette.shape == (8, 4) and q.alpha is None and q.indices.dtype == torch.uint8
    out = q.image()
    assert out.shape == x.shape and out.dtype == dtype
    a_out = tp._image.to_levels(out[3])
    assert bool((a_out[:5] == 0).all()), "transparent stays transparent"
    assert bool((a_out[10:] == 255).all()), "opaque stays opaque"
    semi = a_out[5:10]
    assert bool(((semi > 0) & (semi < 255)).any())
    assert bool((q.palette[q.indices[:5].long()] == 0).all())  # the (0, 0, 0, 0) entry
    # weights: shares of the visible pixels; the transparent entry has none
    assert float(q.weights[q.indices[0, 0].long()]) == 0.0
    torch.testing.assert_close(q.weights.sum(), torch.tensor(1.0, dtype=q.weights.dtype))
    assert torch.equal(tp.palette(x, 8, alpha="quantize").colors, q.palette)


def test_hidden_colours_do_not_shape_the_palette():
    a, b = _rgba(), _rgba()
    b[:3, :5] = 255 - b[:3, :5]  # other garbage under alpha 0
    qa, qb = tp.quantize(a, 6, alpha="quantize"), tp.quantize(b, 6, alpha="quantize")
    assert torch.equal(qa.palette, qb.palette)
    assert torch.equal(qa.indices, qb.indices)


def test_opaque_pixels_search_like_rgb():
    img = _rgba()
    q = tp.quantize(img, 8, alpha="quantize")
    opaque = q.palette[:, 3] == 1
    rgb_pal = q.palette[opaque, :3]
    near = tp.palette_indices(img[:3], rgb_pal)
    solid = img[3] == 255
    assert torch.equal(torch.nonzero(opaque).squeeze(1)[near][solid], q.indices.long()[solid])


def test_given_rgba_palette_one_search_and_rules():
    img = _rgba(1)
    pal = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 1], [0.5, 0.5, 0.5, 0.4]])
    q = tp.quantize(img, palette=pal)
    assert q.palette.shape == (4, 4) and q.alpha is None
    idx = q.indices.long()
    assert bool((idx[:5] == 0).all())
    assert bool(((idx[10:] == 1) | (idx[10:] == 2)).all())  # opaque pixels: opaque entries
    out = q.image()
    assert torch.equal(out, tp.apply_palette(img, pal))
    with pytest.raises(ValueError, match="palette: expected RGBA entries"):
        tp.quantize(img, palette=pal[:, :3], alpha="quantize")
    with pytest.raises(ValueError, match="assign: expected 'exact' or 'auto' with an RGBA"):
        tp.quantize(img, palette=pal, assign="refined")
    with pytest.raises(ValueError, match="alpha"):
        tp.quantize(img, 4, alpha="drop")


def test_rgba_batch_equals_loop_and_shapes():
    img = torch.stack([_rgba(s) for s in range(6)]).reshape(2, 3, 4, 24, 24)
    img[1, 2, 3] = 0  # an image with every pixel transparent
    q = tp.quantize(img, 5, alpha="quantize")
    assert q.palette.shape == (2, 3, 5, 4) and q.indices.shape == (2, 3, 24, 24)
    for i in range(2):
        for j in range(3):
            one = tp.quantize(img[i, j], 5, alpha="quantize")
            assert torch.equal(q.indices[i, j], one.indices)
            torch.testing.assert_close(q.palette[i, j], one.palette, rtol=0, atol=1e-6)
    assert bool((q.image()[1, 2, 3] == 0).all()) and float(q.weights[1, 2].sum()) == 0.0


def test_rgb_image_with_alpha_quantize_is_opaque_and_k_one():
    img = _rgba()[:3]
    q = tp.quantize(img, 1, alpha="quantize")
    assert q.palette.shape == (2, 4) and bool((q.palette[:, 3] == 1).all())
    assert q.image().shape == (4, 24, 24)
    rgba = _rgba()
    q1 = tp.quantize(rgba, 1, alpha="quantize")  # k=1 with transparency: 2 entries
    assert len(torch.unique(q1.indices)) == 2


@pytest.mark.parametrize("dither", ["ordered", "floyd-steinberg"])
def test_dither_picks_opaque_entries_for_opaque_pixels(dither):
    img = _rgba(2)
    q = tp.quantize(img, 6, alpha="quantize", dither=dither)
    alpha_of = q.palette[q.indices.long(), 3]
    assert bool((alpha_of[10:] == 1).all()) and bool((alpha_of[:5] == 0).all())


def test_rgba_palette_of_a_semi_transparent_image_in_report_shape():
    # every pixel semi-transparent: entries are all semi-transparent, none opaque
    img = _rgba()
    img[3] = 128
    q = tp.quantize(img, 4, alpha="quantize")
    assert bool(((q.palette[:, 3] > 0) & (q.palette[:, 3] < 1)).all())
    out = q.image()
    assert bool((out[3] > 0).all() & (out[3] < 255).all())
