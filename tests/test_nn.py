"""Tests of the quantizer layers (torchpalette.nn): the function twins, tv_tensors, Compose,
DataLoader workers, buffers, straight-through gradients, streaming fit, augmentation."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import torchpalette as tp
from torchpalette import nn as tnn

DTYPES = [torch.uint8, torch.float32, torch.float64]
BATCHES = [(), (2,), (2, 3)]
PALETTE = torch.tensor(
    [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.9, 0.1, 0.1], [0.1, 0.6, 0.2], [0.2, 0.3, 0.9]]
)


def _image(batch=(), dtype=torch.uint8, size=8, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (*batch, 3, size, size), generator=g, dtype=torch.uint8)
    x = x if dtype == torch.uint8 else x.to(dtype) / 255
    return x.to(device)


def _flat_colors(colors, size=6):
    """An image [3, size, len(colors)*size] of flat vertical stripes of ``colors`` [K, 3]."""
    stripes = colors[:, :, None, None].expand(-1, -1, size, size)  # [K, 3, s, s]
    return torch.cat(list(stripes), dim=-1)


def _n_colors(image):
    return image.reshape(-1, *image.shape[-3:]).flatten(2).transpose(1, 2).unique(dim=1).shape[1]


# --------------------------------------------------------------------------- ColorQuantizer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_color_quantizer_equals_function(dtype, batch, device):
    x = _image(batch, dtype, device=device)
    layer = tnn.ColorQuantizer(colors=4)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    torch.testing.assert_close(out, tp.reduce_colors(x, 4), rtol=0, atol=0)
    for img in out.reshape(-1, 3, 8, 8):
        assert _n_colors(img) <= 4


def test_color_quantizer_defaults_come_from_function():
    import inspect

    sig = inspect.signature(tp.reduce_colors).parameters
    layer = tnn.ColorQuantizer()
    assert layer.colors == sig["colors"].default
    assert layer.space == sig["space"].default and layer.dither == sig["dither"].default
    assert repr(layer) == "ColorQuantizer(colors=16, space='lab', dither='none')"


def test_color_quantizer_rgba_keeps_alpha():
    x = _image((2,), torch.uint8)
    alpha = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    alpha[..., :2, :] = 0
    out = tnn.ColorQuantizer(colors=3)(torch.cat([x, alpha], dim=1))
    assert out.shape == (2, 4, 8, 8)
    assert torch.equal(out[:, 3:], alpha)


def test_tv_tensor_image_in_compose():
    img = tv_tensors.Image(_image((), torch.uint8, size=12))
    pipe = v2.Compose([tnn.ColorQuantizer(colors=3), v2.ToDtype(torch.float32, scale=True)])
    out = pipe(img)
    assert isinstance(out, tv_tensors.Image)
    assert out.dtype == torch.float32 and out.shape == (3, 12, 12)
    assert _n_colors(out) <= 3
    # with a label, as datasets call their transforms: the label passes through unchanged
    out2, label = pipe(img, 7)
    assert label == 7 and isinstance(out2, tv_tensors.Image)
    torch.testing.assert_close(out2, out)
    assert isinstance(tnn.PaletteQuantizer(PALETTE)(img), tv_tensors.Image)
    assert isinstance(tnn.RandomColorReduction(p=1.0)(img), tv_tensors.Image)


class _Images(Dataset):
    def __init__(self, transform):
        self.transform = transform

    def __len__(self):
        return 4

    def __getitem__(self, i):
        return self.transform(tv_tensors.Image(_image((), torch.uint8, seed=i))), i


def test_dataloader_workers():
    layer = tnn.ColorQuantizer(colors=3)
    loader = DataLoader(_Images(layer), batch_size=2, num_workers=2)
    batches = list(loader)
    got = torch.cat([b for b, _ in batches])
    want = torch.stack([layer(_image((), torch.uint8, seed=i)) for i in range(4)])
    assert torch.equal(got, want)
    # and on the batch after the loader, as on a GPU
    assert torch.equal(layer(torch.stack([_image(seed=i) for i in range(4)])), want)


def test_no_grad_and_inference_mode():
    x = _image((2,), torch.float32)
    want = tnn.ColorQuantizer(colors=3)(x)
    with torch.no_grad():
        assert torch.equal(tnn.ColorQuantizer(colors=3)(x), want)
    with torch.inference_mode():
        assert torch.equal(tnn.ColorQuantizer(colors=3)(x), want)
        out = tnn.PaletteQuantizer(PALETTE)(x)
    assert torch.equal(out, tp.apply_palette(x, PALETTE))


# --------------------------------------------------------------------------- PaletteQuantizer


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_palette_quantizer_equals_function(dtype, batch, device):
    x = _image(batch, dtype, device=device)
    layer = tnn.PaletteQuantizer(PALETTE).to(device)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.equal(out, tp.apply_palette(x, PALETTE.to(device)))
    assert repr(layer) == "PaletteQuantizer(colors=5, space='lab', straight_through=True)"


def test_palette_quantizer_buffer_state_dict_and_to():
    layer = tnn.PaletteQuantizer(PALETTE, space="oklab")
    assert "palette" in dict(layer.named_buffers())
    state = layer.state_dict()
    other = tnn.PaletteQuantizer(PALETTE[:2], space="oklab")  # another K: loads all the same
    other.load_state_dict(state)
    assert torch.equal(other.palette, PALETTE)
    empty = tnn.PaletteQuantizer(space="oklab")
    empty.load_state_dict(state)
    x = _image((2,), torch.float32)
    assert torch.equal(empty(x), layer(x))
    moved = layer.to(torch.float64)
    assert moved.palette.dtype == torch.float64
    with pytest.raises(RuntimeError, match="no palette"):
        tnn.PaletteQuantizer()(x)


def test_palette_quantizer_accepts_palette_namedtuple():
    pal = tp.Palette(PALETTE, torch.full((5,), 0.2))
    assert torch.equal(tnn.PaletteQuantizer(pal).palette, PALETTE)


def test_straight_through_gradient_is_identity():
    x = _image((2,), torch.float64).requires_grad_()
    out = tnn.PaletteQuantizer(PALETTE)(x)
    assert torch.equal(out.detach(), tp.apply_palette(x.detach(), PALETTE))
    g = torch.randn_like(x)
    out.backward(g)
    assert torch.equal(x.grad, g)
    # without straight-through the quantizer is a constant: no gradient reaches the input
    y = tnn.PaletteQuantizer(PALETTE, straight_through=False)(x)
    assert not y.requires_grad


def test_straight_through_in_a_model_backward():
    torch.manual_seed(0)
    conv1, conv2 = torch.nn.Conv2d(3, 3, 3, padding=1), torch.nn.Conv2d(3, 2, 3, padding=1)
    quant = tnn.PaletteQuantizer(PALETTE)
    model = torch.nn.Sequential(conv1, torch.nn.Sigmoid(), quant, conv2)
    x = _image((2,), torch.float32)
    model(x).square().mean().backward()
    got = conv1.weight.grad.clone()
    assert got.abs().sum() > 0
    # reference: gradient of the loss at the quantized point, passed through unchanged
    h = torch.sigmoid(conv1(x))
    q = tp.apply_palette(h.detach(), PALETTE).requires_grad_()
    (g_q,) = torch.autograd.grad(conv2(q).square().mean(), q)
    (want,) = torch.autograd.grad(h, conv1.weight, g_q)
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------- fit


def test_fit_flat_colors_gives_them_back():
    image = _flat_colors(PALETTE)
    layer = tnn.PaletteQuantizer.fit(image, colors=5)
    assert layer.palette.shape == (5, 3)
    # every stripe is one flat colour, so each is a bin's exact mean and a cluster on its own
    got = layer.palette[torch.cdist(PALETTE, layer.palette).argmin(1)]
    torch.testing.assert_close(got, PALETTE, atol=2e-3, rtol=0)
    assert torch.equal(layer(image), tp.apply_palette(image, layer.palette))


def test_fit_streaming_equals_one_batch_and_ignores_order():
    images = torch.stack([_image((), torch.uint8, size=16, seed=i) for i in range(6)])
    whole = tnn.PaletteQuantizer.fit(images, colors=6).palette
    loader = DataLoader(list(zip(images, range(6))), batch_size=4)  # (images, labels) batches
    assert torch.equal(tnn.PaletteQuantizer.fit(loader, colors=6).palette, whole)
    shuffled = [images[[5, 1]], images[[3]], images[[0, 2, 4]].float() / 255]
    assert torch.equal(tnn.PaletteQuantizer.fit(shuffled, colors=6).palette, whole)
    # refit in place keeps the layer's settings and device
    layer = tnn.PaletteQuantizer(PALETTE, space="lab")
    assert layer.fit(images, colors=6) is layer
    assert torch.equal(layer.palette, whole)


def test_fit_ignores_alpha_zero_and_max_pixels():
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    rgb = _flat_colors(colors)
    alpha = torch.ones(1, *rgb.shape[1:])
    alpha[..., 12:] = 0  # the green stripe is transparent
    layer = tnn.PaletteQuantizer.fit(torch.cat([rgb, alpha]), colors=2)
    assert torch.cdist(layer.palette, colors[2:]).min() > 0.5
    sub = tnn.PaletteQuantizer.fit(_image((3,), size=16), colors=4, max_pixels=64)
    assert sub.palette.shape == (4, 3)


def test_fit_errors():
    with pytest.raises(ValueError, match="images_or_loader"):
        tnn.PaletteQuantizer.fit([], colors=2)
    with pytest.raises(ValueError, match="colors"):
        tnn.PaletteQuantizer.fit(_flat_colors(PALETTE[:2]), colors=3)
    with pytest.raises(ValueError, match="colors"):
        tnn.PaletteQuantizer.fit(_image(), colors=0)
    with pytest.raises(ValueError, match="channels"):
        tnn.PaletteQuantizer.fit(torch.zeros(1, 4, 4), colors=2)


def _fit_rank(rank, world, port, images, out):
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(tnn.PaletteQuantizer.fit(images[rank::world], colors=5).palette, out[rank])
    finally:
        dist.destroy_process_group()


def test_fit_distributed_all_reduces(tmp_path):
    import torch.multiprocessing as mp

    images = torch.stack([_image((), torch.uint8, size=16, seed=i) for i in range(5)])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = [str(tmp_path / f"rank{r}.pt") for r in range(2)]
    # spawn, not fork: gloo deadlocks in children forked from a process with live threads
    mp.spawn(_fit_rank, args=(2, port, images, out), nprocs=2)
    single = tnn.PaletteQuantizer.fit(images, colors=5).palette
    for path in out:
        assert torch.equal(torch.load(path), single)


# --------------------------------------------------------------------------- augmentation


def test_random_color_reduction_reproducible_and_per_image():
    # issue 12: draws come from make_params(flat_inputs) (v2 API) and a batch of mixed k is one
    # batched call, so an image no longer equals reduce_colors(image, k) bit for bit: it keeps
    # at most its own k colours and about the same quality.
    aug = tnn.RandomColorReduction(colors=(2, 6), p=0.7)
    x = _image((8,), torch.uint8, size=16)
    torch.manual_seed(3)
    params = aug.make_params([x])
    apply, k = params["apply"], params["k"]
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(aug(x), a)
    assert len(set(k[apply].tolist())) > 1  # different images got different k
    for i in range(8):
        if not apply[i]:
            assert torch.equal(a[i], x[i])
            continue
        assert _n_colors(a[i]) <= k[i]
        ref = tp.reduce_colors(x[i], int(k[i]))
        assert _mean_de(a[i], x[i]) < _mean_de(ref, x[i]) * 1.15 + 0.5


def _mean_de(out, ref):
    f = (lambda t: t.float() / 255) if ref.dtype == torch.uint8 else (lambda t: t.float())
    return float(tp.delta_e(f(out).movedim(-3, -1), f(ref).movedim(-3, -1)).mean())


def test_random_color_reduction_p_and_generator():
    x = _image((2, 3), torch.float32)
    assert torch.equal(tnn.RandomColorReduction(p=0.0)(x), x)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = tnn.RandomColorReduction(colors=4, p=1.0, generator=g1)(x)
    b = tnn.RandomColorReduction(colors=4, p=1.0, generator=g2)(x)
    assert torch.equal(a, b) and torch.equal(a, tp.reduce_colors(x, 4))
    assert repr(tnn.RandomColorReduction()) == (
        "RandomColorReduction(colors=(2, 64), p=0.5, space='lab', dither='none')"
    )


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make",
    [
        lambda: tnn.ColorQuantizer(colors=3),
        lambda: tnn.PaletteQuantizer(PALETTE),
        lambda: tnn.RandomColorReduction(p=1.0),
    ],
)
def test_bad_images(make):
    layer = make()
    with pytest.raises(ValueError, match="channels"):
        layer(torch.zeros(2, 1, 4, 4, dtype=torch.uint8))  # grey
    with pytest.raises(TypeError, match="dtype"):
        layer(torch.zeros(3, 4, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="Tensor"):
        layer([[0.0]])


@pytest.mark.parametrize("colors", [0, -1, (0, 4), (8, 2), (300, 2)])
def test_bad_colors(colors):
    with pytest.raises(ValueError, match="colors"):
        if isinstance(colors, tuple):
            tnn.RandomColorReduction(colors=colors)
        else:
            tnn.ColorQuantizer(colors=colors)


def test_more_than_256_colours():
    """No 256 cap: ImageGPT's 512-colour palette fits, and indices go past 255."""
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(0),
                           dtype=torch.uint8)
    layer = tnn.PaletteQuantizer.fit(images, colors=512)
    assert layer.palette.shape == (512, 3)
    assert int(layer.indices(images).max()) > 255
    assert tnn.ColorQuantizer(colors=300).colors == 300


def test_bad_settings():
    with pytest.raises(TypeError, match="colors"):
        tnn.ColorQuantizer(colors=2.5)
    with pytest.raises(ValueError, match="space"):
        tnn.ColorQuantizer(space="hsv")
    with pytest.raises(ValueError, match="dither"):
        tnn.PaletteQuantizer(PALETTE, dither="floyd")
    with pytest.raises(ValueError, match="p"):
        tnn.RandomColorReduction(p=1.5)
    with pytest.raises(ValueError, match="palette"):
        tnn.PaletteQuantizer(torch.rand(4, 4))
    with pytest.raises(ValueError, match="palette"):
        tnn.PaletteQuantizer(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="palette"):
        tnn.PaletteQuantizer(torch.rand(0, 3))  # issue 12: any K >= 1 (257 is fine now)
    with pytest.raises(ValueError, match="temperature"):
        tnn.PaletteQuantizer(PALETTE, temperature=0.0)
    with pytest.raises(TypeError, match="palette"):
        tnn.PaletteQuantizer(torch.zeros(2, 3, dtype=torch.int64))


# --------------------------------------------------------------------------- compile, GPU


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_cuda_matches_cpu(dtype):
    x = _image((4,), dtype, size=16)
    # the same exact assignment on both devices; palettes may differ by float rounding only
    cq = tnn.ColorQuantizer(colors=4, assign="exact")
    got, want = cq(x.cuda()).cpu(), cq(x)
    assert (got.double() - want.double()).abs().mean() < (2 if dtype == torch.uint8 else 2 / 255)
    fast = tnn.ColorQuantizer(colors=4)(x.cuda())  # the GPU default (look-up table assignment)
    assert fast.shape == x.shape and fast.dtype == x.dtype and fast.is_cuda
    assert all(_n_colors(img) <= 4 for img in fast)
    pq = tnn.PaletteQuantizer(PALETTE)
    assert torch.equal(pq.cuda()(x.cuda()).cpu(), pq.cpu()(x))
    fit_gpu = tnn.PaletteQuantizer.fit(x.cuda(), colors=4).palette.cpu()
    fit_cpu = tnn.PaletteQuantizer.fit(x, colors=4).palette
    torch.testing.assert_close(fit_gpu, fit_cpu, atol=1e-2, rtol=0)


def _host_syncs(fn) -> int:
    """How many host-device synchronisations ``fn()`` makes (CUDA sync debug mode)."""
    import warnings

    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.cuda
def test_cuda_no_host_sync_per_image():
    # A batch of 64 images must cost no more syncs than a batch of 2 plus a few k-means checks
    # (convergence is checked every few Lloyd steps, never per image).
    small = _image((2,), torch.uint8, size=32).cuda()
    big = _image((64,), torch.uint8, size=32).cuda()
    layer = tnn.ColorQuantizer(colors=8)
    layer(small)  # warm-up (lazy initialisation may sync)
    n_small, n_big = _host_syncs(lambda: layer(small)), _host_syncs(lambda: layer(big))
    assert n_big < 64, f"{n_big} host syncs for 64 images"
    assert n_big <= n_small + 16, (n_small, n_big)


def test_dither_strength_in_every_layer():
    """Each layer takes ``dither_strength`` (0..1, checked, named in errors, shown in the repr
    when not 1) and quantizes as the functions do at that strength."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 12, 10, generator=g)
    for make in (lambda s: tnn.PaletteQuantizer(PALETTE, dither="ordered", dither_strength=s),
                 lambda s: tnn.ColorQuantizer(colors=3, dither="ordered", dither_strength=s),
                 lambda s: tnn.RandomColorReduction(colors=3, p=1.0, dither="ordered",
                                                    dither_strength=s)):
        assert "dither_strength=0.25" in repr(make(0.25))
        assert "dither_strength" not in repr(make(1.0))
        for bad in (-0.1, 1.5, float("nan")):
            with pytest.raises(ValueError, match="dither_strength"):
                make(bad)
        with pytest.raises(TypeError, match="dither_strength"):
            make("half")
    want = tp.reduce_colors(x, 3, dither="ordered", dither_strength=0.25)
    assert torch.equal(tnn.ColorQuantizer(colors=3, dither="ordered", dither_strength=0.25)(x),
                       want)
    aug = tnn.RandomColorReduction(colors=3, p=1.0, dither="ordered", dither_strength=0.25)
    assert torch.equal(aug(x), want)
    pq = tnn.PaletteQuantizer(PALETTE, dither="ordered", dither_strength=0.25)
    want = tp.apply_palette(x, PALETTE, dither="ordered", dither_strength=0.25)
    assert torch.equal(pq(x), want)
    out, idx = pq.quantize_with_indices(x)
    assert torch.equal(out, want) and torch.equal(
        idx.long(), tp.palette_indices(x, PALETTE, dither="ordered", dither_strength=0.25))
    cq = tnn.ColorQuantizer(colors=3, dither="ordered", dither_strength=0.25)
    out, idx, pal = cq.quantize_with_indices(x)
    assert torch.equal(out, tp.reduce_colors(x, 3, dither="ordered", dither_strength=0.25))
