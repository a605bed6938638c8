"""kmeans(): against scikit-learn, weights, batching, seeds, empty clusters and bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

import torchpalette as tp
from torchpalette import _kmeans, _policy
from torchpalette._nearest import argmin_over_k


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def blobs(n=600, centers=5, d=3, seed=0):
    x, y = make_blobs(n, centers=centers, n_features=d, cluster_std=0.4, random_state=seed,
                      center_box=(-20, 20))
    return x, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_blobs_match_sklearn(device, dtype):
    x, y = blobs()
    res = tp.kmeans(torch.tensor(x, dtype=dtype, device=device), 5, n_init=3, generator=gen())
    sk = KMeans(5, n_init=3, random_state=0).fit(x)
    assert res.centroids.shape == (5, 3) and res.centroids.dtype == dtype
    assert res.labels.dtype == torch.int64 and res.n_iter.dtype == torch.int64
    assert adjusted_rand_score(y, res.labels.cpu().numpy()) == 1.0
    assert float(res.inertia) <= sk.inertia_ * 1.02
    # inertia is the weighted squared distance to the assigned centroid
    xt = torch.tensor(x, dtype=torch.float64)
    c = res.centroids.cpu().double()
    manual = (xt - c[res.labels.cpu()]).square().sum()
    assert float(manual) == pytest.approx(float(res.inertia), rel=1e-4)


def test_sample_photo_inertia_within_2_percent(sample_path):
    img = tp.read_image(sample_path)
    small = torch.nn.functional.interpolate(img[None].float(), size=(48, 48), mode="area")[0]
    lab = tp.srgb_to_lab((small / 255).clamp(0, 1).flatten(1).T.contiguous())
    for k in (4, 16):
        ours = tp.kmeans(lab, k, n_init=3, generator=gen(1))
        sk = KMeans(k, n_init=3, random_state=0).fit(lab.numpy())
        assert float(ours.inertia) <= sk.inertia_ * 1.02


def test_weights_equal_repeated_points():
    x, _ = blobs(200, 4, 2, seed=3)
    x = torch.tensor(x)
    w = torch.randint(0, 4, (200,), generator=gen(2)).double()
    init = x[w > 0][:4].clone()
    a = tp.kmeans(x, 4, weights=w, init=init)
    b = tp.kmeans(x.repeat_interleave(w.long(), 0), 4, init=init)
    torch.testing.assert_close(a.centroids, b.centroids)
    torch.testing.assert_close(a.inertia, b.inertia)
    assert torch.equal(a.n_iter, b.n_iter)


@pytest.mark.parametrize("batch", [(2,), (2, 3)])
def test_batched_equals_per_element(device, batch):
    g = gen(5)
    x = torch.randn(*batch, 300, 3, generator=g).to(device) * torch.arange(1, 4.0).to(device)
    w = torch.rand(*batch, 300, generator=g).to(device)
    res = tp.kmeans(x, 6, weights=w, generator=gen(7), n_init=2)
    assert res.centroids.shape == (*batch, 6, 3) and res.labels.shape == (*batch, 300)
    assert res.inertia.shape == batch and res.n_iter.shape == batch
    for idx in np.ndindex(*batch):
        one = tp.kmeans(x[idx], 6, weights=w[idx], generator=gen(7), n_init=2)
        torch.testing.assert_close(res.centroids[idx], one.centroids)
        assert torch.equal(res.labels[idx], one.labels)
        assert torch.equal(res.n_iter[idx], one.n_iter)


def test_seed_determinism_and_n_init():
    x = torch.randn(2, 500, 2, generator=gen(0))
    a = tp.kmeans(x, 8, generator=gen(3))
    b = tp.kmeans(x, 8, generator=gen(3))
    assert torch.equal(a.centroids, b.centroids)
    many = tp.kmeans(x, 8, generator=gen(3), n_init=6)
    assert bool((many.inertia <= a.inertia + 1e-6).all())


def test_zero_weight_points_are_ignored():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0], [1000.0]])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    res = tp.kmeans(x, 2, weights=w, generator=gen())
    assert sorted(res.centroids[:, 0].tolist()) == [0.5, 10.5]


def test_empty_cluster_is_reseeded():
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0], [9.0, 0.0]])
    init = torch.tensor([[0.0, 0.0], [5.0, 5.0], [100.0, 100.0]])  # the last attracts nothing
    res = tp.kmeans(x, 3, init=init)
    assert set(res.labels.tolist()) == {0, 1, 2}
    assert float(res.inertia) < 0.05


def test_max_iter_zero_returns_data_points():
    x = torch.randn(50, 3, generator=gen(4))
    res = tp.kmeans(x, 5, max_iter=0, generator=gen())
    d = torch.cdist(res.centroids, x).amin(-1)
    assert float(d.max()) < 1e-5 and int(res.n_iter) == 0


def test_fewer_distinct_points_warns():
    x = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5)
    with pytest.warns(UserWarning, match="fewer distinct points"):
        res = tp.kmeans(x, 4, generator=gen())
    assert res.centroids.shape == (4, 2)
    assert float(res.inertia) == 0.0


def test_no_warning_when_distinct():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tp.kmeans(torch.randn(20, 2, generator=gen()), 4, generator=gen())


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda x: tp.kmeans(x, 0), ValueError, "k: expected an int in"),
        (lambda x: tp.kmeans(x, 11), ValueError, "k: expected at most"),
        (lambda x: tp.kmeans(x, 2.0), TypeError, "k: expected an int"),
        (lambda x: tp.kmeans(x.long(), 2), TypeError, "points: expected a floating dtype"),
        (lambda x: tp.kmeans(x[0], 2), ValueError, r"points: expected shape \[..., N, D\]"),
        (lambda x: tp.kmeans(x[:0], 2), ValueError, "points: expected a non-empty"),
        (lambda x: tp.kmeans(torch.where(x > 0.5, torch.nan, x), 2), ValueError, "NaN"),
        (lambda x: tp.kmeans(x, 2, weights=-torch.ones(10)), ValueError, "weights: expected values >= 0"),
        (lambda x: tp.kmeans(x, 2, weights=torch.ones(7)), ValueError, "weights: expected shape"),
        (lambda x: tp.kmeans(x, 3, weights=torch.tensor([1.0, 1.0] + [0.0] * 8)), ValueError,
         r"positive weight \(2\)"),
        (lambda x: tp.kmeans(x, 2, init="random"), ValueError, "init: expected one of"),
        (lambda x: tp.kmeans(x, 2, init=torch.zeros(3, 2)), ValueError, "init: expected shape"),
        (lambda x: tp.kmeans(x, 2, init=torch.zeros(2, 2), n_init=2), ValueError, "n_init"),
        (lambda x: tp.kmeans(x, 2, max_iter=-1), ValueError, "max_iter"),
        (lambda x: tp.kmeans(x, 2, tol=-1.0), ValueError, "tol"),
        (lambda x: tp.kmeans(x.numpy(), 2), TypeError, "points: expected a torch.Tensor"),
    ],
)
def test_bad_input(call, err, match):
    x = torch.rand(10, 2, generator=gen())
    with pytest.raises(err, match=match):
        call(x)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    x, _ = blobs(400, 4, 3)
    x = torch.tensor(x, dtype=torch.float32)
    a = tp.kmeans(x, 4, generator=gen(1))
    b = tp.kmeans(x.cuda(), 4, generator=gen(1))
    torch.testing.assert_close(b.centroids.cpu(), a.centroids, rtol=1e-4, atol=1e-4)
    assert torch.equal(a.labels, b.labels.cpu())


def test_small_cpu_problems_run_on_one_thread_and_restore_the_setting(monkeypatch):
    seen = []
    real = _kmeans._lloyd
    def spy(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(_kmeans, "_lloyd", spy)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0))
        tp.kmeans(x, 4, generator=torch.Generator().manual_seed(0))
        monkeypatch.setattr(_policy, "KMEANS_SMALL_WORK", 10)  # now "large": threads untouched
        tp.kmeans(x, 4, generator=torch.Generator().manual_seed(0))
        assert seen == [1, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sync_free_lloyd_matches_cpu_style(dtype):
    """The sync-free one-hot Lloyd and the fused min(1) reduction that CUDA runs, on CPU."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 400, 3, generator=g) * torch.tensor([1.0, 3.0, 5.0])).to(dtype)
    w = torch.rand(3, 400, generator=g, dtype=dtype)
    w[:, :50] = 0  # ignored points
    xx = (x * x).sum(-1)
    c0 = x[:, 50:58].clone()
    c0[:, 7] = 1e3  # a far seed: its cluster empties and is re-seeded
    thr = torch.full((3,), 1e-10, dtype=dtype)
    with _policy.force("cpu"):
        cpu_c, cpu_n = _kmeans._lloyd(x, xx, w, c0, thr, 50)
    with _policy.force("cuda"):
        gpu_c, gpu_n = _kmeans._lloyd(x, xx, w, c0, thr, 50)
    torch.testing.assert_close(gpu_c, cpu_c)
    assert bool((gpu_n >= cpu_n).all())  # the GPU style checks for convergence less often
    dist = torch.rand(2, 5, 30, generator=g, dtype=dtype)
    with _policy.force("cuda"):
        single = argmin_over_k(dist)
    for a, b in zip(single, argmin_over_k(dist), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["cpu", "cuda"])
def test_compacting_converged_elements_changes_nothing(kind):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 300, 3, generator=g)
    x[:4] = x[:4].round()  # few distinct points: these converge in a step or two
    w = torch.ones(6, 300)
    xx = (x * x).sum(-1)
    c0 = x[:, :5].clone()
    thr = torch.full((6,), 1e-12)
    with _policy.force(kind):
        cent, n_iter = _kmeans._lloyd(x, xx, w, c0, thr, 100)
    assert int(n_iter.min()) < int(n_iter.max())  # the batch was compacted on the way
    for i in range(6):
        with _policy.force(kind):
            ci, ni = _kmeans._lloyd(x[i : i + 1], xx[i : i + 1], w[i : i + 1], c0[i : i + 1],
                                    thr[i : i + 1], 100)
        torch.testing.assert_close(cent[i], ci[0])
        assert int(ni[0]) == int(n_iter[i])
