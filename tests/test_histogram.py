"""Tests for torchpalette.histogram: histogram() and dominant_colors()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import torchpalette as tp

from torchpalette import _bins_triton, _policy
from torchpalette.histogram import _dominant

DTYPES = [torch.uint8, torch.float32, torch.float64]
BATCHES = [(), (2,), (2, 3)]


def random_image(batch, dtype, device, h=9, w=11, channels=3, seed=0, levels=256):
    g = torch.Generator().manual_seed(seed)
    u8 = torch.randint(0, levels, (*batch, channels, h, w), generator=g, dtype=torch.int64)
    u8 = (u8 * (255 // (levels - 1))).to(torch.uint8)
    return as_dtype(u8, dtype).to(device), u8


def as_dtype(u8: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return u8 if dtype == torch.uint8 else u8.to(dtype) / 255


# ---------------------------------------------------------------- NumPy references


def np_dominant(u8: np.ndarray, top_n: int, bins: int, opaque: np.ndarray | None = None):
    """Plain NumPy dominant colours of one ``[3, H, W]`` uint8 image (the reference)."""
    px = u8.reshape(3, -1).astype(np.int64)
    if opaque is not None:
        px = px[:, opaque.reshape(-1)]
    b = px * bins // 256
    idx = (b[0] * bins + b[1]) * bins + b[2]
    counts = np.bincount(idx, minlength=bins**3)
    sums = np.stack([np.bincount(idx, weights=px[c].astype(np.float64), minlength=bins**3)
                     for c in range(3)], -1)
    order = np.argsort(-counts, kind="stable")  # descending, ties: lower bin index first
    k = min(top_n, int((counts > 0).sum()))
    order = order[:k]
    colors = sums[order] / counts[order][:, None] / 255
    return colors, counts[order] / max(px.shape[1], 1)


# ---------------------------------------------------------------- histogram


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("bins", [256, 16, 7])
def test_histogram_matches_numpy(dtype, batch, bins, device):
    image, u8 = random_image(batch, dtype, device, seed=bins)
    counts = tp.histogram(image, bins=bins)
    assert counts.shape == (*batch, 4, bins)
    assert counts.dtype == torch.int64 and counts.device == image.device
    flat = u8.reshape(-1, 3, 9 * 11).numpy()
    got = counts.reshape(-1, 4, bins).cpu().numpy()
    for i in range(flat.shape[0]):
        for c in range(3):
            ref, _ = np.histogram(flat[i, c], bins=bins, range=(0, 256))
            np.testing.assert_array_equal(got[i, c], ref)
    assert (counts.sum(-1) == 9 * 11).all()


def test_histogram_luminance_matches_pillow(sample_path):
    pil = Image.open(sample_path).convert("RGB")
    u8 = torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1)
    counts = tp.histogram(u8)
    np.testing.assert_array_equal(counts[3].numpy(), np.asarray(pil.convert("L").histogram()))
    np.testing.assert_array_equal(counts[0].numpy(), np.asarray(pil.histogram()[:256]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_uint8_equals_float(dtype):
    image, u8 = random_image((2,), dtype, "cpu")
    assert torch.equal(tp.histogram(image, bins=32), tp.histogram(u8, bins=32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_alpha_zero_not_counted(dtype, device):
    image, u8 = random_image((2,), dtype, device, channels=4)
    alpha = torch.zeros(2, 9, 11, dtype=torch.bool)
    alpha[:, :4] = True  # only the first 4 rows are opaque
    a = alpha.to(device)
    image[:, 3] = torch.where(a, image[:, 3].clamp(min=1 if dtype == torch.uint8 else 0.5), 0)
    counts = tp.histogram(image, bins=16)
    ref = tp.histogram(image[:, :3, :4], bins=16)
    assert torch.equal(counts, ref)
    assert (counts.sum(-1) == 4 * 11).all()


def test_histogram_batched_equals_looped():
    image, _ = random_image((2, 3), torch.float32, "cpu")
    counts = tp.histogram(image, bins=64)
    for i in range(2):
        for j in range(3):
            assert torch.equal(counts[i, j], tp.histogram(image[i, j], bins=64))


# ---------------------------------------------------------------- dominant_colors


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_dominant_matches_numpy_reference(dtype, batch, device):
    # 6 levels per channel on a 9x11 image: many ties in count, few occupied bins
    image, u8 = random_image(batch, dtype, device, levels=6, seed=3)
    pal = tp.dominant_colors(image, top_n=20, bins=4)
    want_dtype = torch.float32 if dtype == torch.uint8 else dtype
    assert pal.colors.dtype == want_dtype and pal.weights.dtype == want_dtype
    assert pal.colors.device == image.device
    k = pal.colors.shape[-2]
    assert pal.colors.shape == (*batch, k, 3) and pal.weights.shape == (*batch, k)
    colors = pal.colors.reshape(-1, k, 3).cpu().double().numpy()
    weights = pal.weights.reshape(-1, k).cpu().double().numpy()
    for i, img in enumerate(u8.reshape(-1, 3, 9, 11).numpy()):
        rc, rw = np_dominant(img, 20, 4)
        n = len(rw)
        np.testing.assert_allclose(colors[i, :n], rc, atol=1e-6)
        np.testing.assert_allclose(weights[i, :n], rw, atol=1e-6)
        assert (weights[i, n:] == 0).all() and (colors[i, n:] == 0).all()


@pytest.mark.parametrize("bins", [2, 5, 8, 16, 32, 33])
def test_dominant_matches_numpy_on_photo(sample_path, bins):
    pil = Image.open(sample_path).convert("RGB").reduce(4)  # 128x128, keeps the test fast
    u8 = np.asarray(pil).transpose(2, 0, 1).copy()
    pal = tp.dominant_colors(torch.from_numpy(u8), top_n=32, bins=bins)
    rc, rw = np_dominant(u8, 32, bins)
    assert pal.colors.shape == (len(rw), 3)
    np.testing.assert_allclose(pal.colors.numpy(), rc, atol=1e-6)
    np.testing.assert_allclose(pal.weights.numpy(), rw, atol=1e-7)
    assert (np.diff(pal.weights.numpy()) <= 0).all()


def test_dominant_known_areas(device):
    # half red, a quarter teal, an eighth each of two greys that share a bin at bins=16
    image = torch.zeros(3, 8, 8, dtype=torch.uint8, device=device)
    image[:, :4] = torch.tensor([250, 10, 10], dtype=torch.uint8, device=device)[:, None, None]
    image[:, 4:6] = torch.tensor([0, 128, 128], dtype=torch.uint8, device=device)[:, None, None]
    image[:, 6] = 100
    image[:, 7] = 110
    pal = tp.dominant_colors(image, top_n=32, bins=16)
    want = torch.tensor([[250, 10, 10], [0, 128, 128], [105, 105, 105]], dtype=torch.float32)
    torch.testing.assert_close(pal.colors.cpu() * 255, want, atol=1e-4, rtol=0)
    torch.testing.assert_close(pal.weights.cpu(), torch.tensor([0.5, 0.25, 0.25]))
    assert float(pal.weights.sum()) == pytest.approx(1.0)


def test_dominant_tie_rule_lower_bin_first():
    image = torch.zeros(3, 1, 4, dtype=torch.uint8)
    image[:, 0, 0] = 255  # bin 4095
    image[0, 0, 1] = 255  # bin 3840 (red)
    image[2, 0, 2] = 255  # bin 15 (blue)
    pal = tp.dominant_colors(image, top_n=3)  # all four bins hold one pixel each
    want = torch.tensor([[0.0, 0, 0], [0, 0, 1], [1, 0, 0]])
    torch.testing.assert_close(pal.colors, want)
    torch.testing.assert_close(pal.weights, torch.full((3,), 0.25))


def test_dominant_batched_equals_looped():
    image, _ = random_image((2, 3), torch.uint8, "cpu", levels=8, seed=5)
    image[0, 1] = 7  # one flat image: a single occupied bin
    pal = tp.dominant_colors(image, top_n=10, bins=8)
    for i in range(2):
        for j in range(3):
            one = tp.dominant_colors(image[i, j], top_n=10, bins=8)
            k = one.colors.shape[0]
            torch.testing.assert_close(pal.colors[i, j, :k], one.colors, atol=0, rtol=0)
            torch.testing.assert_close(pal.weights[i, j, :k], one.weights, atol=0, rtol=0)
            assert (pal.weights[i, j, k:] == 0).all()
    assert tp.dominant_colors(image[0, 1], top_n=10, bins=8).colors.shape == (1, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dominant_uint8_equals_float(dtype):
    image, u8 = random_image((2,), dtype, "cpu", seed=7)
    a, b = tp.dominant_colors(image, bins=8), tp.dominant_colors(u8, bins=8)
    torch.testing.assert_close(a.colors.float(), b.colors)
    torch.testing.assert_close(a.weights.float(), b.weights)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dominant_alpha_zero_excluded(dtype, device):
    image, u8 = random_image((2,), dtype, device, channels=4, seed=11)
    opaque = torch.zeros(2, 9, 11, dtype=torch.bool)
    opaque[:, :, 3:] = True
    image[:, 3] = torch.where(opaque.to(device), image[:, 3].clamp(min=0.5) if dtype != torch.uint8
                              else image[:, 3].clamp(min=1), 0)
    pal = tp.dominant_colors(image, top_n=16, bins=4)
    for i in range(2):
        rc, rw = np_dominant(u8[i, :3].numpy(), 16, 4, opaque[i].numpy())
        n = len(rw)
        np.testing.assert_allclose(pal.colors[i, :n].cpu().double().numpy(), rc, atol=1e-6)
        np.testing.assert_allclose(pal.weights[i, :n].cpu().double().numpy(), rw, atol=1e-6)


def test_dominant_fully_transparent_has_zero_weights():
    image = torch.full((2, 4, 3, 3), 200, dtype=torch.uint8)
    image[1, 3] = 0
    pal = tp.dominant_colors(image, top_n=4)
    assert pal.weights.shape == (2, 1)
    assert pal.weights[0, 0] == 1 and pal.weights[1, 0] == 0


@pytest.mark.parametrize("bins", [4, 5, 16])
def test_dominant_per_channel_sums_equal_joint(monkeypatch, bins):
    # Large tables fall back to one index_add_ per channel; both give the same exact sums.
    image, _ = random_image((2,), torch.uint8, "cpu", channels=4, seed=13)
    image[1, 3, :2] = 0
    joint = tp.dominant_colors(image, top_n=40, bins=bins)
    monkeypatch.setattr(_policy, "DOMINANT_JOINT_MAX", 0)
    split = tp.dominant_colors(image, top_n=40, bins=bins)
    assert torch.equal(joint.colors, split.colors) and torch.equal(joint.weights, split.weights)


@pytest.mark.parametrize("bins", [5, 16])
def test_dominant_cpu_chunked_equals_one_pass(monkeypatch, sample_path, bins):
    # Large CPU images are counted in chunks of pixels; chunks that split images (and the
    # last, shorter chunk) give exactly the one-pass counts, order and sums.
    pil = Image.open(sample_path).convert("RGB").reduce(8)  # 64x64
    u8 = torch.from_numpy(np.asarray(pil).transpose(2, 0, 1).copy())
    alpha = torch.full((1, 64, 64), 255, dtype=torch.uint8)
    alpha[0, :5] = 0
    image = torch.stack([torch.cat([u8, alpha]), torch.cat([u8.flip(-1), alpha.flip(-2)])])
    one = tp.dominant_colors(image, top_n=32, bins=bins)
    monkeypatch.setattr(_policy, "DOMINANT_PIXEL_CHUNK", 1000)  # 64 * 64 >= 2 chunks, last one shorter
    chunked = tp.dominant_colors(image, top_n=32, bins=bins)
    assert torch.equal(one.colors, chunked.colors) and torch.equal(one.weights, chunked.weights)
    rc, rw = np_dominant(u8.numpy(), 32, bins, alpha[0].numpy() > 0)
    np.testing.assert_allclose(chunked.colors[0, : len(rw)].double().numpy(), rc, atol=1e-6)


def test_dominant_deterministic(device):
    image, _ = random_image((3,), torch.float32, device, h=32, w=32, seed=17)
    a, b = tp.dominant_colors(image), tp.dominant_colors(image)
    assert torch.equal(a.colors, b.colors) and torch.equal(a.weights, b.weights)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("fn", [tp.histogram, tp.dominant_colors])
def test_bad_input(fn):
    ok = torch.zeros(3, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"image: expected shape"):
        fn(torch.zeros(4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"image: expected 3\|4 channels"):
        fn(torch.zeros(2, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"image: expected a non-empty"):
        fn(torch.zeros(3, 0, 4, dtype=torch.uint8))
    nan = torch.zeros(3, 4, 4)
    nan[1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="image: expected finite values, got NaN"):
        fn(nan)
    with pytest.raises(ValueError, match=r"image: expected values in \[0, 1\]"):
        fn(torch.full((3, 4, 4), 2.0))
    with pytest.raises(TypeError, match="image: expected dtype uint8"):
        fn(torch.zeros(3, 4, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="image: expected a torch.Tensor"):
        fn(np.zeros((3, 4, 4)))
    for bins in (1, 257, 0):
        with pytest.raises(ValueError, match=rf"bins: expected an int in \[2, 256\], got {bins}"):
            fn(ok, bins=bins)
    with pytest.raises(TypeError, match="bins: expected an int"):
        fn(ok, bins=16.0)


def test_bad_top_n():
    ok = torch.zeros(3, 4, 4, dtype=torch.uint8)
    for top_n in (0, -3):
        with pytest.raises(ValueError, match=rf"top_n: expected an int in \[1, inf\], got {top_n}"):
            tp.dominant_colors(ok, top_n=top_n)
    with pytest.raises(TypeError, match="top_n: expected an int"):
        tp.dominant_colors(ok, top_n=2.5)


# ---------------------------------------------------------------- Triton kernels (CUDA path)

_INTERPRET_SCRIPT = r"""
import torch
from torchpalette import _bins_triton
from torchpalette.histogram import _dominant
assert _bins_triton.supported(torch.device("cpu"), 16, 32)
g = torch.Generator().manual_seed(0)
img = torch.randint(0, 256, (2, 4, 200, 340), generator=g, dtype=torch.uint8)
img[:, :3, :100] = img[:, :3, :100] // 50 * 50  # few colours: hot bins and ties
img[1, 3, :5] = 0  # transparent rows
many = torch.randint(0, 256, (40, 3, 12, 12), generator=g, dtype=torch.uint8)  # one program each
for x, bins, top_n in [(img, 16, 32), (img, 2, 100), (many, 8, 8)]:
    a = _dominant(x, top_n, bins, use_triton=True)
    b = _dominant(x, top_n, bins, use_triton=False)
    assert torch.equal(a.colors, b.colors) and torch.equal(a.weights, b.weights), (bins, top_n)
print("ok")
"""


def test_triton_kernels_match_torch_path_interpreted():
    # The CUDA kernels, run on the CPU by Triton's interpreter (multi-block programs, ragged
    # tail, alpha, bins 16 and 2, many images folded into the grid) against the torch path
    # that CI runs everywhere else.
    pytest.importorskip("triton")
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", _INTERPRET_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.cuda
@pytest.mark.parametrize("bins", [16, 8])
def test_triton_path_equals_torch_path_on_cuda(bins, sample_path):
    pytest.importorskip("triton")
    photo = tp.read_image(sample_path)[:3].cuda()
    images = torch.stack([photo, photo.flip(-1) // 2 + 60, 255 - photo])
    assert _bins_triton.supported(images.device, bins, 32)
    a = _dominant(images, 32, bins, use_triton=True)
    b = _dominant(images, 32, bins, use_triton=False)
    assert torch.equal(a.colors, b.colors) and torch.equal(a.weights, b.weights)
    c = tp.dominant_colors(images[1].cpu(), 32, bins=bins)
    torch.testing.assert_close(a.colors[1, : c.colors.shape[0]].cpu(), c.colors, atol=0, rtol=0)


def test_histogram_in_pixel_chunks_is_the_same(monkeypatch):
    from torchpalette import _policy

    image, _ = random_image((3,), torch.uint8, "cpu", h=17, w=13, channels=4, seed=5)
    image[1, 3, :4] = 0  # some transparent pixels
    whole = tp.histogram(image, bins=32)
    monkeypatch.setattr(_policy, "HISTOGRAM_CHUNK", 3 * 50)  # 50-pixel chunks, last shorter
    assert torch.equal(tp.histogram(image, bins=32), whole)
