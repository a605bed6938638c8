"""Dithering (torchpalette._dither): Floyd–Steinberg exact against a sequential reference,
batch == loop, hue mixing on a two-colour gradient, no noise on flat areas, dtypes, errors."""

from __future__ import annotations

import colorsys
import warnings

import kornia
import kornia.color as kc
import numpy as np
import pytest
import torch

import torchpalette as tp
from torchpalette import _policy
from torchpalette._dither import dither_labels, fs_cpu, ordered_cpu
from torchpalette._dither.fs import floyd_steinberg
from torchpalette._dither.labels import error_bound
from torchpalette._dither.space import Features, palette_coords

METHODS = ["floyd-steinberg", "ordered"]
SPACES = ["lab", "oklab", "srgb"]


def _space(c: torch.Tensor, space: str) -> torch.Tensor:
    """sRGB ``[N, 3]`` -> ``space`` with the package's public conversions."""
    return {"lab": tp.srgb_to_lab, "oklab": tp.srgb_to_oklab, "srgb": lambda x: x}[space](c)


def _lin(c: torch.Tensor) -> torch.Tensor:
    return kc.rgb_to_linear_rgb(c.T.unsqueeze(-1)).squeeze(-1).T


def edge_reference(rgb: torch.Tensor, visible: torch.Tensor | None) -> torch.Tensor:
    """The edge factor of every pixel of float ``rgb [3, H, W]``, one pixel at a time: luma
    range (0..100) over the visible pixels of its 3x3 neighbourhood, 1 up to 4, 0.2 from 16,
    linear between."""
    _, h, w = rgb.shape
    luma = (rgb[0] * 0.2126 + rgb[1] * 0.7152 + rgb[2] * 0.0722) * 100.0
    vis = torch.ones(h, w, dtype=torch.bool) if visible is None else visible
    out = torch.ones(h, w, dtype=rgb.dtype)
    for y in range(h):
        for x in range(w):
            near = [luma[j, i] for j in range(max(0, y - 1), min(h, y + 2))
                    for i in range(max(0, x - 1), min(w, x + 2)) if vis[j, i]]
            if near:
                rng = max(near) - min(near)
                out[y, x] = (1.0 - (rng - 4.0) / 12.0).clamp(0.2, 1.0)
    return out


def fs_reference(rgb: torch.Tensor, pal: torch.Tensor, space: str, strength: float = 1.0,
                 visible: torch.Tensor | None = None) -> torch.Tensor:
    """Plain sequential Floyd–Steinberg, one pixel at a time in raster order: errors in
    linear light, values clamped to [0, 1], the received error bounded to the palette's
    spacing, nearest colour in ``space``; each pixel passes on ``strength`` times its edge
    factor of its error, invisible pixels none. ``rgb [3, H, W]``, ``pal [K, 3]``, ``visible
    [H, W]`` -> ``[H, W]``."""
    _, h, w = rgb.shape
    edge = edge_reference(rgb, visible)
    src = kc.rgb_to_linear_rgb(rgb)
    buf = src.clone()
    q, ps = _lin(pal), _space(pal, space)
    rmax = float(error_bound(pal[None])[0])
    out = torch.empty(h, w, dtype=torch.int64)
    for y in range(h):
        for x in range(w):
            v = buf[:, y, x].clamp(0, 1)
            r = v - src[:, y, x]
            if float(r.norm()) > rmax:
                v = src[:, y, x] + r * (rmax / r.norm())
            srgb = kc.linear_rgb_to_rgb(v.view(3, 1, 1)).view(1, 3).clamp(0, 1)
            k = int((_space(srgb, space) - ps).square().sum(-1).argmin())
            out[y, x] = k
            if visible is not None and not visible[y, x]:
                continue
            e = (v - q[k]) * (edge[y, x] * strength)
            if y + 1 < h:
                if x > 0:
                    buf[:, y + 1, x - 1] += e * (3 / 16)
                buf[:, y + 1, x] += e * (5 / 16)
                if x + 1 < w:
                    buf[:, y + 1, x + 1] += e * (1 / 16)
            if x + 1 < w:
                buf[:, y, x + 1] += e * (7 / 16)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("space", SPACES)
def test_fs_equals_sequential_reference(space, dtype):
    """The default path (the compiled CPU loop where numba is installed) and the wavefront
    path both give the plain sequential algorithm's labels."""
    g = torch.Generator().manual_seed(1)
    for h, w, k, strength in [(6, 9, 5, 1.0), (11, 4, 3, 0.5), (1, 7, 4, 1.0), (5, 1, 2, 0.8),
                              (9, 8, 2, 1.0)]:
        rgb = torch.rand(2, 3, h, w, generator=g, dtype=dtype)
        pal = torch.rand(2, k, 3, generator=g, dtype=dtype)
        vis = torch.rand(2, h, w, generator=g) > 0.2
        got = dither_labels(rgb, pal, "floyd-steinberg", space, strength=strength, visible=vis)
        wave = floyd_steinberg(rgb, pal, space, strength, error_bound(pal), vis)
        assert torch.equal(got, wave)
        for b in range(2):
            ref = fs_reference(rgb[b], pal[b], space, strength, vis[b])
            assert torch.equal(got[b], ref), (h, w, k, b)


@pytest.mark.skipif(not fs_cpu.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_compiled_cpu_loop_equals_wavefront_by_bands(monkeypatch, dtype):
    """The compiled loop and the wavefront agree label for label on photo-like data, whole or
    streamed by bands of rows (bands carry the error of their last row exactly)."""
    from tests.conftest import SAMPLE

    photo = tp.read_image(SAMPLE)[:3, ::6, ::6][None].expand(2, -1, -1, -1).flip(-1)
    img = photo if dtype == torch.uint8 else photo.to(dtype) / 255
    pal = tp.palette(photo[:1], 12).colors.to(torch.float64 if dtype == torch.float64
                                               else torch.float32).expand(2, -1, -1).contiguous()
    vis = torch.ones(2, *photo.shape[-2:], dtype=torch.bool)
    vis[1, :, ::7] = False
    rmax = error_bound(pal)
    whole = fs_cpu.floyd_steinberg_cpu(img, pal, "lab", 1.0, rmax, vis)
    assert torch.equal(whole, floyd_steinberg(img, pal, "lab", 1.0, rmax, vis))
    monkeypatch.setattr(_policy, "DITHER_BAND", 7 * photo.shape[-1])  # bands of ~7 rows
    assert torch.equal(whole, fs_cpu.floyd_steinberg_cpu(img, pal, "lab", 1.0, rmax, vis))
    assert torch.equal(whole, floyd_steinberg(img, pal, "lab", 1.0, rmax, vis))


@pytest.mark.skipif(not fs_cpu.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_compiled_cpu_lanes_equal_wavefront(monkeypatch, dtype):
    """On one thread the compiled loop runs two images per call (lanes taking turns pixel by
    pixel) and an odd one alone; each image keeps the wavefront's labels, whole or by bands."""
    from tests.conftest import SAMPLE

    photo = tp.read_image(SAMPLE)[:3, ::8, ::8]
    photo = torch.stack([photo, photo.flip(-1).roll(9, 1), photo.flip(-2)])
    img = photo if dtype == torch.uint8 else photo.to(dtype) / 255
    pal = torch.stack([tp.palette(photo[i], 9).colors for i in range(3)]).float()
    vis = torch.rand(3, *photo.shape[-2:], generator=torch.Generator().manual_seed(3)) > 0.1
    rmax = error_bound(pal)
    want = floyd_steinberg(img, pal, "lab", 1.0, rmax, vis)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert torch.equal(fs_cpu.floyd_steinberg_cpu(img, pal, "lab", 1.0, rmax, vis), want)
        monkeypatch.setattr(_policy, "DITHER_BAND", 5 * photo.shape[-1])  # bands of ~5 rows
        assert torch.equal(fs_cpu.floyd_steinberg_cpu(img, pal, "lab", 1.0, rmax, vis), want)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not ordered_cpu.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("space", SPACES)
def test_compiled_ordered_plans_equal_tensor_path(monkeypatch, space, dtype):
    g = torch.Generator().manual_seed(6)
    rgb = torch.rand(2, 3, 19, 23, generator=g, dtype=dtype)
    pal = torch.rand(2, 7, 3, generator=g, dtype=dtype)
    vis = torch.rand(2, 19, 23, generator=g) > 0.1
    compiled = dither_labels(rgb, pal, "ordered", space, strength=0.8, visible=vis)
    monkeypatch.setattr(ordered_cpu, "available", lambda: False)
    assert torch.equal(compiled, dither_labels(rgb, pal, "ordered", space, strength=0.8,
                                               visible=vis))


@pytest.mark.skipif(not ordered_cpu.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_compiled_ordered_equals_tensor_path_by_bands(monkeypatch, dtype):
    """The compiled bins (sparse, in order of appearance), plans and labels give the tensor
    path's labels on photo-like data, whole or by bands of rows (whose partial sums add up in
    the tensor path's order), with invisible pixels (their bins may hold no visible pixel),
    edges (bins whose pixels all take the first candidate: their plans are cut short) and a
    smooth ramp (whole plans)."""
    from tests.conftest import SAMPLE

    photo = tp.read_image(SAMPLE)[:3, ::5, ::5][None].expand(2, -1, -1, -1).flip(-1).clone()
    photo[..., 40:60, 30:70] = torch.linspace(90, 160, 40).round().to(torch.uint8)  # smooth
    img = photo if dtype == torch.uint8 else photo.to(dtype) / 255
    pal = tp.palette(photo[:1], 12).colors.to(torch.float64 if dtype == torch.float64
                                               else torch.float32).expand(2, -1, -1).contiguous()
    vis = torch.ones(2, *photo.shape[-2:], dtype=torch.bool)
    vis[1, :, ::3] = False
    vis[1, 5:9] = False
    for band in (None, 7 * photo.shape[-1] * 2):  # whole, then bands of 7 rows
        if band is not None:
            monkeypatch.setattr(_policy, "DITHER_BAND", band)
        compiled = dither_labels(img, pal, "ordered", "lab", visible=vis)
        with monkeypatch.context() as mp:
            mp.setattr(ordered_cpu, "available", lambda: False)
            assert torch.equal(compiled, dither_labels(img, pal, "ordered", "lab", visible=vis))


@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_loop(method):
    g = torch.Generator().manual_seed(2)
    rgb = torch.rand(3, 3, 13, 17, generator=g)
    pal = torch.rand(3, 6, 3, generator=g)
    got = dither_labels(rgb, pal, method, "lab")
    for b in range(3):
        assert torch.equal(got[b : b + 1], dither_labels(rgb[b : b + 1], pal[b : b + 1], method,
                                                         "lab"))


def _hue_gradient(w: int = 256, h: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """The issue's gradient (217, 61, 54) -> (0, 138, 169), 8-bit steps, and its two ends."""
    c0 = torch.tensor([217.0, 61.0, 54.0]) / 255
    c1 = torch.tensor([0.0, 138.0, 169.0]) / 255
    x = torch.linspace(0, 1, w)
    row = ((c0[:, None] * (1 - x) + c1[:, None] * x) * 255).round() / 255  # [3, W]
    return row[:, None, :].expand(3, h, w)[None].contiguous(), torch.stack([c0, c1])[None]


def _ideal_share(row: torch.Tensor, pal: torch.Tensor) -> torch.Tensor:
    """Per column, the share f of colour 1 whose mix in linear light ``(1 - f) c0 + f c1``
    (what the eye sees from afar) is closest in CIEDE2000 to the column's colour."""
    f = torch.linspace(0, 1, 501, dtype=torch.float64)
    q = _lin(pal.double())
    mix = kc.linear_rgb_to_rgb((q[0][:, None] * (1 - f) + q[1][:, None] * f)[..., None])
    de = tp.delta_e(row.double().T[:, None], mix[..., 0].T[None].clamp(0, 1), fast=False)
    return f[de.argmin(1)].float()


@pytest.mark.parametrize("method", METHODS)
def test_two_colour_hue_gradient_mixes(method):
    img, pal = _hue_gradient()
    share = dither_labels(img, pal, method, "lab")[0].float().mean(0)  # [W] share of colour 1
    blocks = share.view(-1, 16).mean(1)  # 16 blocks of 16 columns
    ideal = _ideal_share(img[0, :, 0], pal[0]).view(-1, 16).mean(1)
    ramp = torch.linspace(0, 1, 256).view(-1, 16).mean(1)
    # both colours everywhere inside, in proportions that rise across the ramp
    assert blocks[0] < 0.1 and blocks[-1] > 0.85
    assert bool((blocks[1:-1] > 0.05).all() and (blocks[1:-1] < 0.97).all())
    assert bool((blocks.diff() > -0.05).all())
    # Linear-light mixing: the perceptual ideal is not x / (W - 1) (the sRGB mid-colours lie
    # far from the line between the two ends in linear light); undithered: RMS 0.29 vs both.
    assert float((blocks - ideal).square().mean().sqrt()) < 0.2
    assert float((blocks - ramp).square().mean().sqrt()) < 0.25


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("space", SPACES)
def test_flat_palette_colour_gets_no_noise(method, space, dtype):
    pal = torch.tensor([[[0.1, 0.2, 0.3], [0.8, 0.3, 0.2], [0.35, 0.5, 0.6], [0.9, 0.9, 0.9]]],
                       dtype=dtype)
    for j in range(4):
        img = pal[0, j].view(1, 3, 1, 1).expand(1, 3, 12, 20).contiguous()
        assert bool((dither_labels(img, pal, method, space) == j).all())


@pytest.mark.parametrize("method", METHODS)
def test_dtypes_and_mixed_precision(method):
    g = torch.Generator().manual_seed(3)
    rgb = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    pal = torch.rand(2, 4, 3, generator=g, dtype=torch.float64)
    a = dither_labels(rgb, pal, method, "oklab")
    b = dither_labels(rgb, pal.float(), method, "oklab")  # promoted to float64
    assert a.dtype == torch.int64 and a.shape == (2, 8, 8) and torch.equal(a, b)
    c = dither_labels(rgb.float(), pal.float(), method, "oklab")
    assert float((a == c).float().mean()) > 0.9  # float32 may flip near-ties


def test_fs_spreads_error_like_a_mean():
    # 50 % grey between black and white: a checkerboard-like half-and-half mix in linear light
    grey = float(kc.linear_rgb_to_rgb(torch.full((3, 1, 1), 0.5))[0, 0, 0])
    img = torch.full((1, 3, 32, 32), grey)
    pal = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    for method in METHODS:
        share = dither_labels(img, pal, method, "lab").float().mean()
        assert abs(float(share) - 0.5) < 0.03, method


def test_features_match_package_conversions():
    g = torch.Generator().manual_seed(4)
    c = torch.rand(1, 50, 3, generator=g, dtype=torch.float64)
    for space in SPACES:
        torch.testing.assert_close(palette_coords(c, space)[0], _space(c[0], space))
        f = Features(space, c)
        torch.testing.assert_close(f.to_space(_lin(c[0])[None])[0], _space(c[0], space))


def test_errors():
    rgb, pal = torch.rand(1, 3, 4, 4), torch.rand(1, 2, 3)
    with pytest.raises(ValueError, match="method: expected one of"):
        dither_labels(rgb, pal, "atkinson", "lab")
    with pytest.raises(ValueError, match="space: expected one of"):
        dither_labels(rgb, pal, "ordered", "hsv")
    with pytest.raises(TypeError, match="rgb: expected dtype uint8, float32 or float64"):
        dither_labels((rgb * 255).to(torch.int32), pal, "ordered", "lab")
    with pytest.raises(ValueError, match=r"rgb: expected shape \[B, 3, H, W\]"):
        dither_labels(rgb[0], pal, "ordered", "lab")
    with pytest.raises(ValueError, match=r"palette: expected shape \[1, K, 3\] \(1 <= K"):
        dither_labels(rgb, pal.expand(2, -1, -1), "ordered", "lab")
    with pytest.raises(ValueError, match=r"strength: expected a number in \[0, 1\], got 1.5"):
        dither_labels(rgb, pal, "ordered", "lab", strength=1.5)
    with pytest.raises(ValueError, match=r"visible: expected a bool tensor of shape \[1, 4, 4\]"):
        dither_labels(rgb, pal, "ordered", "lab", visible=torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match=r"dither_strength: expected a number in \[0, 1\]"):
        tp.apply_palette(rgb, pal, dither="ordered", dither_strength=-0.1)


# ------------------------------------------------------------- the quality targets
def _dark_hue(h: int = 64, w: int = 192) -> torch.Tensor:
    """Saturated hue sweep (x) darkening towards black (y), ``[3, H, W]`` on the 8-bit grid."""
    hue = torch.linspace(0, 1, w)
    rgb = torch.tensor([colorsys.hsv_to_rgb(float(u), 1.0, 1.0) for u in hue]).T  # [3, W]
    img = rgb[:, None, :] * torch.linspace(1, 0.05, h)[None, :, None]
    return (img * 255).round() / 255


def _blur_metric(a: torch.Tensor, b: torch.Tensor, sigma: float) -> float:
    """Mean CIEDE2000 after a Gaussian blur in linear light (bench_dither.py's metric)."""
    ks = 2 * int(np.ceil(3 * sigma)) + 1

    def blur(x):
        lin = kc.rgb_to_linear_rgb(x[None].double())
        out = kornia.filters.gaussian_blur2d(lin, (ks, ks), (sigma, sigma), border_type="reflect")
        return kc.linear_rgb_to_rgb(out.clamp(0, 1)).clamp(0, 1)[0].movedim(0, -1)

    return float(tp.delta_e(blur(a), blur(b)).mean())


def _hue_off_share(src: torch.Tensor, out: torch.Tensor) -> float:
    """Share of pixels where a chromatic source (Lab chroma > 10) became a chromatic colour
    more than 60 degrees of hue away."""
    a, b = tp.srgb_to_lab(src.movedim(0, -1)), tp.srgb_to_lab(out.movedim(0, -1))
    ca, cb = a[..., 1:].norm(dim=-1), b[..., 1:].norm(dim=-1)
    ha, hb = torch.atan2(a[..., 2], a[..., 1]), torch.atan2(b[..., 2], b[..., 1])
    dh = torch.rad2deg((ha - hb).abs())
    dh = torch.minimum(dh, 360 - dh)
    return float(((ca > 10) & (cb > 10) & (dh > 60)).float().mean())


@pytest.mark.parametrize("method", METHODS)
def test_darkening_hue_gradient_no_far_off_hues(method):
    # Measured at k=16 (benchmarks/RESULTS.md): no dither 0.97 % far-off hues, the unbounded
    # Floyd–Steinberg 2.81 %, pngquant 4.26 %; bounded FS 2.38 %, ordered 2.60 %.
    img = _dark_hue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pal = tp.palette(img, 16).colors
    plain = tp.apply_palette(img, pal)
    out = tp.apply_palette(img, pal, dither=method)
    assert _hue_off_share(img, out) < 0.03
    for sigma in (1, 2):
        assert _blur_metric(img, out, sigma) < 0.8 * _blur_metric(img, plain, sigma)


def test_ordered_two_colour_ramp_has_16_levels():
    """Black to white with a black-and-white palette: every column's share of white is within
    1/16 of the linear-light ideal (the 8x8 Bayer map gave a column only quarters)."""
    ramp = torch.linspace(0, 1, 256).expand(1, 3, 64, 256).contiguous()
    pal = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    share = dither_labels(ramp, pal, "ordered", "lab")[0].float().mean(0)  # [W]
    ideal = kc.rgb_to_linear_rgb(ramp)[0, 0, 0]
    assert float((share - ideal).abs().max()) <= 1 / 16
    assert len(share.unique()) == 17
    rows = dither_labels(ramp.transpose(-1, -2), pal, "ordered", "lab")[0].float().mean(1)
    assert float((rows - ideal).abs().max()) <= 1 / 16  # rows as well as columns


@pytest.mark.parametrize("method", METHODS)
def test_strength_zero_is_no_dither_and_one_is_full(method):
    g = torch.Generator().manual_seed(8)
    img = torch.randint(0, 256, (2, 3, 17, 23), generator=g, dtype=torch.uint8)
    img[1] = (_dark_hue(17, 23) * 255).round().to(torch.uint8)  # a smooth image
    pal = torch.rand(6, 3, generator=g)
    plain = tp.palette_indices(img, pal)
    assert torch.equal(tp.palette_indices(img, pal, dither=method, dither_strength=0), plain)
    full = tp.palette_indices(img, pal, dither=method)
    assert torch.equal(tp.palette_indices(img, pal, dither=method, dither_strength=1.0), full)
    half = tp.palette_indices(img, pal, dither=method, dither_strength=0.5)
    assert not torch.equal(half, full) and not torch.equal(half, plain)
    assert torch.equal(tp.reduce_colors(img, 5, dither=method, dither_strength=0.0),
                       tp.reduce_colors(img, 5))
    assert torch.equal(tp.quantize(img, palette=pal, dither=method, dither_strength=0).indices,
                       plain.to(torch.uint8))
    # the core at strength 0 is the nearest colour too
    assert torch.equal(dither_labels(img, pal.expand(2, -1, -1), method, "lab", strength=0.0),
                       plain)


@pytest.mark.parametrize("method", METHODS)
def test_garbage_under_alpha_zero_never_shows(method):
    """RGBA: whatever RGB lies under alpha 0 changes no visible pixel's index."""
    g = torch.Generator().manual_seed(9)
    img = torch.randint(0, 256, (4, 24, 32), generator=g, dtype=torch.uint8)
    img[3] = 255
    img[3, 5:12, 4:20] = 0
    img[3, ::5, 3::7] = 0
    other = img.clone()
    other[:3, img[3] == 0] = torch.randint(0, 256, (3, int((img[3] == 0).sum())), generator=g,
                                           dtype=torch.uint8)
    pal = torch.rand(8, 3, generator=g)
    a = tp.palette_indices(img, pal, dither=method)
    b = tp.palette_indices(other, pal, dither=method)
    seen = img[3] > 0
    assert not torch.equal(img, other)
    assert torch.equal(a[seen], b[seen])


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_equals_cpu(method):
    g = torch.Generator().manual_seed(5)
    rgb = torch.rand(4, 3, 33, 47, generator=g, dtype=torch.float64)
    pal = torch.rand(4, 8, 3, generator=g, dtype=torch.float64)
    cpu = dither_labels(rgb, pal, method, "lab")
    gpu = dither_labels(rgb.cuda(), pal.cuda(), method, "lab")
    assert gpu.device.type == "cuda" and torch.equal(cpu, gpu.cpu())


def test_edge_factor_full_on_smooth_low_on_edges_and_ignores_hidden_pixels():
    from torchpalette._dither.strength import EDGE_FLOOR, edge_factor

    img = torch.zeros(1, 3, 6, 8, dtype=torch.uint8)
    img[..., 4:] = 255  # a hard vertical edge between columns 3 and 4
    f = edge_factor(img, 0, 6, torch.float32)
    assert torch.equal(f[0, :, :3], torch.ones(6, 3)) and torch.equal(f[0, :, 5:],
                                                                         torch.ones(6, 3))
    assert bool((f[0, :, 3:5] == EDGE_FLOOR).all())
    ramp = torch.linspace(0, 1, 64).expand(1, 3, 4, 64)  # 1.6 luma units per pixel: smooth
    assert bool((edge_factor(ramp, 0, 4, torch.float64) == 1).all())
    vis = torch.ones(1, 6, 8, dtype=torch.bool)
    vis[..., 4:] = False  # the bright side hidden: no edge left for the visible pixels
    assert bool((edge_factor(img, 0, 6, torch.float32, vis)[0, :, :4] == 1).all())
    g = torch.Generator().manual_seed(3)
    noisy = torch.randint(0, 256, (2, 3, 13, 9), generator=g, dtype=torch.uint8)
    whole = edge_factor(noisy, 0, 13, torch.float32)
    bands = torch.cat([edge_factor(noisy, y, min(13, y + 4), torch.float32)
                       for y in range(0, 13, 4)], 1)
    assert torch.equal(whole, bands)  # bands read their neighbour rows


@pytest.mark.parametrize("method", METHODS)
def test_less_dithering_on_edges_fewer_far_off_pixels(method, monkeypatch):
    """On a photo at k = 4 the edge factor cuts the pixels more than 20 CIEDE2000 from their
    source (sample photo: FS 11.8 % -> 8.7 %, ordered 12.1 % -> 8.3 %, no dither 6.2 %) and
    still dithers (blur metric below no dither)."""
    from tests.conftest import SAMPLE
    from torchpalette._dither import strength

    img = tp.read_image(SAMPLE)[:3, ::2, ::2]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pal = tp.palette(img, 4).colors

    def far_off(out):
        de = tp.delta_e(img.movedim(0, -1).float() / 255, out.movedim(0, -1).float() / 255)
        return float((de > 20).float().mean())

    out = tp.apply_palette(img, pal, dither=method)
    plain = tp.apply_palette(img, pal)
    monkeypatch.setattr(strength, "EDGE_LOW", 1e9)  # no edge factor: full strength everywhere
    monkeypatch.setattr(strength, "EDGE_HIGH", 2e9)
    everywhere = tp.apply_palette(img, pal, dither=method)
    assert far_off(out) < 0.8 * far_off(everywhere)
    src = img.float() / 255
    dithered, undithered = out.float() / 255, plain.float() / 255
    assert _blur_metric(src, dithered, 1) < 0.95 * _blur_metric(src, undithered, 1)


@pytest.mark.skipif(not fs_cpu.available(), reason="numba is not installed")
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_compiled_strength_equals_tensor_strength(dtype):
    """The compiled loops' per-pixel strength and edge factor are the tensor functions', bit
    for bit, band by band, with hidden pixels (the two Floyd–Steinberg paths rely on it)."""
    from torchpalette._dither.strength import edge_constants, edge_factor, pixel_strength

    g = torch.Generator().manual_seed(12)
    img = torch.randint(0, 256, (3, 23, 17), generator=g, dtype=torch.uint8)
    img[:, 5:12] = 200  # flat rows next to noise
    img = img if dtype == torch.uint8 else img.to(dtype) / 255
    work = torch.float32 if dtype == torch.uint8 else dtype
    vis = torch.rand(23, 17, generator=g) > 0.3
    for v in (None, vis):
        for y0, y1 in ((0, 23), (0, 7), (7, 15), (15, 23)):
            ce = edge_constants(img, work, 0.7).numpy()
            nv = np.zeros((0, 0), np.bool_) if v is None else v.numpy()
            vv = None if v is None else v[None]
            got = fs_cpu.strength_cpu(img.numpy(), nv, y0, y1, work, ce)
            assert torch.equal(torch.from_numpy(got),
                               pixel_strength(img[None], y0, y1, work, 0.7, vv)[0])
            got = fs_cpu.strength_cpu(img.numpy(), nv, y0, y1, work, ce, factor_only=True)
            assert torch.equal(torch.from_numpy(got), edge_factor(img[None], y0, y1, work, vv)[0])
