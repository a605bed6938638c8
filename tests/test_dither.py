"""Dithering (torchpalette._dither): Floyd–Steinberg exact against a sequential reference,
batch == loop, hue mixing on a two-colour gradient, no noise on flat areas, dtypes, errors."""

from __future__ import annotations

import kornia.color as kc
import pytest
import torch

import torchpalette as tp
from torchpalette._dither import dither_labels
from torchpalette._dither.space import Features, palette_coords

METHODS = ["floyd-steinberg", "ordered"]
SPACES = ["lab", "oklab", "srgb"]


def _space(c: torch.Tensor, space: str) -> torch.Tensor:
    """sRGB ``[N, 3]`` -> ``space`` with the package's public conversions."""
    return {"lab": tp.srgb_to_lab, "oklab": tp.srgb_to_oklab, "srgb": lambda x: x}[space](c)


def _lin(c: torch.Tensor) -> torch.Tensor:
    return kc.rgb_to_linear_rgb(c.T.unsqueeze(-1)).squeeze(-1).T


def fs_reference(rgb: torch.Tensor, pal: torch.Tensor, space: str) -> torch.Tensor:
    """Plain sequential Floyd–Steinberg, one pixel at a time in raster order: errors in
    linear light, values clamped to [0, 1], nearest colour in ``space``. ``rgb [3, H, W]``,
    ``pal [K, 3]`` -> ``[H, W]``."""
    _, h, w = rgb.shape
    buf = kc.rgb_to_linear_rgb(rgb).clone()
    q, ps = _lin(pal), _space(pal, space)
    out = torch.empty(h, w, dtype=torch.int64)
    for y in range(h):
        for x in range(w):
            v = buf[:, y, x].clamp(0, 1)
            srgb = kc.linear_rgb_to_rgb(v.view(3, 1, 1)).view(1, 3).clamp(0, 1)
            k = int((_space(srgb, space) - ps).square().sum(-1).argmin())
            out[y, x] = k
            e = v - q[k]
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
    g = torch.Generator().manual_seed(1)
    for h, w, k in [(6, 9, 5), (11, 4, 3), (1, 7, 4), (5, 1, 2)]:
        rgb = torch.rand(2, 3, h, w, generator=g, dtype=dtype)
        pal = torch.rand(2, k, 3, generator=g, dtype=dtype)
        got = dither_labels(rgb, pal, "floyd-steinberg", space)
        for b in range(2):
            assert torch.equal(got[b], fs_reference(rgb[b], pal[b], space)), (h, w, k, b)


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
    with pytest.raises(TypeError, match="rgb: expected dtype float32 or float64"):
        dither_labels((rgb * 255).to(torch.uint8), pal, "ordered", "lab")
    with pytest.raises(ValueError, match=r"rgb: expected shape \[B, 3, H, W\]"):
        dither_labels(rgb[0], pal, "ordered", "lab")
    with pytest.raises(ValueError, match=r"palette: expected shape \[1, K, 3\] \(1 <= K"):
        dither_labels(rgb, pal.expand(2, -1, -1), "ordered", "lab")


@pytest.mark.cuda
@pytest.mark.parametrize("method", METHODS)
def test_cuda_equals_cpu(method):
    g = torch.Generator().manual_seed(5)
    rgb = torch.rand(4, 3, 33, 47, generator=g, dtype=torch.float64)
    pal = torch.rand(4, 8, 3, generator=g, dtype=torch.float64)
    cpu = dither_labels(rgb, pal, method, "lab")
    gpu = dither_labels(rgb.cuda(), pal.cuda(), method, "lab")
    assert gpu.device.type == "cuda" and torch.equal(cpu, gpu.cpu())
