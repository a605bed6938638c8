"""apply_palette / palette_indices / reduce_colors: nearest colour, dtype, alpha, chunks, dither."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import torchpalette as tp
from torchpalette import _nearest, _policy, _spaces
from torchpalette.quantize import palette_indices

BATCHES = [(), (2,), (2, 3)]
DTYPES = [torch.uint8, torch.float32, torch.float64]
PAL = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.9, 0.1, 0.1], [0.1, 0.5, 0.9],
                    [0.5, 0.5, 0.2]])


def rand_image(batch, dtype, device, h=9, w=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (*batch, 3, h, w), generator=g, dtype=torch.uint8)
    img = img if dtype == torch.uint8 else img.to(dtype) / 255
    return img.to(device)


def brute_force(img: torch.Tensor, pal: torch.Tensor) -> torch.Tensor:
    x = img.double() / 255 if img.dtype == torch.uint8 else img.double()
    lab = tp.srgb_to_lab(x.movedim(-3, -1))  # [..., H, W, 3]
    pl = tp.srgb_to_lab(pal.double())
    return (lab.unsqueeze(-2) - pl).square().sum(-1).argmin(-1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_apply_palette_nearest_in_lab(device, dtype, batch):
    img = rand_image(batch, dtype, device)
    out = tp.apply_palette(img, PAL.to(device))
    assert out.shape == img.shape and out.dtype == dtype and out.device.type == device.type
    idx = palette_indices(img, PAL.to(device))
    assert idx.shape == (*batch, 9, 11) and idx.dtype == torch.int64
    ref = brute_force(img.cpu(), PAL)
    assert float((idx.cpu() == ref).double().mean()) > 0.995  # float32 ties only
    expect = PAL[idx.cpu()].movedim(-1, -3)
    if dtype == torch.uint8:
        assert torch.equal(out.cpu(), (expect.double() * 255).round().to(torch.uint8))
    else:
        torch.testing.assert_close(out.cpu(), expect.to(dtype))


@pytest.mark.parametrize("space", ["oklab", "srgb"])
def test_other_spaces(space):
    img = rand_image((2,), torch.float64, "cpu")
    idx = palette_indices(img, PAL.double(), space=space)
    x = img.movedim(-3, -1)
    conv = {"oklab": tp.srgb_to_oklab, "srgb": lambda c: c}[space]
    ref = (conv(x).unsqueeze(-2) - conv(PAL.double())).square().sum(-1).argmin(-1)
    assert torch.equal(idx, ref)


def test_per_image_palette_broadcast():
    img = rand_image((2, 3), torch.uint8, "cpu")
    pals = torch.stack([PAL, PAL.flip(0)])[:, None]  # [2, 1, K, 3] -> broadcast over dim 1
    idx = palette_indices(img, pals)
    assert torch.equal(idx[0], palette_indices(img[0], PAL))
    assert torch.equal(idx[1], palette_indices(img[1], PAL.flip(0)))


def test_alpha_passes_through():
    img = rand_image((2,), torch.uint8, "cpu")
    alpha = torch.randint(0, 256, (2, 1, 9, 11), dtype=torch.uint8)
    out = tp.apply_palette(torch.cat([img, alpha], 1), PAL)
    assert torch.equal(out[:, 3:], alpha)
    assert torch.equal(out[:, :3], tp.apply_palette(img, PAL))


def test_chunking_gives_the_same_result(monkeypatch):
    img = rand_image((2,), torch.float32, "cpu", h=31, w=29)
    full = tp.apply_palette(img, PAL)
    monkeypatch.setattr(_policy, "NEAREST_CHUNK", 7 * 2 * PAL.shape[0])  # 7-pixel chunks
    assert torch.equal(tp.apply_palette(img, PAL), full)
    assert torch.equal(tp.apply_palette(img, PAL, dither="ordered"),
                       tp.apply_palette(img, PAL, dither="ordered"))


def test_ordered_dither_keeps_palette_and_mean():
    ramp = torch.linspace(0, 1, 64).expand(3, 16, 64).contiguous()
    bw = PAL[:2]
    plain = tp.apply_palette(ramp, bw, space="srgb")
    dith = tp.apply_palette(ramp, bw, space="srgb", dither="ordered")
    assert set(dith.flatten(1).T.unique(dim=0).flatten().tolist()) <= {0.0, 1.0}
    assert not torch.equal(plain, dith)
    # dithering follows the ramp's local mean much better than a hard threshold; the eye (and
    # the dither) averages light, so the means are compared in linear light
    from kornia.color import rgb_to_linear_rgb

    pool = lambda x: torch.nn.functional.avg_pool2d(rgb_to_linear_rgb(x)[None], 8)  # one tile
    err_plain = (pool(plain) - pool(ramp)).abs().mean()
    err_dith = (pool(dith) - pool(ramp)).abs().mean()
    assert err_dith < err_plain * 0.5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", [(), (2,)])
def test_reduce_colors_uses_at_most_k_palette_colours(device, dtype, batch):
    from tests.conftest import SAMPLE

    photo = tp.read_image(SAMPLE)[:, ::8, ::8]
    img = photo.expand(*batch, *photo.shape) if batch else photo
    img = (img if dtype == torch.uint8 else img.to(dtype) / 255).to(device)
    out = tp.reduce_colors(img, 6, seed=2)
    assert out.shape == img.shape and out.dtype == dtype
    pal = tp.palette(img, 6, seed=2).colors
    for i in np.ndindex(*batch):
        distinct = out[i].flatten(1).T.unique(dim=0)
        assert len(distinct) <= 6
        allowed = (pal[i].double() * 255).round().to(torch.uint8) if dtype == torch.uint8 else pal[i].to(dtype)
        assert bool((distinct[:, None] == allowed[None]).all(-1).any(-1).all())


def test_reduce_colors_dithered_and_alpha():
    img = torch.rand(4, 12, 12, generator=torch.Generator().manual_seed(1))
    img[3] = (img[3] > 0.3).float()
    out = tp.reduce_colors(img, 3, dither="ordered")
    assert torch.equal(out[3], img[3])
    assert len(out[:3].flatten(1).T.unique(dim=0)) <= 3


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda im: tp.apply_palette(im, PAL[:, :2]), ValueError, r"palette: expected shape \[..., K, 3\|4\]"),
        (lambda im: tp.apply_palette(im, PAL * 2), ValueError, r"palette: expected values in \[0, 1\]"),
        (lambda im: tp.apply_palette(im, (PAL * 255).to(torch.uint8)), TypeError, "palette: expected a floating"),
        (lambda im: tp.apply_palette(im, PAL.expand(3, 5, 3)), ValueError, "batch dims"),
        (lambda im: tp.apply_palette(im, PAL, space="xyz"), ValueError, "space: expected one of"),
        (lambda im: tp.apply_palette(im, PAL, dither="floyd"), ValueError, "dither: expected one of"),
        (lambda im: tp.apply_palette(im[:, :1], PAL), ValueError, "grey"),
        (lambda im: tp.apply_palette(im.float() * 2, PAL), ValueError, r"image: expected values in"),
        (lambda im: palette_indices(im, PAL.tolist()), TypeError, "palette: expected a torch.Tensor"),
        (lambda im: tp.reduce_colors(im, 0), ValueError, "k: expected an int in"),
        (lambda im: tp.reduce_colors(im, 4, dither="random"), ValueError, "dither"),
        (lambda im: tp.reduce_colors(im, 4, assign="lut"), ValueError, "assign: expected one of"),
        (lambda im: tp.reduce_colors(im, 4, assign="bins", dither="ordered"), ValueError,
         "assign: expected 'exact' or 'auto'"),
        (lambda im: tp.reduce_colors(im, 4, assign="bins", method="exact"), ValueError,
         "method='exact'"),
    ],
)
def test_bad_input(call, err, match):
    img = rand_image((2,), torch.uint8, "cpu")
    with pytest.raises(err, match=match):
        call(img)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cuda_matches_cpu(dtype):
    from tests.conftest import SAMPLE

    # a photo (well-separated clusters; k-means on noise may settle elsewhere from a last-bit
    # difference): the GPU result equals the CPU one up to float rounding of the palette
    photo = tp.read_image(SAMPLE)[:, ::8, ::8]
    img = torch.stack([photo, photo.roll(9, -1)])
    img = img if dtype == torch.uint8 else img.float() / 255
    scale = 1.0 if dtype == torch.uint8 else 255.0
    for assign in ("exact", "bins"):
        a = tp.reduce_colors(img, 8, assign=assign).double() * scale
        b = tp.reduce_colors(img.cuda(), 8, assign=assign).cpu().double() * scale
        diff = (a - b).abs().amax(-3)
        assert float(diff.mean()) < 0.5 and float((diff > 2).float().mean()) < 0.02
    # on CUDA "auto" is the look-up table
    torch.testing.assert_close(tp.reduce_colors(img.cuda(), 8).cpu().double() * scale, b,
                               atol=0, rtol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_reduce_colors_bins_lookup(device, dtype, batch):
    from tests.conftest import SAMPLE

    photo = tp.read_image(SAMPLE)[:, ::16, ::16]  # 32x32
    n = int(np.prod(batch)) if batch else 1
    img = torch.stack([photo.roll(7 * i, -1) for i in range(n)]).reshape(*batch, *photo.shape)
    img = (img if dtype == torch.uint8 else img.to(dtype) / 255).to(device)
    out = tp.reduce_colors(img, 5, assign="bins", seed=1)
    assert out.shape == img.shape and out.dtype == dtype and out.device == img.device
    pal = tp.palette(img, 5, seed=1).colors
    allowed = tp._image.float_to_uint8(pal) if dtype == torch.uint8 else pal.to(dtype)
    for i in np.ndindex(*batch):
        distinct = out[i].flatten(1).T.unique(dim=0)
        assert bool((distinct[:, None] == allowed[i][None]).all(-1).any(-1).all())
        # batched == per image (up to float rounding of the batched k-means)
        one = tp.reduce_colors(img[i], 5, assign="bins", seed=1)
        # batched == per image: the same indices; colours up to the float rounding of the
        # batched k-means (exact once rounded to uint8 on the CPU)
        torch.testing.assert_close(out[i].double(), one.double(), rtol=0,
                                   atol=1e-3 if img.is_cuda else 0 if dtype == torch.uint8
                                   else 1e-6)
        assert torch.equal(tp.quantize(img, 5, assign="bins", seed=1).indices[i],
                           tp.quantize(img[i], 5, assign="bins", seed=1).indices)
    # the look-up table agrees with the exact nearest colour on most pixels
    exact = tp.reduce_colors(img, 5, assign="exact", seed=1)
    assert float((exact == out).all(-3).float().mean()) > 0.8
    assert torch.equal(tp.reduce_colors(img, 5, seed=1), exact if device.type == "cpu" else out)


def test_reduce_colors_bins_flat_colours_and_alpha():
    colours = torch.tensor([[255, 0, 0], [0, 128, 255], [20, 20, 20]], dtype=torch.uint8)
    px = torch.cat([c.expand(n, 3) for c, n in zip(colours, [50, 30, 20])])  # [100, 3]
    img = px.T.reshape(3, 10, 10)
    assert torch.equal(tp.reduce_colors(img, 3, assign="bins"), img)
    alpha = torch.full((1, 10, 10), 255, dtype=torch.uint8)
    alpha[:, 5:] = 0  # red stays opaque, the rest is transparent
    rgba = torch.cat([img, alpha])
    out = tp.reduce_colors(rgba, 1, assign="bins")
    assert torch.equal(out[3], alpha[0])
    assert bool((out[:3].flatten(1).T == colours[0]).all())  # transparent ones take colour 0


def test_reduce_colors_bins_quality(photo64):
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = rgb2lab(photo64.permute(1, 2, 0).numpy())

    def mean_de(assign):
        outs = [tp.reduce_colors(photo64, 8, assign=assign, seed=s) for s in range(3)]
        return np.mean([deltaE_ciede2000(lab, rgb2lab(o.permute(1, 2, 0).numpy())).mean()
                        for o in outs])

    assert mean_de("bins") <= mean_de("exact") + 0.25


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_reduce_colors_refined(device, dtype, batch):
    from tests.conftest import SAMPLE

    photo = tp.read_image(SAMPLE)[:, ::16, ::16]  # 32x32
    n = int(np.prod(batch)) if batch else 1
    img = torch.stack([photo.roll(7 * i, -1) for i in range(n)]).reshape(*batch, *photo.shape)
    img = (img if dtype == torch.uint8 else img.to(dtype) / 255).to(device)
    out = tp.reduce_colors(img, 6, assign="refined", seed=2)
    assert out.shape == img.shape and out.dtype == dtype and out.device == img.device
    exact = tp.reduce_colors(img, 6, assign="exact", seed=2)
    # same palette; the look-up table differs from the exact search on few pixels
    assert float((exact == out).all(-3).float().mean()) > 0.97
    pal = tp.palette(img, 6, seed=2).colors
    allowed = tp._image.float_to_uint8(pal) if dtype == torch.uint8 else pal.to(dtype)
    for i in np.ndindex(*batch):
        distinct = out[i].flatten(1).T.unique(dim=0)
        assert bool((distinct[:, None] == allowed[i][None]).all(-1).any(-1).all())
        one = tp.reduce_colors(img[i], 6, assign="refined", seed=2)
        # batched == per image (up to float rounding of the batched k-means)
        same = (one.double() - out[i].double()).abs().le(1.01 if dtype == torch.uint8 else 1e-4)
        assert float(same.all(-3).float().mean()) > 0.99


@pytest.mark.parametrize("space", ["lab", "oklab", "srgb"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_pruned_search_with_full_radius_is_exact(space, dtype):
    """alpha=1: a bin's nearest colour covers the whole bin (the bound is sound)."""
    from tests.conftest import SAMPLE

    img = tp.read_image(SAMPLE)[:, ::4, ::4].reshape(1, 3, -1)  # 128x128 photo pixels
    img = img if dtype == torch.uint8 else img.float() / 255
    for k in (2, 16):
        pal = tp.palette(img.reshape(1, 3, 128, 128), k, seed=0).colors
        ps = _spaces.to_space(pal, space)
        pa = torch.cat([ps * -2.0, (ps * ps).sum(-1, keepdim=True)], -1)
        want = _nearest.search(img, ps, pa, space, torch.float32)
        got = _nearest.search_near_boundaries(img, ps, pa, space, torch.float32, 1.0)
        assert torch.equal(got, want)


def test_reduce_colors_refined_quality_and_errors(photo64):
    from skimage.color import deltaE_ciede2000, rgb2lab

    lab = rgb2lab(photo64.permute(1, 2, 0).numpy())

    def mean_de(assign):
        outs = [tp.reduce_colors(photo64, 8, assign=assign, seed=s) for s in range(3)]
        return np.mean([deltaE_ciede2000(lab, rgb2lab(o.permute(1, 2, 0).numpy())).mean()
                        for o in outs])

    assert mean_de("refined") <= mean_de("exact") + 0.05
    with pytest.raises(ValueError, match="'refined' needs dither='none'"):
        tp.reduce_colors(photo64, 4, assign="refined", dither="ordered")


@pytest.fixture(scope="module")
def photo64() -> torch.Tensor:
    import torch.nn.functional as F
    from tests.conftest import SAMPLE

    img = tp.read_image(SAMPLE)
    return F.interpolate(img[None].float(), size=(64, 64), mode="area")[0].round().to(torch.uint8)


def test_uint8_output_and_indexed_png_agree_on_rounding_ties(tmp_path):
    # float32 colours whose 255x lies within one float32 ulp of an x.5 tie: rounding the
    # float32 product and the exact product disagree for some of them
    n = torch.arange(0, 255, dtype=torch.float64)
    base = ((n + 0.5) / 255).to(torch.float32)
    cands = torch.cat([base, base.nextafter(torch.tensor(0.0)), base.nextafter(torch.tensor(1.0))])
    f32 = (cands * 255).round()
    exact = (cands.double() * 255).round()
    assert bool((f32 != exact).any())  # the trap exists
    pal = cands[(f32 != exact)][:3].repeat_interleave(3).view(-1, 3)
    img = torch.stack([torch.full((3, 2), i * 100, dtype=torch.uint8) for i in range(len(pal))],
                      -1)  # [3, 2, K] one column per palette colour, roughly
    out = tp.apply_palette(img, pal)
    colours = set(map(tuple, out.flatten(1).T.tolist()))
    assert colours <= set(map(tuple, exact[(f32 != exact)][:3].repeat_interleave(3).view(-1, 3)
                              .to(torch.uint8).tolist()))
    tp.write_image(out, tmp_path / "tie.png", palette=pal)  # every pixel found in the palette
    assert torch.equal(tp.read_image(tmp_path / "tie.png"), out)


def test_thread_setting_is_restored_after_small_images():
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        img = rand_image((2,), torch.uint8, "cpu")
        for assign in ("exact", "bins"):
            tp.reduce_colors(img, 4, assign=assign)
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------ dithering through the API
@pytest.mark.parametrize("dither", ["ordered", "floyd-steinberg"])
def test_dithers_through_the_public_functions(dither):
    """uint8 and float give the same indices, alpha passes through, batch == loop, the output
    holds palette colours only, and a two-colour hue gradient mixes its two ends."""
    from torchpalette._dither import dither_labels

    g = torch.Generator().manual_seed(7)
    rgba = torch.randint(0, 256, (2, 4, 9, 13), generator=g, dtype=torch.uint8)
    pal = torch.rand(5, 3, generator=g)
    out = tp.apply_palette(rgba, pal, dither=dither)
    assert out.shape == rgba.shape and out.dtype == torch.uint8
    assert torch.equal(out[:, 3], rgba[:, 3])  # alpha untouched
    idx = tp.palette_indices(rgba, pal, dither=dither)
    want = dither_labels(rgba[:, :3].float() / 255, pal.expand(2, -1, -1), dither, "lab",
                         visible=rgba[:, 3] > 0)  # alpha-0 pixels influence no other
    assert torch.equal(idx, want)
    assert torch.equal(idx[1], tp.palette_indices(rgba[1], pal, dither=dither))  # batch == loop
    floats = tp.apply_palette(rgba.float() / 255, pal, dither=dither)
    assert torch.equal(tp.palette_indices(rgba.float() / 255, pal, dither=dither), idx)
    colours = torch.cat([pal, torch.ones(5, 1)], -1)[idx].movedim(-1, 1)
    torch.testing.assert_close(floats[:, :3], colours[:, :3])
    # a red -> teal gradient with a palette of its two ends: the share of the second colour
    # rises along the ramp (no dither would switch once, in the middle)
    a, b = torch.tensor([217, 61, 54]) / 255, torch.tensor([0, 138, 169]) / 255
    t = torch.linspace(0, 1, 128)
    ramp = (a[:, None] + (b - a)[:, None] * t).view(3, 1, 128).expand(3, 32, 128)
    share = tp.palette_indices(ramp, torch.stack([a, b]), dither=dither).float().mean(0)
    assert share[:16].mean() < 0.15 and share[-16:].mean() > 0.85
    assert 0.2 < share[48:80].mean() < 0.8  # the middle mixes both colours


def test_reduce_colors_with_floyd_steinberg_keeps_k_colours(photo64):
    out = tp.reduce_colors(photo64, 6, dither="floyd-steinberg")
    assert out.shape == photo64.shape and out.dtype == photo64.dtype
    assert len(out.flatten(1).unique(dim=1).T) <= 6
    with pytest.raises(ValueError, match="'refined' needs dither='none'"):
        tp.reduce_colors(photo64, 4, assign="refined", dither="floyd-steinberg")


def test_bins_assignment_keeps_the_coarse_table_on_photos():
    """assign='bins' (the CUDA default) maps a photo through its 5-bit bins' table with the
    adaptive default as with bits=5; the CPU default stays the exact search."""
    import torch.nn.functional as F

    from tests.conftest import SAMPLE

    img = F.interpolate(tp.read_image(SAMPLE)[None].float(), size=(256, 256), mode="area")
    img = img.round().to(torch.uint8)
    lut = tp.reduce_colors(img, 16, assign="bins")
    assert torch.equal(lut, tp.reduce_colors(img, 16, assign="bins", bits=5))
    exact = tp.reduce_colors(img, 16)
    assert torch.equal(exact, tp.apply_palette(img, tp.palette(img, 16)))
    assert not torch.equal(lut, exact)
