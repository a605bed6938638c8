"""Tests of the quantizer layers inside training pipelines (issue 12): v2 samples, gradients,
learnable palettes, autocast, torch.compile, DataLoader workers, state_dict, aliases."""

from __future__ import annotations

import warnings

import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

import torchpalette as tp
from torchpalette import nn as tnn

PALETTE = torch.tensor(
    [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.9, 0.1, 0.1], [0.1, 0.6, 0.2], [0.2, 0.3, 0.9]]
)
LAYERS = [
    ("ColorQuantizer", lambda: tnn.ColorQuantizer(colors=4)),
    ("PaletteQuantizer", lambda: tnn.PaletteQuantizer(PALETTE)),
    ("RandomColorReduction", lambda: tnn.RandomColorReduction(colors=(2, 6), p=1.0)),
]


def _image(batch=(), dtype=torch.float32, size=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (*batch, 3, size, size), generator=g, dtype=torch.uint8)
    return x if dtype == torch.uint8 else x.to(dtype) / 255


def _photo_crops(size=48):
    img = tp.read_image(_sample()).float() / 255
    spots = [(40, 200), (300, 100), (200, 300), (400, 400)]
    return torch.stack([img[:, y : y + size, x : x + size] for y, x in spots])


def _sample():
    from pathlib import Path

    return Path(tp.__file__).parent / "data" / "astronaut.jpg"


def _mean_de(out, ref):
    return float(tp.delta_e(out.movedim(-3, -1), ref.movedim(-3, -1)).mean())


# --------------------------------------------------------------------------- 1. v2 samples


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_dict_sample_routes_image_and_passes_the_rest(name, make):
    layer = make()
    img = tv_tensors.Image(_image((), torch.uint8))
    mask = tv_tensors.Mask(torch.randint(0, 3, (12, 12)))
    boxes = tv_tensors.BoundingBoxes([[1, 2, 5, 6]], format="XYXY", canvas_size=(12, 12))
    sample = {"image": img, "mask": mask, "boxes": boxes, "label": 3, "meta": {"id": "a"}}
    torch.manual_seed(0)
    out = v2.Compose([layer])(sample)
    assert out["mask"] is mask and out["boxes"] is boxes
    assert out["label"] == 3 and out["meta"] == {"id": "a"}
    assert isinstance(out["image"], tv_tensors.Image) and out["image"].dtype == torch.uint8
    torch.manual_seed(0)
    assert torch.equal(out["image"], layer(img))
    # mask first, as a tuple, nested: the same image comes out, the mask untouched
    torch.manual_seed(0)
    m2, (img2, label) = layer((mask, (img, 7)))
    assert m2 is mask and label == 7 and torch.equal(img2, out["image"])


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_plain_tensors_follow_torchvisions_rule(name, make):
    layer = make()
    x, other = _image((), torch.uint8), torch.arange(5)
    torch.manual_seed(0)
    got, passed = layer(x, other)  # the first plain tensor is the image
    assert passed is other
    torch.manual_seed(0)
    assert torch.equal(got, layer(x))
    # with an explicit Image in the sample, plain tensors pass through untouched
    plain = _image((), torch.uint8, seed=1)
    assert layer({"image": tv_tensors.Image(x), "extra": plain})["extra"] is plain


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_pil_in_pil_out(name, make):
    layer = make()
    x = _image((), torch.uint8)
    pil = PIL.Image.fromarray(x.permute(1, 2, 0).numpy())
    torch.manual_seed(0)
    out = layer(pil)
    assert isinstance(out, PIL.Image.Image) and out.size == pil.size and out.mode == "RGB"
    torch.manual_seed(0)
    want = layer(x)
    assert torch.equal(torch.from_numpy(__import__("numpy").array(out)).permute(2, 0, 1), want)


def test_video_and_no_image_sample():
    video = tv_tensors.Video(_image((2,), torch.uint8))
    out = tnn.PaletteQuantizer(PALETTE)(video)
    assert isinstance(out, tv_tensors.Video) and out.shape == video.shape
    with pytest.raises(TypeError, match="Tensor"):
        tnn.PaletteQuantizer(PALETTE)({"label": 3})


# --------------------------------------------------------------------------- 2. gradients


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_straight_through_passes_the_gradient_unchanged(name, make):
    layer = make()
    x = (_image((2,), torch.float32) * 1.2 - 0.1).requires_grad_()  # out of range: clamped
    torch.manual_seed(0)
    out = layer(x)
    torch.manual_seed(0)
    assert torch.equal(out.detach(), layer(x.detach().clamp(0, 1)))
    g = torch.randn_like(x)
    out.backward(g)
    assert torch.equal(x.grad, g)


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_straight_through_false_is_a_constant(name, make):
    layer = make()
    layer.straight_through = False
    x = _image((2,), torch.float32).requires_grad_()
    assert not layer(x).requires_grad


def test_functions_accept_inputs_that_require_grad():
    x = _image((2,), torch.float32).requires_grad_()
    pal = PALETTE.clone().requires_grad_()
    out = tp.apply_palette(x, pal)
    assert torch.equal(out.detach(), tp.apply_palette(x.detach(), PALETTE))
    out.sum().backward()
    used = tp.palette_indices(x.detach(), PALETTE).unique()
    assert (pal.grad[used].abs().sum(-1) > 0).all()
    reduced = tp.reduce_colors(x, 3)
    assert not reduced.requires_grad and torch.equal(reduced, tp.reduce_colors(x.detach(), 3))


# --------------------------------------------------------------------------- 3. learnable


def test_learnable_palette_gets_gradients_on_used_colours():
    x = _image((2,), torch.float32).requires_grad_()
    far = torch.cat([PALETTE, torch.tensor([[0.5, 0.5, 0.5]])])
    layer = tnn.PaletteQuantizer(far, learnable=True)
    assert isinstance(layer.palette, torch.nn.Parameter)
    assert [n for n, _ in layer.named_parameters()] == ["palette"]
    out = layer(x)
    g = torch.randn_like(x)
    out.backward(g)
    assert torch.equal(x.grad, g)  # straight-through to the input
    used = layer.indices(x.detach()).long().unique()
    grad_norm = layer.palette.grad.abs().sum(-1)
    assert (grad_norm[used] > 0).all()
    unused = torch.ones(6, dtype=torch.bool)
    unused[used] = False
    assert (grad_norm[unused] == 0).all()
    # straight_through=False: gradients to the palette only
    x.grad = None
    layer2 = tnn.PaletteQuantizer(far, learnable=True, straight_through=False)
    layer2(x).backward(g)
    assert x.grad is None and layer2.palette.grad.abs().sum() > 0


def test_indices_any_k():
    pal = torch.rand(300, 3, generator=torch.Generator().manual_seed(0))
    layer = tnn.PaletteQuantizer(pal)
    x = _image((2, 3), torch.float32)
    idx = layer.indices(x)  # the dtype tp.quantize gives 300 colours
    assert idx.shape == (2, 3, 12, 12) and idx.dtype == torch.int16 and idx.max() < 300
    assert torch.equal(idx.long(), tp.palette_indices(x, pal).long())
    assert layer.indices(x, index_dtype=torch.int64).dtype == torch.int64
    assert tnn.PaletteQuantizer(pal[:256]).indices(x).dtype == torch.uint8
    with pytest.raises(ValueError, match="index_dtype"):
        layer.indices(x, index_dtype=torch.uint8)
    assert torch.equal(layer(x), tp.apply_palette(x, pal))


def test_soft_assignment_in_training_hard_in_eval():
    x = _image((2,), torch.float32).requires_grad_()
    layer = tnn.PaletteQuantizer(PALETTE, learnable=True, temperature=5.0)
    soft = layer(x)
    hard = tp.apply_palette(x.detach(), PALETTE)
    assert not torch.equal(soft.detach(), hard) and soft.requires_grad
    soft.square().mean().backward()
    assert (layer.palette.grad.abs().sum(-1) > 0).all()  # every colour gets a gradient
    assert x.grad is not None and x.grad.abs().sum() > 0
    layer.eval()
    assert torch.equal(layer(x.detach()), hard)
    # a tiny temperature tends to the hard assignment
    cold = tnn.PaletteQuantizer(PALETTE, temperature=1e-3)(x.detach())
    torch.testing.assert_close(cold, hard, atol=1e-4, rtol=0)


def test_training_a_palette_lowers_delta_e():
    crops = _photo_crops()
    palette = torch.rand(8, 3, generator=torch.Generator().manual_seed(0))
    layer = tnn.PaletteQuantizer(palette, learnable=True)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)

    def delta_e00():
        with torch.no_grad():
            return _mean_de(layer.eval()(crops), crops)

    before = delta_e00()
    layer.train()
    for _ in range(40):
        opt.zero_grad()
        (layer(crops) - crops).square().mean().backward()
        opt.step()
    after = delta_e00()
    assert after < before * 2 / 3, (before, after)


# --------------------------------------------------------------------------- 5. autocast


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_autocast_bf16_equals_float32(name, make):
    # palettes and distances are float32 inside: outputs equal the float32 run (tolerance 0)
    layer = make()
    x = _image((2,), torch.float32)
    torch.manual_seed(0)
    want = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.manual_seed(0)
        got = layer(x)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_autocast_functions_and_soft_assignment():
    x = _image((2,), torch.float32)
    soft = tnn.PaletteQuantizer(PALETTE, temperature=5.0)
    want = [tp.apply_palette(x, PALETTE), tp.reduce_colors(x, 4), soft(x)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = [tp.apply_palette(x, PALETTE), tp.reduce_colors(x, 4), soft(x)]
        half = tp.apply_palette(x.bfloat16(), PALETTE)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    torch.testing.assert_close(got[2], want[2], atol=1e-6, rtol=0)
    assert half.dtype == torch.bfloat16


# --------------------------------------------------------------------------- 6. compile


def _compiled(layer):
    # aot_eager: dynamo's full trace and autograd, without inductor's slow C++ builds on CI
    return torch.compile(layer, fullgraph=True, dynamic=True, backend="aot_eager")


def test_compile_palette_quantizer_fullgraph_forward_backward():
    layer = tnn.PaletteQuantizer(PALETTE, learnable=True)
    compiled = _compiled(layer)
    for b in (4, 3):  # the last, partial batch
        x = _image((b,), torch.float32, seed=b).requires_grad_()
        out = compiled(x)
        assert torch.equal(out, layer(x))
        g = torch.randn_like(x)
        layer.palette.grad = None
        out.backward(g)
        assert torch.equal(x.grad, g)
        want = torch.autograd.grad(layer(x), layer.palette, g)[0]
        torch.testing.assert_close(layer.palette.grad, want)


@pytest.mark.parametrize("name,make", LAYERS[::2], ids=[n for n, _ in LAYERS[::2]])
def test_compile_kmeans_layers_fullgraph_batch_change(name, make):
    layer = make()
    compiled = _compiled(layer)
    for b in (4, 3):
        x = _image((b,), torch.float32, seed=b)
        torch.manual_seed(b)
        got = compiled(x)
        torch.manual_seed(b)
        assert torch.equal(got, layer(x))


def test_compile_no_recompile_per_drawn_k():
    layer = tnn.RandomColorReduction(colors=(2, 16), p=1.0)
    compiled = _compiled(layer)
    compiled(_image((4,), torch.float32))
    with torch.compiler.set_stance("fail_on_recompile"):
        for seed in range(3):
            torch.manual_seed(seed)
            compiled(_image((3 + seed,), torch.float32))


# ------------------------------------------------------------------- checks and clamping


@pytest.mark.parametrize("name,make", LAYERS, ids=[n for n, _ in LAYERS])
def test_layers_clamp_functions_raise_nan_raises(name, make):
    layer = make()
    x = _image((2,), torch.float32) * 1.24 - 0.11  # a bicubic resize overshoots so
    torch.manual_seed(0)
    out = layer(x)
    torch.manual_seed(0)
    assert torch.equal(out, layer(x.clamp(0, 1)))
    with pytest.raises(ValueError, match="range|values in"):
        tp.apply_palette(x, PALETTE)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(x)


def test_set_checks_turns_value_checks_off():
    x = _image((2,), torch.float32) * 1.2
    previous = tp.set_checks(False)
    try:
        tp.apply_palette(x, PALETTE)  # no range check, no host read-back
    finally:
        tp.set_checks(previous)
    with pytest.raises(ValueError):
        tp.apply_palette(x, PALETTE)


# --------------------------------------------------------------------------- 7. workers


class _Same(Dataset):
    def __init__(self, transform):
        self.transform, self.image = transform, _image((), torch.uint8, size=16)

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return self.transform(self.image)


@pytest.mark.parametrize("generator", [False, True])
def test_workers_draw_independently_and_reproducibly(generator):
    g = torch.Generator().manual_seed(5) if generator else None
    aug = tnn.RandomColorReduction(colors=(2, 32), p=1.0, generator=g)

    def run():
        torch.manual_seed(0)
        loader = DataLoader(_Same(aug), batch_size=None, num_workers=2)
        return torch.stack(list(loader))

    a = run()
    # items 0 and 1 are each the first draw of a different worker
    assert not torch.equal(a[0], a[1]) or not torch.equal(a[2], a[3])
    if not generator:
        assert torch.equal(run(), a)  # torch.manual_seed reproduces the run


def test_same_on_batch_and_one_warning():
    flat = torch.zeros(6, 3, 8, 8)  # one colour per image: fewer than any k >= 2
    flat[:, 0] = torch.linspace(0, 1, 6).view(6, 1, 1)
    aug = tnn.RandomColorReduction(colors=(2, 8), p=1.0, same_on_batch=True)
    params = aug.make_params([flat])
    assert params["k"].unique().numel() == 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            aug(flat)
            tnn.ColorQuantizer(colors=4)(flat[:1])
    assert sum("RandomColorReduction" in str(w.message) for w in caught) == 1


def test_mixed_k_is_one_call_close_to_reduce_colors():
    crops = _photo_crops(32)
    k = torch.tensor([2, 5, 9, 16])
    from torchpalette.nn._ops import reduce_at_k_op

    out, _ = reduce_at_k_op(crops, k, "lab", "none", 0)
    for i in range(4):
        assert out[i].flatten(1).unique(dim=1).shape[1] <= k[i]
        ref = tp.reduce_colors(crops[i], int(k[i]))
        assert _mean_de(out[i], crops[i]) < _mean_de(ref, crops[i]) * 1.1 + 0.2


def test_mixed_k_uses_the_one_kmeans_engine():
    # At one k for every image, palettes_at_k is _kmeans.cluster on the same binned points
    # and seed (same seeding, same Lloyd steps, same empty-cluster rule); a masked slot never
    # takes a pixel.
    from torchpalette import _kmeans
    from torchpalette._bins import bin_pixels
    from torchpalette._spaces import from_space, to_space
    from torchpalette.nn._ops import palettes_at_k

    rgb = _photo_crops(24).reshape(4, 3, -1)
    k = torch.full((4,), 6)
    colors, _, labels, _ = palettes_at_k(rgb, None, k, 6, "lab", seed=3)
    pts, w, _ = bin_pixels(rgb, None, 5)
    res, _ = _kmeans.cluster(to_space(pts, "lab"), 6, weights=w,
                             generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(colors, from_space(res.centroids, "lab"), atol=1e-6, rtol=0)
    mixed = torch.tensor([2, 6, 3, 6])
    _, _, labels, _ = palettes_at_k(rgb, None, mixed, 6, "lab", seed=3)
    assert bool((labels < mixed.view(4, 1)).all())


# --------------------------------------------------------------------------- 8. state


def test_state_dict_round_trips_settings():
    layer = tnn.PaletteQuantizer(PALETTE, space="oklab", dither="ordered", temperature=2.0)
    other = tnn.PaletteQuantizer(PALETTE[:2])
    other.load_state_dict(layer.state_dict())
    assert (other.space, other.dither, other.temperature) == ("oklab", "ordered", 2.0)
    x = _image((2,), torch.float32)
    assert torch.equal(other.eval()(x), layer.eval()(x))
    cq = tnn.ColorQuantizer(colors=5, space="srgb", seed=3)
    cq2 = tnn.ColorQuantizer()
    cq2.load_state_dict(cq.state_dict())
    assert torch.equal(cq2(x), cq(x)) and repr(cq2) == repr(cq)
    rcr = tnn.RandomColorReduction(colors=(3, 9), p=0.3, same_on_batch=True)
    rcr2 = tnn.RandomColorReduction()
    rcr2.load_state_dict(rcr.state_dict())
    assert repr(rcr2) == repr(rcr)
    dq = tnn.ColorQuantizer(colors=4, dither="floyd-steinberg", dither_strength=0.3)
    dq2 = tnn.ColorQuantizer(dither="floyd-steinberg")
    dq2.load_state_dict(dq.state_dict())
    assert dq2.dither_strength == 0.3 and torch.equal(dq2(x), dq(x))
    learn = tnn.PaletteQuantizer(learnable=True)  # a buffer's state loads into a Parameter
    learn.load_state_dict(layer.state_dict())
    assert isinstance(learn.palette, torch.nn.Parameter) and torch.equal(learn.palette, PALETTE)


def test_strict_load_of_empty_state_raises():
    with pytest.raises(RuntimeError, match="palette"):
        tnn.PaletteQuantizer().load_state_dict({})
    with pytest.raises(RuntimeError, match="Missing"):
        tnn.ColorQuantizer().load_state_dict({})
    with pytest.raises(ValueError, match="settings"):
        tnn.ColorQuantizer().set_extra_state({"bogus": 1})


def test_fit_key_for_dict_samples():
    images = torch.stack([_image((), torch.uint8, size=16, seed=i) for i in range(4)])
    loader = DataLoader([{"img": im, "label": i} for i, im in enumerate(images)], batch_size=2)
    want = tnn.PaletteQuantizer.fit(images, colors=4).palette
    assert torch.equal(tnn.PaletteQuantizer.fit(loader, colors=4, key="img").palette, want)
    with pytest.raises(ValueError, match="key"):
        tnn.PaletteQuantizer.fit(loader, colors=4, key="image")


# --------------------------------------------------------------------------- 9. names


def test_k_is_an_alias_of_colors():
    x = _image((2,), torch.uint8)
    assert torch.equal(tp.reduce_colors(x, k=4), tp.reduce_colors(x, 4))
    assert tnn.ColorQuantizer(k=4).colors == 4
    assert tnn.RandomColorReduction(k=(2, 5)).colors == (2, 5)
    assert tnn.PaletteQuantizer.fit(x, k=3).palette.shape == (3, 3)
    with pytest.raises(TypeError, match="alias"):
        tp.reduce_colors(x, 5, k=4)


# --------------------------------------------------------------------------- CUDA


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_equals_float32(dtype):
    x = _image((4,), torch.float32).cuda()
    for layer in (tnn.PaletteQuantizer(PALETTE).cuda(), tnn.ColorQuantizer(colors=4)):
        want = layer(x)
        with torch.autocast("cuda", dtype=dtype):
            got = layer(x)
        assert got.dtype == torch.float32 and torch.equal(got, want)
