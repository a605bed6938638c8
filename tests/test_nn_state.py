"""Layers in training loops (issue 23): resuming keeps the optimizer's palette, settings in
the state, temperature per space, hard forward / soft backward, one draw per video clip, the
range warning, and autocast-safe palette / kmeans / fit."""

from __future__ import annotations

import warnings

import pytest
import torch
from torchvision import tv_tensors

import torchpalette as tp
from torchpalette import nn as tnn
from torchpalette.fit import fit_palette

PALETTE = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.9, 0.1, 0.1], [0.1, 0.6, 0.2]])


def _x(seed=0, shape=(2, 3, 8, 8)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_load_state_dict_keeps_the_optimizers_parameter():
    trained = tnn.PaletteQuantizer(PALETTE.clone(), learnable=True)
    with torch.no_grad():
        trained.palette.add_(0.05).clamp_(0, 1)
    layer = tnn.PaletteQuantizer(4, learnable=True)  # K known up front: a Parameter now
    param = layer.palette
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer.load_state_dict(trained.state_dict())
    assert layer.palette is param and torch.equal(param, trained.palette)
    before = param.detach().clone()
    opt.zero_grad()
    layer(_x().requires_grad_()).sum().backward()
    opt.step()
    assert not torch.equal(before, layer.palette.detach())  # the optimizer still trains it


def test_another_k_raises_for_a_learnable_palette_and_resizes_a_fixed_one():
    state = tnn.PaletteQuantizer(PALETTE[:3], learnable=True).state_dict()
    with pytest.raises(ValueError, match=r"palette: expected shape \[4, 3\].*optimizer"):
        tnn.PaletteQuantizer(PALETTE.clone(), learnable=True).load_state_dict(state)
    fixed = tnn.PaletteQuantizer(PALETTE.clone())
    fixed.load_state_dict(tnn.PaletteQuantizer(PALETTE[:3]).state_dict())
    assert fixed.palette.shape == (3, 3)


def test_learnable_and_settings_travel_in_the_state():
    saved = tnn.PaletteQuantizer(PALETTE.clone(), learnable=True, temperature=0.5,
                                 hard_forward=True)
    empty = tnn.PaletteQuantizer()  # built without palette: loads into a working layer
    empty.load_state_dict(saved.state_dict())
    assert isinstance(empty.palette, torch.nn.Parameter) and empty.learnable
    assert (empty.temperature, empty.hard_forward) == (0.5, True)
    assert [n for n, _ in empty.named_parameters()] == ["palette"]
    x = _x()
    assert torch.equal(empty.eval()(x), saved.eval()(x))


def test_temperature_one_is_soft_in_every_space():
    x = torch.linspace(0, 1, 512).expand(1, 3, 1, 512)  # a grey ramp: black-white boundary
    for space in ("lab", "oklab", "srgb"):
        hard = tnn.PaletteQuantizer(PALETTE, space=space).eval()(x)
        soft = tnn.PaletteQuantizer(PALETTE, space=space, temperature=1.0).train()(x)
        diff = (soft - hard).abs()
        assert float(diff.amax()) > 1e-2  # soft near boundaries...
        assert float((diff < 1e-3).float().mean()) > 0.3  # ...hard far from them


def test_hard_forward_soft_backward():
    x = _x(2).requires_grad_()
    layer = tnn.PaletteQuantizer(PALETTE.clone(), learnable=True, temperature=1.0,
                                 hard_forward=True)
    out = layer(x)
    assert torch.equal(out.detach(), layer.eval()(x).detach())  # training sees eval's output
    out.sum().backward()
    soft = tnn.PaletteQuantizer(PALETTE.clone(), learnable=True, temperature=1.0)
    y = x.detach().clone().requires_grad_()
    soft(y).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)  # the soft assignment's gradient
    torch.testing.assert_close(layer.palette.grad, soft.palette.grad)


def test_quantize_with_indices_is_one_search_of_both():
    layer = tnn.PaletteQuantizer(PALETTE)
    x = _x(3, (2, 4, 8, 8))  # RGBA: alpha passes through
    out, idx = layer.quantize_with_indices(x)
    assert torch.equal(out, layer(x)) and torch.equal(idx, layer.indices(x))


def test_one_draw_per_video_clip_by_default():
    video = tv_tensors.Video(_x(4, (3, 5, 3, 16, 16)))
    aug = tnn.RandomColorReduction(colors=(2, 64), p=1.0)
    torch.manual_seed(0)
    k = aug.make_params([video])["k"].view(3, 5)
    assert bool((k == k[:, :1]).all()) and len(k[:, 0].unique()) > 1  # per clip, not batch
    out = aug(video)
    assert isinstance(out, tv_tensors.Video)
    n = [len(out[0, f].flatten(1).unique(dim=1).T) for f in range(5)]
    assert len(set(n)) == 1  # the same k on every frame: no flicker
    per_frame = tnn.RandomColorReduction(colors=(2, 64), p=1.0, per_frame=True)
    torch.manual_seed(0)
    assert len(per_frame.make_params([video])["k"].view(3, 5)[0].unique()) > 1
    plain = tnn.RandomColorReduction(colors=(2, 64), p=1.0)  # plain tensors: per image
    torch.manual_seed(0)
    assert len(plain.make_params([video.as_subclass(torch.Tensor)])["k"].unique()) > 3


def test_far_out_of_range_floats_warn_once_then_clamp():
    layer = tnn.PaletteQuantizer(PALETTE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer(_x() * 255)
        out = layer(_x() * 255)
        layer(_x())  # in range: nothing to say
    msgs = [str(w.message) for w in caught if "far outside" in str(w.message)]
    assert len(msgs) == 1 and "clamped" in msgs[0]
    assert torch.equal(out, layer(torch.ones(2, 3, 8, 8)))  # clamped to white
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tnn.PaletteQuantizer(PALETTE)(_x() * 1.2 - 0.1)  # slightly out: clamped silently


def test_autocast_kmeans_palette_fit_equal_float32():
    g = torch.Generator().manual_seed(0)
    pts, img = torch.rand(2, 400, 3, generator=g), torch.rand(2, 3, 24, 24, generator=g)
    ref = (tp.kmeans(pts, 8, generator=torch.Generator().manual_seed(1)), tp.palette(img, 8),
           fit_palette(img, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = (tp.kmeans(pts, 8, generator=torch.Generator().manual_seed(1)),
               tp.palette(img, 8), fit_palette(img, 8))
    for a, b in zip(ref[0], got[0], strict=True):
        assert torch.equal(a, b)
    assert torch.equal(ref[1].colors, got[1].colors)
    assert torch.equal(ref[1].weights, got[1].weights)
    assert torch.equal(ref[2], got[2])


def test_color_quantizer_output_and_indices_from_one_call():
    x = (_x(5, (2, 3, 12, 12)) * 255).round().to(torch.uint8)
    layer = tnn.ColorQuantizer(colors=4)
    out, idx, pal = layer.quantize_with_indices(x)
    assert torch.equal(out, layer(x)) and idx.dtype == torch.uint8 and pal.shape == (2, 4, 3)
    assert torch.equal(tnn.PaletteQuantizer(pal[0]).indices(x[0]).long(), idx[0].long())
