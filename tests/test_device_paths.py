"""Every device's code path, run on the CPU.

``_policy.force("cuda")`` takes the choices the package makes on a GPU (scatter binning,
single-pass argmin, sync-free k-means, GPU budgets) for CPU tensors, so CI runs the CUDA code
paths and compares them with the CPU ones. Tolerances, per kernel:

* binning: counts equal; means within 1e-6 (GPU sums are fixed point in steps of 2**-24);
* argmin, nearest search (exact and refined), quantization: equal indices (one tie rule);
* k-means, palettes, dataset palettes: centroids within 1e-5 (the same Lloyd steps; the GPU
  style only checks for convergence less often, and frozen elements do not move).

It also holds the CPU tests of the CUDA findings of issue 20: precision flags, counts past
2**24, EXIF orientation on the GPU decode path, grid and index limits, memory bounded by
chunking, the NCCL device and the RGBA generator.
"""

from __future__ import annotations

import io as _io

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch.utils._python_dispatch import TorchDispatchMode

import torchpalette as tp
from torchpalette import _bins, _bins_triton, _dist, _jpeg, _nearest, _policy, fit

KINDS = ("cpu", "cuda")
# ids without "cuda": conftest skips tests whose keywords name it where no GPU is present
KIND_IDS = ["cpu_choices", "gpu_choices"]


def _photo_crops() -> torch.Tensor:
    img = tp.read_image(tp.io.SAMPLE)
    return torch.stack([img[:, :96, :96], img[:, 200:296, 200:296], img[:, 400:496, 400:496]])


def _both(fn):
    """``fn()`` under the CPU choices and under the CUDA choices."""
    out = []
    for kind in KINDS:
        with _policy.force(kind):
            out.append(fn())
    return out


# --------------------------------------------------------------------------- the policy


def test_choices_follow_the_device_and_force_overrides_them():
    x = torch.zeros(2)
    assert _policy.device_choices(x).kind == "cpu"
    assert not _policy.device_choices(x).scatter_bins
    with _policy.force("cuda"):
        gpu = _policy.device_choices(x)
        assert gpu.kind == "gpu" and gpu.scatter_bins and gpu.single_pass_argmin
        assert gpu.sync_free_kmeans and gpu.nearest_chunk == _policy.NEAREST_CHUNK_GPU
    assert _policy.device_choices(x).kind == "cpu"  # restored on exit
    assert _policy.device_choices(torch.device("meta")).kind == "gpu"
    with pytest.raises(ValueError, match="kind: expected"):
        with _policy.force("tpu"):
            pass


def test_budgets_are_read_at_call_time(monkeypatch):
    monkeypatch.setattr(_policy, "NEAREST_CHUNK", 123)
    assert _policy.device_choices(torch.zeros(1)).nearest_chunk == 123


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_binning_scatter_equals_bincount(dtype):
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (3, 3, 5000), generator=g, dtype=torch.uint8)
    rgb[1, :, :2500] = rgb[1, :, :2500] // 64 * 64  # hot bins
    x = rgb if dtype == torch.uint8 else rgb.float() / 255
    weights = (torch.rand(3, 5000, generator=g) > 0.2).float()
    for w in (None, weights):
        (ma, ca, ka), (mb, cb, kb) = _both(lambda w=w: _bins.bin_pixels(x, w, 4))
        assert torch.equal(ca, cb) and torch.equal(ka, kb)
        torch.testing.assert_close(ma, mb, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_counts_past_2_pow_24_are_exact(kind):
    # a float32 sum of ones stops at 2**24 (16,777,216): counts are int64 on every path
    n = (1 << 24) + 1000  # representable in float32, so the result can be exact
    flat = torch.zeros(n, dtype=torch.int64)
    flat[-3:] = 2
    with _policy.force(kind):
        counts = _bins.sum_by(flat, None, 4, torch.float32)
        weighted = _bins.sum_by(flat, torch.ones(n), 4, torch.float32)
    want = torch.tensor([n - 3, 0, 3, 0], dtype=torch.float32)
    assert torch.equal(counts, want) and torch.equal(weighted, want)


def test_argmin_ties_go_to_the_lowest_index_on_every_path():
    dist = torch.tensor([[[1.0, 2.0, 0.5, 3.0], [0.5, 2.0, 0.5, 1.0], [0.5, 1.0, 0.7, 1.0]]])
    for k in (3, 300):  # the uint8 and the int32 mask of the CPU path
        d = torch.cat([dist, dist.new_full((1, k - 3, 4), 9.0)], 1)
        (la, ma), (lb, mb) = _both(lambda d=d: _nearest.argmin_over_k(d))
        assert la.tolist() == lb.tolist() == [[1, 2, 0, 1]]
        assert torch.equal(ma, mb)


@pytest.mark.parametrize("space", ["lab", "srgb"])
def test_duplicate_palette_entries_give_one_index_on_every_path(space):
    crops = _photo_crops()
    pal = tp.palette(crops[0], 6).colors
    pal = torch.cat([pal[:3], pal[:3], pal[3:]])  # entries 3-5 repeat 0-2
    a, b = _both(lambda: tp.palette_indices(crops, pal, space=space))
    assert torch.equal(a, b) and int(a.max()) < 9
    assert not bool(((a >= 3) & (a < 6)).any())  # a duplicate never wins over its original


def test_nearest_search_and_refined_search_agree_across_paths():
    crops = _photo_crops()
    for assign in ("exact", "refined"):
        a, b = _both(lambda assign=assign: tp.reduce_colors(crops, 8, assign=assign))
        assert torch.equal(a, b), assign


def test_kmeans_sync_free_equals_cpu_style():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 700, 3, generator=g) * torch.tensor([1.0, 2.0, 4.0])
    w = torch.rand(4, 700, generator=g)
    a, b = _both(lambda: tp.kmeans(x, 9, weights=w, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(a.centroids, b.centroids, atol=1e-5, rtol=0)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.n_iter, b.n_iter)


def test_palettes_and_dataset_palettes_agree_across_paths():
    crops = _photo_crops()
    a, b = _both(lambda: tp.palette(crops, 12))
    torch.testing.assert_close(a.colors, b.colors, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.weights, b.weights, atol=1e-6, rtol=0)
    fa, fb = _both(lambda: fit.fit_palette(crops, 8))
    torch.testing.assert_close(fa, fb, atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- precision flags

_FLAGS = [
    lambda: torch.set_float32_matmul_precision("high"),
    lambda: torch.set_float32_matmul_precision("medium"),
    lambda: setattr(torch.backends, "fp32_precision", "ieee"),  # crashed cudnn.flags()
    lambda: setattr(torch.backends, "fp32_precision", "tf32"),
    lambda: setattr(torch.backends.cudnn.conv, "fp32_precision", "ieee"),
    lambda: setattr(torch.backends.cuda.matmul, "fp32_precision", "tf32"),
    lambda: setattr(torch.backends.mkldnn.matmul, "fp32_precision", "bf16"),
]


def _precision_state() -> tuple:
    b = torch.backends
    try:
        legacy = torch.get_float32_matmul_precision()
    except RuntimeError:  # torch refuses to answer once both APIs were used
        legacy = "mixed"
    return (b.fp32_precision, b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision,
            b.cudnn.rnn.fp32_precision, b.mkldnn.matmul.fp32_precision,
            b.mkldnn.conv.fp32_precision, legacy)


def _restore_precision(state: tuple) -> None:
    b = torch.backends
    b.fp32_precision = state[0]  # the parent first: it resets the leaves that inherit
    b.cuda.matmul.fp32_precision, b.cudnn.conv.fp32_precision = state[1], state[2]
    b.cudnn.rnn.fp32_precision, b.mkldnn.matmul.fp32_precision = state[3], state[4]
    b.mkldnn.conv.fp32_precision = state[5]


@pytest.mark.skipif(not hasattr(torch.backends, "fp32_precision"), reason="torch < 2.9")
@pytest.mark.parametrize("flag", range(len(_FLAGS)))
def test_precision_flags_neither_crash_nor_change_results(flag):
    crops = _photo_crops()[:2]
    lab = torch.tensor([[50.0, 20.0, -30.0], [90.0, -5.0, 60.0]])
    with _policy.force("cuda"):
        want = (tp.palette(crops, 8).colors, tp.lab_to_srgb(lab))
    saved = _precision_state()
    try:
        _FLAGS[flag]()
        user = _precision_state()
        with _policy.force("cuda"):  # the guards run on the CUDA path too (cudnn flags)
            got = (tp.palette(crops, 8).colors, tp.lab_to_srgb(lab))
        assert _precision_state() == user  # the user's settings are restored on exit
    finally:
        _restore_precision(saved)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_the_guard_sets_ieee_inside():
    saved = _precision_state()
    try:
        torch.set_float32_matmul_precision("high")
        with _policy.ieee_fp32():
            assert torch.backends.cuda.matmul.fp32_precision == "ieee"
            assert torch.backends.cudnn.conv.fp32_precision == "ieee"
        assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    finally:
        _restore_precision(saved)


# --------------------------------------------------------------------------- limits


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any op produces inside the block."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_kmeans_memory_is_bounded_by_the_budget_at_any_batch_and_k(kind, monkeypatch):
    # unchunked, B=1024 256^2 photos at k=256 built [B, K, N] distances of ~49 GiB
    g = torch.Generator().manual_seed(0)
    b, n, k = 4, 3000, 64  # [B, K, N] = 768,000 values; the points hold 48,000
    x = torch.randn(b, n, 3, generator=g)
    want = tp.kmeans(x, k, generator=torch.Generator().manual_seed(0), max_iter=5)
    budget = 30_000
    monkeypatch.setattr(_policy, "NEAREST_CHUNK", budget)
    monkeypatch.setattr(_policy, "NEAREST_CHUNK_GPU", budget)
    spy = _LargestTensor()
    with _policy.force(kind), spy:
        got = tp.kmeans(x, k, generator=torch.Generator().manual_seed(0), max_iter=5)
    assert spy.largest <= max(budget, b * n * 4)  # never a [B, K, N] block
    torch.testing.assert_close(got.centroids, want.centroids, atol=1e-5, rtol=0)
    assert torch.equal(got.labels, want.labels)


def test_refined_search_past_65536_images():
    # image offsets of 2**15 bins overflowed int32 at 65,536 images, and the dense occupancy
    # table held 2**15 entries per image (16 GiB there)
    b = 70_000
    g = torch.Generator().manual_seed(0)
    rgb = torch.randint(0, 256, (b, 3, 1), generator=g, dtype=torch.uint8)
    pal = torch.rand(b, 3, 3, generator=g)
    ps = tp.srgb_to_lab(pal)
    pa = torch.cat([ps * -2.0, (ps * ps).sum(-1, keepdim=True)], -1)
    exact = _nearest.search(rgb, ps, pa, "lab", torch.float32)
    refined = _nearest.search_near_boundaries(rgb, ps, pa, "lab", torch.float32, alpha=1.0)
    assert torch.equal(refined, exact)


def test_triton_grid_folds_images_into_x():
    # CUDA caps grid y at 65,535: the image count must not be a grid dimension of its own
    grid, progs, per = _bins_triton._grid(1000, 100_000)
    assert len(grid) == 1 and grid[0] == progs * 100_000 < 2**31 and per >= 1000


def test_dataset_sums_do_not_overflow_past_5e11_pixels():
    white = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    stats = torch.zeros(1 << 15, 7, dtype=torch.int64)
    fit._accumulate(stats, white, 5, None)
    stats *= 6 * 10**11 // 16  # a stream of 6e11 white pixels in one bin
    fit._accumulate(stats, white.float() / 255 * 0.5, 5, None)  # and a few grey ones
    got = fit._palette_from_stats(fit._carry(stats), 1, "srgb", 0)
    assert float(stats[:, 1:].min()) >= 0
    torch.testing.assert_close(got, torch.ones(1, 3), atol=1e-6, rtol=0)


def test_nccl_uses_local_rank_when_no_device_was_set(monkeypatch):
    import torch.distributed as dist

    class Group:
        bound_device_id = None

    monkeypatch.setattr(dist, "group", type("G", (), {"WORLD": Group()}))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert _dist._nccl_device(None) == torch.device("cuda", 3)  # not GPU 0 on every rank
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)  # chosen by set_device
    assert _dist._nccl_device(None) == torch.device("cuda", 2)
    Group.bound_device_id = torch.device("cuda", 1)  # init_process_group(device_id=...)
    assert _dist._nccl_device(Group()) == torch.device("cuda", 1)


def test_rgba_palettes_draw_from_a_cpu_generator(monkeypatch):
    """The app's RGBA palettes come from tp.quantize(alpha="quantize"), whose semi-transparent
    entries are clustered with a CPU generator."""
    from torchpalette import _alpha
    from torchpalette.cli.quantizers import Quantizer

    seen = []
    real = _alpha.cluster

    def spy(*args, generator=None, **kw):
        seen.append(generator.device.type)
        return real(*args, generator=generator, **kw)

    monkeypatch.setattr(_alpha, "cluster", spy)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 16, 16), generator=g, dtype=torch.uint8)
    x[3] = torch.randint(1, 255, (16, 16), generator=g, dtype=torch.uint8)  # partial alpha
    Quantizer(8).rgba_one(x)
    assert seen == ["cpu"]  # a CUDA generator's stream differs: CPU != CUDA palettes


# --------------------------------------------------------------------------- EXIF orientation


def _jpeg_bytes(orientation: int | None, size=(300, 200)) -> bytes:
    g = torch.Generator().manual_seed(0)
    arr = torch.randint(0, 256, (size[1] // 50, size[0] // 50, 3), generator=g, dtype=torch.uint8)
    im = Image.fromarray(arr.numpy()).resize(size, Image.NEAREST)
    buf = _io.BytesIO()
    exif = im.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    im.save(buf, format="JPEG", quality=95, exif=exif)
    return buf.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillow(orientation):
    data = _jpeg_bytes(orientation)
    assert _jpeg.jpeg_orientation(data) == orientation
    with Image.open(_io.BytesIO(data)) as im:
        want = torch.tensor(np.array(ImageOps.exif_transpose(im)))
    plain = tp.read_image(_write(data, orientation))  # torchvision's CPU decode, oriented
    assert torch.equal(plain.permute(1, 2, 0), want)
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    got = _jpeg.decode_jpegs([raw])[0]
    assert torch.equal(got, plain)


def _write(data: bytes, tag: int):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / f"o{tag}.jpg"
    path.write_bytes(data)
    return path


def test_orientation_of_odd_files_is_1():
    assert _jpeg.jpeg_orientation(_jpeg_bytes(None)) == 1
    assert _jpeg.jpeg_orientation(b"\xff\xd8\xff\xe1\x00") == 1  # truncated marker
    assert _jpeg.jpeg_orientation(b"not a jpeg") == 1
    assert _jpeg.jpeg_orientation(_jpeg_bytes(6)[:30]) in (1, 6)  # cut short: never raises


def test_gpu_jpeg_path_applies_exif_orientation(tmp_path, monkeypatch):
    """The --device cuda decode path, on the CPU: the decoder is replaced by one that ignores
    EXIF orientation, as nvJPEG does; a 300x200 JPEG with Orientation=6 must still read
    [3, 300, 200], as read_image gives."""
    import torchvision.io

    from torchpalette.cli import decode

    real = torchvision.io.decode_jpeg

    def like_nvjpeg(data, mode=None, device="cpu", apply_exif_orientation=False):
        return real(data, mode=mode, device=device, apply_exif_orientation=False)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", like_nvjpeg)
    path = tmp_path / "rot.jpg"
    path.write_bytes(_jpeg_bytes(6))
    items = [decode.decode_one(0, str(path), raw_jpeg=True)]
    got, = decode.gpu_decode_jpegs(items, [path], torch.device("cpu"))
    assert got.error is None and got.kind == "rgb" and got.image is not None
    assert got.image.shape == (3, 300, 200) and torch.equal(got.image, tp.read_image(path))


def test_cuda_assign_default_is_taken_by_the_policy():
    crops = _photo_crops()
    with _policy.force("cuda"):
        assert _policy.auto_labels(crops.device) == "bins"
        auto = tp.quantize(crops, 8)
    assert torch.equal(auto.indices, tp.quantize(crops, 8, assign="bins").indices)
    assert _policy.auto_labels(crops.device) == "table"


def test_near_duplicates_are_merged_within_the_budget(monkeypatch):
    ps = torch.tensor([[[50.0, 1.0, 2.0], [10.0, 0.0, 0.0], [50.0, 1.0 + 2e-6, 2.0]]])
    labels = torch.tensor([[0, 1, 2, 2]])
    assert _nearest.first_of_equal(ps, labels).tolist() == [[0, 1, 0, 0]]
    far = ps.clone()
    far[0, 2, 1] += 1e-3  # a distinct colour stays distinct
    assert _nearest.first_of_equal(far, labels).tolist() == [[0, 1, 2, 2]]
    monkeypatch.setattr(_policy, "NEAREST_CHUNK", 1)  # one image per table
    two = torch.cat([ps, far])
    got = _nearest.first_of_equal(two, labels.expand(2, -1))
    assert got.tolist() == [[0, 1, 0, 0], [0, 1, 2, 2]]


def test_layer_palettes_at_k_agree_across_paths():
    from torchpalette.nn import _ops as _layer_ops

    rgb = _photo_crops().reshape(3, 3, -1)
    k = torch.tensor([3, 8, 5])
    a, b = _both(lambda: _layer_ops.palettes_at_k(rgb, None, k, 8, "lab", 0))
    torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=0)
    assert torch.equal(a[2], b[2])


def test_delta_e_functional_gpu_form_equals_cpu_in_place_kernel():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 5000, 3, generator=g).unbind(0)
    fa, fb = _both(lambda: tp.delta_e(a, b, fast=False))
    torch.testing.assert_close(fa, fb, atol=1e-4, rtol=0)
