"""tp.quantize: the one primitive (indices + palette + weights) and its views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchpalette as tp
from torchpalette import _policy

DTYPES = [torch.uint8, torch.float32, torch.float64]
BATCHES = [(), (2,), (2, 3)]
SPACES = ["lab", "oklab", "srgb"]


def _photo_crops(n: int, size: int = 48) -> torch.Tensor:
    """``n`` crops of different real photos (scikit-image's bundled data), uint8
    ``[n, 3, size, size]``; every third one posterised to few colours, so a batch mixes images
    labelled through exact colours with photos labelled otherwise."""
    import skimage.data as data

    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry"]
    out = []
    for i in range(n):
        photo = torch.from_numpy(getattr(data, names[i % len(names)])().copy()).permute(2, 0, 1)
        y, x = 37 * i % (photo.shape[1] - 2 * size), 53 * i % (photo.shape[2] - 2 * size)
        crop = photo[:, y : y + 2 * size : 2, x : x + 2 * size : 2]
        out.append(crop // 64 * 64 if i % 3 == 2 else crop)
    return torch.stack(out).contiguous()


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    return _photo_crops(6)


@pytest.fixture(scope="module")
def large_crops() -> torch.Tensor:
    """128x128 crops: some photos with more than 1,024 occupied 5-bit bins (labelled through
    their coarse bins under "bins"), the others through their exact colours."""
    return _photo_crops(6, 128)


def _batch(crops: torch.Tensor, batch: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    n = int(np.prod(batch)) if batch else 1
    img = crops[:n].reshape(*batch, *crops.shape[1:])
    return img if dtype == torch.uint8 else img.to(dtype) / 255


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_decode_is_reduce_colors(crops, dtype, batch):
    img = _batch(crops, batch, dtype)
    q = tp.quantize(img, 6, seed=3)
    assert q.indices.shape == img.shape[:-3] + img.shape[-2:] and q.indices.dtype == torch.uint8
    assert q.palette.shape == (*batch, 6, 3) and q.weights.shape == (*batch, 6)
    out = q.image()
    assert out.dtype == dtype and out.shape == img.shape
    assert torch.equal(out, tp.reduce_colors(img, 6, seed=3))
    # the palette is tp.palette's, and the indices point into it
    pal = tp.palette(img, 6, seed=3)
    assert torch.equal(q.palette, pal.colors) and torch.equal(q.weights, pal.weights)
    assert int(q.indices.max()) < 6


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("dither", ["none", "ordered", "floyd-steinberg"])
def test_decode_every_space_and_dither(crops, space, dither):
    img = crops[:2]
    q = tp.quantize(img, 5, space=space, dither=dither)
    assert torch.equal(q.image(), tp.reduce_colors(img, 5, space=space, dither=dither))
    given = tp.quantize(img, palette=q.palette, space=space, dither=dither)
    assert torch.equal(given.image(), tp.apply_palette(img, q.palette, space=space,
                                                       dither=dither))
    assert torch.equal(given.indices.long(), tp.palette_indices(img, q.palette, space=space,
                                                                dither=dither))


@pytest.mark.parametrize("assign", ["auto", "exact", "bins", "refined"])
def test_decode_every_assign(crops, assign):
    img = crops[:3].float() / 255
    q = tp.quantize(img, 7, assign=assign, seed=1)
    assert torch.equal(q.image(), tp.reduce_colors(img, 7, assign=assign, seed=1))


@pytest.mark.parametrize("assign", ["auto", "exact", "bins", "refined"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_batch_equals_loop_on_differing_crops(large_crops, assign, dtype):
    """Crops of different photos (and posterised ones) in one batch: every image's indices
    equal its own run's, exactly (the look-up table used to follow the batch)."""
    img = _batch(large_crops, (6,), dtype)
    q = tp.quantize(img, 16, assign=assign, seed=0)
    for i in range(len(img)):
        one = tp.quantize(img[i], 16, assign=assign, seed=0)
        assert torch.equal(q.indices[i], one.indices), f"image {i}"
        # palettes: up to the float rounding of a batched matrix product
        torch.testing.assert_close(q.palette[i], one.palette, rtol=0, atol=1e-6)


def test_cuda_assign_default_on_cpu_equals_bins(large_crops, monkeypatch):
    """The CUDA choice of "auto" (tables of exact colours and coarse bins), run on CPU tensors:
    it is assign="bins", batch == loop, and close to the exact search."""
    img = large_crops
    monkeypatch.setattr(_policy, "auto_labels", lambda device: "bins")
    auto = tp.quantize(img, 16)
    for i in range(len(img)):
        assert torch.equal(auto.indices[i], tp.quantize(img[i], 16).indices)
    monkeypatch.undo()
    assert torch.equal(auto.indices, tp.quantize(img, 16, assign="bins").indices)
    exact = tp.quantize(img, 16, assign="exact")
    same = (auto.indices == exact.indices).float().mean()
    assert float(same) > 0.85
    de = tp.delta_e(auto.image().float() / 255, exact.image().float() / 255, dim=-3)
    assert float(de.mean()) < 1.0


def test_cpu_auto_labels_equal_the_exact_search(crops):
    # on the CPU "auto" looks exact colours up in a table: the exact search's labels, but for
    # float32 near-ties (the table converts each colour once, the search every pixel)
    img = crops
    auto, exact = tp.quantize(img, 12), tp.quantize(img, 12, assign="exact")
    differ = (auto.indices != exact.indices).nonzero().tolist()
    assert len(differ) <= 2e-4 * auto.indices.numel()
    for n, y, x in differ:
        lab = tp.srgb_to_lab(img[n, :, y, x].double() / 255)
        d = (tp.srgb_to_lab(auto.palette[n].double()) - lab).square().sum(-1)
        a, e = d[int(auto.indices[n, y, x])], d[int(exact.indices[n, y, x])]
        assert abs(float(a - e)) < 1e-3 * float(e)


@pytest.mark.parametrize("k, dtype", [(2, torch.uint8), (256, torch.uint8), (257, torch.int16),
                                      (4096, torch.int16), (40000, torch.int32)])
def test_index_dtype_follows_k(k, dtype):
    g = torch.Generator().manual_seed(0)
    pal = torch.rand(k, 3, generator=g)
    img = torch.randint(0, 256, (2, 3, 6, 7), dtype=torch.uint8, generator=g)
    q = tp.quantize(img, palette=pal)
    assert q.indices.dtype == dtype and q.indices.shape == (2, 6, 7)
    assert torch.equal(q.indices.long(), tp.palette_indices(img, pal))
    assert torch.equal(q.image(), tp.apply_palette(img, pal))
    assert q.palette.shape == (2, k, 3)
    torch.testing.assert_close(q.weights.sum(-1), torch.ones(2, dtype=q.weights.dtype))


def test_own_palette_of_512_colours_has_16_bit_indices():
    img = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8,
                        generator=torch.Generator().manual_seed(1))
    q = tp.quantize(img, 512)
    assert q.indices.dtype == torch.int16 and int(q.indices.max()) >= 256
    assert torch.equal(q.image(), tp.reduce_colors(img, 512))


def test_index_dtype_override_and_errors():
    img = torch.rand(3, 4, 4)
    pal = torch.rand(300, 3)
    assert tp.quantize(img, 4, index_dtype=torch.int64).indices.dtype == torch.int64
    with pytest.raises(ValueError, match="index_dtype: expected a dtype that holds 300"):
        tp.quantize(img, palette=pal, index_dtype=torch.uint8)
    with pytest.raises(TypeError, match="index_dtype: expected one of"):
        tp.quantize(img, 4, index_dtype=torch.float32)
    with pytest.raises(TypeError, match="got both colors"):
        tp.quantize(img, 4, palette=pal)
    with pytest.raises(TypeError, match="unexpected keyword 'seed' with a given palette"):
        tp.quantize(img, palette=pal, seed=1)
    with pytest.raises(ValueError, match="assign: .*'bins' needs an own palette"):
        tp.quantize(img, palette=pal, assign="bins")
    with pytest.raises(ValueError, match="assign: expected 'exact' or 'auto' with dither"):
        tp.quantize(img, 4, assign="bins", dither="ordered")
    with pytest.raises(ValueError, match="assign"):
        tp.quantize(img, 4, assign="fast")
    with pytest.raises(TypeError, match="alias k=5"):
        tp.quantize(img, 4, k=5)
    assert tp.quantize(img, k=3).palette.shape == (3, 3)


def test_alpha_passes_through_and_weighs_nothing():
    rgb = torch.zeros(3, 4, 4, dtype=torch.uint8)
    rgb[0, :, :2] = 255
    alpha = torch.full((1, 4, 4), 255, dtype=torch.uint8)
    alpha[:, :, 3] = 0  # a black column is invisible
    rgba = torch.cat([rgb, alpha])
    pal = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    q = tp.quantize(rgba, palette=pal)
    assert torch.equal(q.alpha, alpha)
    torch.testing.assert_close(q.weights, torch.tensor([8 / 12, 4 / 12]))
    assert torch.equal(q.image(), tp.apply_palette(rgba, pal))
    assert torch.equal(tp.quantize(rgba, 2).image(), tp.reduce_colors(rgba, 2))


def test_given_palette_keeps_gradient():
    img = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    pal = torch.rand(4, 3, generator=torch.Generator().manual_seed(1), requires_grad=True)
    q = tp.quantize(img, palette=pal)
    assert not q.indices.requires_grad
    q.image().sum().backward()
    counts = torch.bincount(q.indices.flatten().long(), minlength=4).float()
    torch.testing.assert_close(pal.grad, counts[:, None].expand(4, 3))


def test_one_validation_and_one_search(monkeypatch):
    """The primitive checks the image once and searches each pixel at most once."""
    from torchpalette import _assign
    from torchpalette import _validate as v

    calls = {"check": 0, "search": 0}
    check, search = v.check_image, _assign.search

    def counting_check(*a, **kw):
        calls["check"] += 1
        return check(*a, **kw)

    def counting_search(*a, **kw):
        calls["search"] += 1
        return search(*a, **kw)

    monkeypatch.setattr(v, "check_image", counting_check)
    monkeypatch.setattr(_assign, "search", counting_search)
    img = _photo_crops(2)
    tp.quantize(img, 8, assign="exact")
    assert calls == {"check": 1, "search": 1}
    calls.update(check=0, search=0)
    tp.quantize(img, palette=torch.rand(8, 3))
    assert calls == {"check": 1, "search": 1}
