"""palette(): weights, k=1 mean, flat colours, alpha, batching, spaces, quality, bad input."""

from __future__ import annotations

import warnings

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


def test_fully_transparent_image_does_not_fail_its_batch():
    g = torch.Generator().manual_seed(3)
    batch = torch.randint(0, 256, (3, 4, 8, 8), generator=g, dtype=torch.uint8)
    batch[:, 3] = 255
    batch[1, 3] = 0  # the middle image is fully transparent
    pal = tp.palette(batch, 4)
    assert bool((pal.weights[1] == 0).all())  # documented: its colours carry no weight
    for i in (0, 2):  # its neighbours are as alone
        alone = tp.palette(batch[i], 4)
        torch.testing.assert_close(pal.colors[i], alone.colors)
        torch.testing.assert_close(pal.weights[i], alone.weights)
    out = tp.reduce_colors(batch, 4)
    assert torch.equal(out[:, 3], batch[:, 3])  # alpha passes through, 0 stays 0
    assert (out[0].int() - tp.reduce_colors(batch[0], 4).int()).abs().max() <= 1


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
        want = _bins.sum_by(flat, weights, 64, torch.float32)
        with _policy.force("cuda"):
            got = _bins.sum_by(flat, weights, 64, torch.float32)  # GPU branch
        torch.testing.assert_close(got, want)
        assert float(got.sum()) == pytest.approx(1000 if weights is None else float(w.sum()))


def test_gpu_sums_do_not_depend_on_order():
    # GPU atomics add in any order: the fixed-point sums must give the same bits for any order
    # (float sums would not), so a seed gives one palette on every run.
    g = torch.Generator().manual_seed(1)
    flat = torch.randint(0, 20, (5000,), generator=g)
    w = torch.rand(5000, generator=g) * 255
    perm = torch.randperm(5000, generator=g)
    with _policy.force("cuda"):
        a = _bins.sum_by(flat, w, 20, torch.float32)
        b = _bins.sum_by(flat[perm], w[perm], 20, torch.float32)
    assert torch.equal(a, b)


def test_integer_sums_match_float_sums():
    # uint8 pixel values are summed as integers on the GPU branch: the same sums as bincount
    g = torch.Generator().manual_seed(2)
    flat = torch.randint(0, 30, (4000,), generator=g)
    w = torch.randint(0, 256, (4000,), generator=g, dtype=torch.uint8)
    want = _bins.sum_by(flat, w.float(), 30, torch.float32)
    for kind in ("cpu", "cuda"):
        with _policy.force(kind):
            assert torch.equal(_bins.sum_by(flat, w, 30, torch.float32), want)


# --------------------------------------------------------------------------- adaptive bins
def _exact_colours_image(n: int, size: int, seed: int, spread: int = 256) -> torch.Tensor:
    """``[3, size, size]`` uint8 image of exactly ``n`` distinct colours drawn from a cube of
    ``spread`` levels (small spreads put many colours in one coarse bin)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256 - spread + 1, (3,), generator=g)
    while True:
        cols = (base + torch.randint(0, spread, (n, 3), generator=g)).to(torch.uint8)
        if torch.unique(cols, dim=0).shape[0] == n:
            break
    idx = torch.cat([torch.arange(n), torch.randint(0, n, (size * size - n,), generator=g)])
    idx = idx[torch.randperm(size * size, generator=g)]
    return cols[idx].T.reshape(3, size, size).contiguous()


def test_sixteen_grey_levels_are_reproduced_exactly():
    img = torch.arange(120, 136, dtype=torch.uint8).repeat_interleave(64).view(1, 32, 32)
    img = img.expand(3, -1, -1).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 16 distinct colours: no "fewer than k" warning
        out = tp.reduce_colors(img, colors=16)
        assert torch.equal(out, img)
        out = tp.reduce_colors(img.float() / 255, 16)  # float: the level within rounding
        torch.testing.assert_close(out, img.float() / 255, atol=1e-5, rtol=0)


def test_small_saturated_objects_on_noisy_grey_are_exact():
    g = torch.Generator().manual_seed(0)
    img = (124 + torch.randint(0, 21, (1, 96, 96), generator=g)).to(torch.uint8).repeat(3, 1, 1)
    objects = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255),
               (0, 255, 255), (255, 128, 0), (128, 0, 255)]
    for i, c in enumerate(objects):  # 8 small objects of 3x3 pixels
        img[:, 10 * i + 4 : 10 * i + 7, 40:43] = torch.tensor(c, dtype=torch.uint8).view(3, 1, 1)
    assert torch.unique(img.flatten(1), dim=1).shape[1] == 29
    with pytest.warns(UserWarning, match="fewer distinct colours than k=64"):
        out = tp.reduce_colors(img, 64)
    assert torch.equal(out, img)


@pytest.mark.parametrize("spread", [256, 6])
def test_images_with_at_most_k_colours_are_reproduced_exactly(spread):
    for k in range(2, 65):
        for n in sorted({max(1, k // 3), k}):
            img = _exact_colours_image(n, 12, seed=k * 100 + n, spread=spread)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = tp.reduce_colors(img, k)
            assert torch.equal(out, img), (k, n)


def test_warning_counts_colours_not_bins():
    img = _exact_colours_image(5, 8, seed=1, spread=4)  # 5 colours in one or two coarse bins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tp.palette(img, 5)
    with pytest.warns(UserWarning, match="fewer distinct colours"):
        tp.palette(img, 6)
    with pytest.warns(UserWarning, match="fewer distinct colours"):  # fixed bits: bins count
        tp.palette(img, 5, bits=5)


@pytest.mark.parametrize("bits", [None, 8])  # 8: photos coarse-to-fine on exact colours
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float64])
def test_adaptive_bins_batch_equals_loop(photo, dtype, bits):
    grey = torch.arange(120, 136, dtype=torch.uint8).repeat_interleave(64).view(1, 32, 32)
    imgs = [photo[:, :32, :32], _exact_colours_image(7, 32, seed=3, spread=8),
            grey.expand(3, -1, -1), photo[:, 32:, 32:]]  # coarse-to-fine and direct images
    batch = as_dtype(torch.stack(imgs), dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pal = tp.palette(batch, 12, seed=4, bits=bits)
        out = tp.reduce_colors(batch, 12, seed=4, bits=bits)
        for i in range(len(imgs)):
            one = tp.palette(batch[i], 12, seed=4, bits=bits)
            torch.testing.assert_close(pal.colors[i], one.colors)
            torch.testing.assert_close(pal.weights[i], one.weights)
            torch.testing.assert_close(out[i], tp.reduce_colors(batch[i], 12, seed=4, bits=bits))


@pytest.mark.parametrize("dtype", DTYPES)
def test_colour_table_is_exact_with_and_without_sorting(photo, monkeypatch, dtype):
    img = as_dtype(crops(photo, (3,)), dtype).reshape(3, 3, -1)
    weights = (torch.arange(img.shape[-1]) % 4 != 0).float().expand(3, -1)
    sorted_ = _bins.color_table(img, weights, torch.float64)
    monkeypatch.setattr(_policy, "SORT_PIXELS", 0)  # counting inside the coarse bins
    counted = _bins.color_table(img, weights, torch.float64)
    levels = img if dtype == torch.uint8 else (img * 255).round()
    for t in (sorted_, counted):
        for i in range(3):
            got = (t.colors[i][t.slot[i]] * 255).round().T
            assert torch.equal(got, levels[i].double())
            n = torch.unique(levels[i].T, dim=0).shape[0]
            assert int((t.counts[i] > 0).sum()) == int(t.distinct[i]) <= n
        torch.testing.assert_close(t.counts.sum(-1), weights.sum(-1).double())
    same = [torch.equal(a.sort(0).values, b.sort(0).values) for a, b in
            zip(sorted_.colors.reshape(-1, 3).T, counted.colors.reshape(-1, 3).T)]
    assert all(same)


def test_auto_assignment_is_the_exact_search(photo):
    for img in (photo, photo.float() / 255):
        auto = tp.reduce_colors(img, 16, seed=1)
        exact = tp.reduce_colors(img, 16, seed=1, assign="exact")
        assert torch.equal(auto, exact)


def test_bits8_looks_pixels_up_by_exact_colour(photo):
    # bits=8: photos clustered coarse-to-fine on their exact colours, then every pixel takes
    # its exact colour's nearest palette colour: the labels of the exact search
    for img in (photo, photo.double() / 255):
        assert torch.equal(tp.reduce_colors(img, 16, bits=8),
                           tp.reduce_colors(img, 16, bits=8, assign="exact"))
