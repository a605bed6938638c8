"""palette(): weights, k=1 mean, flat colours, alpha, batching, spaces, quality, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torchpalette as tp
from torchpalette import _bins, _policy

BATCHES = [(), (2,), (2, 3)]
DTYPES = [torch.uint8, torch.float32, torch.float64]


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    from tests.conftest import SAMPLE

    img = tp.read_image(SAMPLE)
    return F.interpolate(img[None].float(), size=(64, 64), mode="area")[0].round().to(torch.uint8)


def as_dtype(img: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return img if dtype == torch.uint8 else (img.to(dtype) / 255)


def crops(photo: torch.Tensor, batch: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(batch)) if batch else 1
    tiles = torch.stack([photo[:, (i % 3) * 16 : (i % 3) * 16 + 32, (i // 3) * 16 : (i // 3) * 16 + 32]
                         for i in range(n)])
    return tiles.reshape(*batch, 3, 32, 32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_weights_sum_to_one_and_sorted(photo, device, dtype, batch):
    img = as_dtype(crops(photo, batch), dtype).to(device)
    pal = tp.palette(img, 6)
    assert pal.colors.shape == (*batch, 6, 3) and pal.weights.shape == (*batch, 6)
    assert pal.colors.device.type == device.type
    assert pal.colors.dtype == (torch.float32 if dtype == torch.uint8 else dtype)
    torch.testing.assert_close(pal.weights.sum(-1), torch.ones(batch, dtype=pal.weights.dtype,
                                                               device=device))
    assert bool((pal.weights[..., :-1] >= pal.weights[..., 1:]).all())
    assert bool(((pal.colors >= 0) & (pal.colors <= 1)).all())


@pytest.mark.parametrize("method", ["hist", "exact"])
@pytest.mark.parametrize("batch", [(2,), (2, 3)])
def test_batched_equals_per_element(photo, method, batch):
    img = crops(photo, batch)
    pal = tp.palette(img, 5, method=method, seed=3)
    for idx in np.ndindex(*batch):
        one = tp.palette(img[idx], 5, method=method, seed=3)
        torch.testing.assert_close(pal.colors[idx], one.colors)
        torch.testing.assert_close(pal.weights[idx], one.weights)


@pytest.mark.parametrize("method, tol", [("exact", 1e-3), ("hist", 0.5)])
def test_k1_is_the_lab_mean(photo, method, tol):
    img = photo.double() / 255
    pal = tp.palette(img, 1, method=method)
    lab_mean = tp.srgb_to_lab(img.flatten(1).T).mean(0)
    got = tp.srgb_to_lab(pal.colors[0])
    assert float((got - lab_mean).norm()) < tol
    assert float(pal.weights[0]) == 1.0


@pytest.mark.parametrize("space", ["lab", "oklab", "srgb"])
@pytest.mark.parametrize("method", ["hist", "exact"])
def test_k_flat_colours_come_back(space, method):
    colours = torch.tensor([[255, 0, 0], [0, 128, 255], [20, 20, 20], [240, 240, 200]],
                           dtype=torch.uint8)
    counts = [40, 30, 20, 10]
    px = torch.cat([c.expand(n, 3) for c, n in zip(colours, counts)])  # [100, 3]
    img = px.T.reshape(3, 10, 10)
    pal = tp.palette(img, 4, space=space, method=method)
    assert torch.equal((pal.colors * 255).round().to(torch.uint8), colours)
    torch.testing.assert_close(pal.weights, torch.tensor([0.4, 0.3, 0.2, 0.1]))


def test_alpha_zero_pixels_never_appear():
    rgb = torch.zeros(3, 8, 8, dtype=torch.uint8)
    rgb[1, :, :4] = 255  # green left half ...
    rgb[0, :, 4:] = 200  # red-ish right half
    rgb[2, :2] = 90
    alpha = torch.full((1, 8, 8), 255, dtype=torch.uint8)
    alpha[:, :, :4] = 0  # ... is fully transparent
    pal = tp.palette(torch.cat([rgb, alpha]), 2)
    assert float(pal.colors[..., 1].max()) < 0.01  # no green anywhere
    torch.testing.assert_close(pal.weights, torch.tensor([0.75, 0.25]))


def test_fewer_colours_than_k_warns():
    img = torch.zeros(3, 4, 4)
    img[:, :2] = 1.0
    with pytest.warns(UserWarning, match="fewer distinct colours"):
        pal = tp.palette(img, 4)
    assert pal.colors.shape == (4, 3)
    torch.testing.assert_close(pal.weights, torch.tensor([0.5, 0.5, 0.0, 0.0]))


def test_seed_and_max_pixels_are_deterministic(photo):
    a = tp.palette(photo, 8, max_pixels=500, seed=1, method="exact")
    b = tp.palette(photo, 8, max_pixels=500, seed=1, method="exact")
    assert torch.equal(a.colors, b.colors)
    assert torch.equal(tp.palette(photo, 8, seed=2).colors, tp.palette(photo, 8, seed=2).colors)


def test_hist_quality_close_to_sklearn_lab(photo):
    from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab
    from sklearn.cluster import KMeans

    lab = rgb2lab(photo.permute(1, 2, 0).numpy())

    def mean_de(colors):
        out = tp.apply_palette(photo, colors.float())
        return deltaE_ciede2000(lab, rgb2lab(out.permute(1, 2, 0).numpy())).mean()

    ours = np.mean([mean_de(tp.palette(photo, 8, seed=s).colors) for s in range(8)])
    theirs = np.mean([
        mean_de(torch.from_numpy(lab2rgb(
            KMeans(8, n_init=1, random_state=s).fit(lab.reshape(-1, 3)).cluster_centers_[None])[0]))
        for s in range(8)
    ])
    assert ours <= theirs + 0.15


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(k=0), ValueError, "k: expected an int in"),
        (dict(k=2.5), TypeError, "k: expected an int"),
        (dict(space="hsv"), ValueError, "space: expected one of"),
        (dict(method="fast"), ValueError, "method: expected one of"),
        (dict(bits=9), ValueError, "bits"),
        (dict(max_pixels=0), ValueError, "max_pixels"),
        (dict(n_init=0), ValueError, "n_init"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        tp.palette(torch.rand(3, 4, 4), **kwargs)


def test_bad_images():
    with pytest.raises(ValueError, match="grey"):
        tp.palette(torch.rand(1, 4, 4))
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        tp.palette(torch.rand(3, 4, 4) * 2)
    with pytest.raises(ValueError, match="NaN"):
        tp.palette(torch.full((3, 4, 4), torch.nan))
    with pytest.raises(TypeError, match="dtype"):
        tp.palette(torch.zeros(3, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="transparent"):
        tp.palette(torch.zeros(4, 4, 4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_binning_in_groups_is_the_same(photo, monkeypatch, dtype):
    img = as_dtype(crops(photo, (5,)), dtype).reshape(5, 3, -1)
    weights = (torch.arange(img.shape[-1]) % 3 != 0).float().expand(5, -1)
    whole = _bins.bin_pixels(img, weights, 5)
    monkeypatch.setattr(_policy, "BIN_GROUP", 2 * 32768)  # groups of 2 images
    grouped = _bins.bin_pixels(img, weights, 5)
    for a, b in zip(whole, grouped):
        torch.testing.assert_close(a, b)
    means, counts, bins = whole
    occupied = counts > 0
    assert torch.equal(occupied, bins < 32768)
    torch.testing.assert_close(counts.sum(-1), weights.sum(-1).to(counts.dtype))
    # a slot's bin code is the bin of its mean colour
    q = (means * 255).round().to(torch.int64) >> 3
    code = (q[..., 0] << 10) | (q[..., 1] << 5) | q[..., 2]
    assert torch.equal(code[occupied], bins[occupied])


def test_gpu_sums_match_cpu_bincount():
    g = torch.Generator().manual_seed(0)
    flat = torch.randint(0, 50, (1000,), generator=g, dtype=torch.int32)
    w = torch.rand(1000, generator=g)
    for weights in (None, w):
        want = _bins.sum_by(flat, weights, 64, torch.float32, scatter=False)
        got = _bins.sum_by(flat, weights, 64, torch.float32, scatter=True)  # GPU branch
        torch.testing.assert_close(got, want)
        assert float(got.sum()) == pytest.approx(1000 if weights is None else float(w.sum()))


def test_gpu_sums_do_not_depend_on_order():
    # GPU atomics add in any order: the fixed-point sums must give the same bits for any order
    # (float sums would not), so a seed gives one palette on every run.
    g = torch.Generator().manual_seed(1)
    flat = torch.randint(0, 20, (5000,), generator=g)
    w = torch.rand(5000, generator=g) * 255
    perm = torch.randperm(5000, generator=g)
    a = _bins.sum_by(flat, w, 20, torch.float32, scatter=True)
    b = _bins.sum_by(flat[perm], w[perm], 20, torch.float32, scatter=True)
    assert torch.equal(a, b)


def test_integer_sums_match_float_sums():
    # uint8 pixel values are summed as integers on the GPU branch: the same sums as bincount
    g = torch.Generator().manual_seed(2)
    flat = torch.randint(0, 30, (4000,), generator=g)
    w = torch.randint(0, 256, (4000,), generator=g, dtype=torch.uint8)
    want = _bins.sum_by(flat, w.float(), 30, torch.float32, scatter=False)
    for scatter in (False, True):
        assert torch.equal(_bins.sum_by(flat, w, 30, torch.float32, scatter=scatter), want)
