"""The layers in compiled and exported graphs (issue 23): one graph for any image size,
batch and palette size, DeltaELoss with dynamic shapes, a compiled train step, default
(non-strict) torch.export with dynamic B, H, W, and ONNX where onnx/onnxruntime are installed.
Compiling is slow on a small CPU machine, so these tests are few and use small images and the
``aot_eager`` backend (dynamo + AOT autograd: the tracing that recompiles or breaks)."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters
from torch.export import Dim

import torchpalette as tp
from torchpalette import nn as tnn

PALETTE = torch.tensor(
    [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.9, 0.1, 0.1], [0.1, 0.6, 0.2], [0.2, 0.3, 0.9]]
)
# 10 sizes, batches 2..4 (1 is specialised by dynamo: one extra graph at most)
SIZES = [(2 + i % 3, 12 + 4 * i, 16 + 3 * i) for i in range(10)]


def _compiled(fn):
    torch._dynamo.reset()
    counters.clear()
    return torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")


def _graphs() -> int:
    return counters["stats"]["unique_graphs"]


@pytest.mark.parametrize("dither", ["none", "floyd-steinberg"])
def test_palette_quantizer_one_graph_for_every_size(dither):
    layer = tnn.PaletteQuantizer(PALETTE, dither=dither)
    compiled = _compiled(layer)
    for b, h, w in SIZES:
        x = torch.rand(b, 3, h, w)
        assert torch.equal(compiled(x), layer(x))
        want = tp.palette_indices(x, PALETTE, dither=dither).long()
        assert torch.equal(layer.indices(x).long(), want)
    assert _graphs() == 1


def test_color_quantizer_and_reduction_one_graph_for_every_size():
    for layer in (tnn.ColorQuantizer(colors=4, dither="ordered"),
                  tnn.RandomColorReduction(colors=(2, 6), p=1.0)):
        compiled = _compiled(layer)
        for b, h, w in SIZES:
            out = compiled(torch.rand(b, 3, h, w))
            assert out.shape == (b, 3, h, w)
        assert _graphs() == 1


def test_indices_compile_fullgraph_for_every_size():
    layer = tnn.PaletteQuantizer(PALETTE)
    compiled = _compiled(layer.indices)
    for b, h, w in SIZES[:5]:
        x = torch.rand(b, 3, h, w)
        assert torch.equal(compiled(x).long(), tp.palette_indices(x, PALETTE))
    assert _graphs() == 1


def test_delta_e_loss_compiles_dynamic():
    loss = tnn.DeltaELoss()
    compiled = _compiled(loss)
    for b, h, w in SIZES[:4]:  # forward only: the train step below runs its backward
        a, t = torch.rand(b, 3, h, w), torch.rand(b, 3, h, w)
        torch.testing.assert_close(compiled(a, t), loss(a, t), rtol=1e-5, atol=1e-5)
    assert _graphs() == 1


def test_compiled_train_step_with_a_quantizer_and_delta_e_loss():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 3, 1)
    quant = tnn.PaletteQuantizer(PALETTE.clone(), learnable=True)
    loss_fn = tnn.DeltaELoss(method="cie76")  # CIEDE2000's backward takes ~40 s to compile here
    params = list(net.parameters()) + list(quant.parameters())
    opt = torch.optim.SGD(params, lr=1e-3)

    def step(x):  # forward and loss as one graph; AOT autograd compiles its backward
        return loss_fn(quant(torch.sigmoid(net(x))), x)

    compiled = _compiled(step)
    before = quant.palette.detach().clone()
    for b, h, w in SIZES[:3]:
        opt.zero_grad()
        value = compiled(torch.rand(b, 3, h, w))
        value.backward()
        assert torch.isfinite(value) and quant.palette.grad is not None
        assert net.weight.grad is not None and bool(net.weight.grad.abs().sum() > 0)
        opt.step()
    assert not torch.equal(before, quant.palette.detach())  # the palette learnt
    assert _graphs() == 1


def _ds():
    return {0: Dim("b", min=1, max=64), 2: Dim("h", min=2, max=512), 3: Dim("w", min=2, max=512)}


class _Indices(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer.indices(x)


@pytest.mark.parametrize("name", ["PaletteQuantizer", "dithered", "ColorQuantizer",
                                  "RandomColorReduction", "indices"])
def test_default_export_with_dynamic_batch_and_size(name):
    make = {
        "PaletteQuantizer": lambda: tnn.PaletteQuantizer(PALETTE),
        "dithered": lambda: tnn.PaletteQuantizer(PALETTE, dither="ordered"),
        "ColorQuantizer": lambda: tnn.ColorQuantizer(colors=4),
        "RandomColorReduction": lambda: tnn.RandomColorReduction(colors=3, p=1.0),
        "indices": lambda: _Indices(tnn.PaletteQuantizer(PALETTE)),
    }
    model = make[name]().eval()
    spec = (_ds(),) if name == "indices" else ((_ds(),),)  # v2 forward(*inputs)
    ep = torch.export.export(model, (torch.rand(2, 3, 16, 20),), dynamic_shapes=spec)
    x = torch.rand(3, 3, 24, 13)  # another batch, height and width than traced
    got = ep.module()(x)
    if name == "RandomColorReduction":
        want = tp.reduce_colors(x, 3)
    elif name == "ColorQuantizer":
        want = tp.reduce_colors(x, 4, assign="exact")
    else:
        want = model(x)
    assert got.shape == want.shape and torch.equal(got.to(want.dtype), want)


def test_onnx_export_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    layer = tnn.PaletteQuantizer(PALETTE).eval()
    for name, model in (("out", layer), ("idx", _Indices(layer))):
        path = tmp_path / f"{name}.onnx"
        spec = (_ds(),) if name == "idx" else ((_ds(),),)
        torch.onnx.export(model, (torch.rand(2, 3, 16, 20),), str(path), input_names=["x"],
                          dynamic_shapes=spec, dynamo=True)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        x = torch.rand(3, 3, 24, 13)
        (got,) = sess.run(None, {"x": x.numpy()})
        want = model(x)
        if name == "idx":
            assert (torch.from_numpy(got).long() != want.long()).float().mean() < 1e-3
        else:
            assert torch.from_numpy(got).sub(want).abs().amax() < 1e-5 or (
                torch.from_numpy(got).ne(want).any(0).float().mean() < 1e-3)


def test_dither_strength_compiles_and_equals_eager():
    """``dither_strength`` reaches the opaque dithered search of every layer: compiled ==
    eager == the function at that strength, and strength 0 is no dither."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 40), torch.linspace(0, 1, 64), indexing="ij")
    x = torch.stack([xx, yy, (xx + yy) / 2]).expand(2, -1, -1, -1)  # smooth: dithers fully
    for strength in (0.0, 0.4):
        layer = tnn.PaletteQuantizer(PALETTE, dither="floyd-steinberg", dither_strength=strength)
        want = tp.apply_palette(x, PALETTE, dither="floyd-steinberg", dither_strength=strength)
        assert torch.equal(layer(x), want)
        assert torch.equal(_compiled(layer)(x), want)
        assert torch.equal(_compiled(layer.indices)(x).long(),
                           tp.palette_indices(x, PALETTE, dither="floyd-steinberg",
                                              dither_strength=strength))
    full = tp.apply_palette(x, PALETTE, dither="floyd-steinberg")
    assert torch.equal(tnn.PaletteQuantizer(PALETTE, dither="floyd-steinberg",
                                            dither_strength=0.0)(x),
                       tp.apply_palette(x, PALETTE))
    assert not torch.equal(want, full)  # 0.4 differs from full strength
    cq = tnn.ColorQuantizer(colors=4, dither="ordered", dither_strength=0.5)
    want = tp.reduce_colors(x, 4, dither="ordered", dither_strength=0.5)
    assert torch.equal(cq(x), want) and torch.equal(_compiled(cq)(x), want)
    assert not torch.equal(want, tp.reduce_colors(x, 4, dither="ordered"))
