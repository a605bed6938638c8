"""torchpalette.nn.DeltaELoss: the delta_e twin, reductions, gradients, images, bad arguments."""

from __future__ import annotations

import inspect

import pytest
import torch

import torchpalette as tp

METHODS = ["cie76", "cie94", "ciede2000", "cmc"]


def _images(batch=(2,), size=8, seed=0, dtype=torch.float32, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*batch, 3, size, size, generator=g, dtype=torch.float64)
    y = torch.rand(*batch, 3, size, size, generator=g, dtype=torch.float64)
    return x.to(device, dtype), y.to(device, dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
def test_equals_delta_e_mean(method, batch, device):
    x, y = _images(batch, device=device)
    loss = tp.nn.DeltaELoss(method=method)
    expect = tp.delta_e(y, x, method=method, dim=-3)  # target is the reference colour
    assert expect.shape == (*batch, 8, 8)
    torch.testing.assert_close(loss(x, y), expect.mean())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions(reduction):
    x, y = _images((2,))
    per_pixel = tp.delta_e(y, x, dim=-3)
    out = tp.nn.DeltaELoss(reduction=reduction)(x, y)
    expect = {"mean": per_pixel.mean(), "sum": per_pixel.sum(), "none": per_pixel}[reduction]
    assert out.shape == expect.shape
    torch.testing.assert_close(out, expect)


def test_lab_space_and_channel_last_colours():
    x, y = _images((2,))
    lab_x, lab_y = (tp.srgb_to_lab(t.movedim(-3, -1)) for t in (x, y))
    loss = tp.nn.DeltaELoss(space="lab", dim=-1)
    torch.testing.assert_close(loss(lab_x, lab_y), tp.nn.DeltaELoss()(x, y), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_gradients_flow_to_both_and_are_finite(method):
    x, y = _images((2,), dtype=torch.float64)
    x.requires_grad_(True)
    y.requires_grad_(True)
    loss = tp.nn.DeltaELoss(method=method)
    gx, gy = torch.autograd.grad(loss(x, y), (x, y))
    assert torch.isfinite(gx).all() and torch.isfinite(gy).all()
    assert gx.abs().sum() > 0 and gy.abs().sum() > 0
    # identical images: ΔE = 0 everywhere, a minimum, and the gradient is finite (0)
    same = x.detach().clone().requires_grad_(True)
    value = loss(same, x.detach())
    (g,) = torch.autograd.grad(value, (same,))
    assert float(value.detach()) == 0 and torch.isfinite(g).all() and g.abs().max() == 0


def test_trains_an_image_towards_a_target():
    x, target = _images((1,), size=4)
    logits = torch.logit(x.clamp(0.05, 0.95)).requires_grad_(True)
    loss_fn = tp.nn.DeltaELoss()
    opt = torch.optim.Adam([logits], lr=0.1)
    first = float(loss_fn(torch.sigmoid(logits), target).detach())
    for _ in range(50):
        loss = loss_fn(torch.sigmoid(logits), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss_fn(torch.sigmoid(logits.detach()), target)) < first / 4


def test_autocast_gives_the_float32_loss():
    x, y = _images((2,))
    expect = tp.nn.DeltaELoss(reduction="none")(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tp.nn.DeltaELoss(reduction="none")(x, y)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expect, atol=1e-4, rtol=0)


def test_defaults_shared_with_delta_e_and_repr():
    loss_params = inspect.signature(tp.nn.DeltaELoss).parameters
    fn_params = inspect.signature(tp.delta_e).parameters
    for name in ("method", "space"):
        assert loss_params[name].default == fn_params[name].default
    assert loss_params["dim"].default == -3  # images, where delta_e's colours use -1
    assert repr(tp.nn.DeltaELoss("cmc", "lab", -1, "sum")) == (
        "DeltaELoss(method='cmc', space='lab', dim=-1, reduction='sum')"
    )
    assert isinstance(tp.nn.DeltaELoss(), torch.nn.Module)
    assert "DeltaELoss" in tp.nn.__all__


@pytest.mark.parametrize(
    "kwargs, err, msg",
    [
        (dict(method="de2000"), ValueError, r"method: expected one of .*got 'de2000'"),
        (dict(space="hsv"), ValueError, r"space: expected one of \['srgb', 'lab'\], got 'hsv'"),
        (dict(dim=1.5), TypeError, "dim: expected an int, got float"),
        (dict(reduction="max"), ValueError,
         r"reduction: expected one of \['mean', 'sum', 'none'\], got 'max'"),
        (dict(reduction=None), TypeError, "reduction: expected one of"),
    ],
)
def test_bad_arguments(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        tp.nn.DeltaELoss(**kwargs)


def test_bad_input_in_forward():
    x, y = _images((2,))
    with pytest.raises(ValueError, match=r"a: expected values in \[0, 1\]"):
        tp.nn.DeltaELoss()(x, y + 1)  # the target is delta_e's a
    with pytest.raises(ValueError, match=r"b: expected shape \[..., 3, \*, \*\]"):
        tp.nn.DeltaELoss()(x.movedim(-3, -1), y)
