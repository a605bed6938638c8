"""difference.py (and _ciede2000, _policy's compile policy): Sharma's reference pairs, scikit-image
agreement, properties, gradients, the channel dim, autocast, bad input, the in-place CPU kernel
and the compiled fast path's policy (the suite never compiles by default)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.color import deltaE_cie76, deltaE_ciede94, deltaE_ciede2000, deltaE_cmc, rgb2lab

import torchpalette as tp
from torchpalette import _policy as cp
from torchpalette._ciede2000 import ciede2000, ciede2000_inplace, ciede2000_rows
from torchpalette._policy import CompilePolicy

DATA = Path(__file__).parent / "data"

METHODS = ["cie76", "cie94", "ciede2000", "cmc"]
BATCHES = [(), (2,), (2, 3)]
FLOATS = [torch.float32, torch.float64]
SKIMAGE = {
    "cie76": deltaE_cie76,
    "cie94": deltaE_ciede94,
    "ciede2000": deltaE_ciede2000,
    "cmc": lambda a, b: deltaE_cmc(a, b, kL=2, kC=1),  # our default CMC is 2:1
}


def _lab(n, dtype=torch.float64, seed=0, device="cpu"):
    """Random Lab: L in [0, 100], a, b in [-128, 128) (includes out-of-gamut colours)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*n, 3, generator=g, dtype=torch.float64)
    x = x * torch.tensor([100.0, 256.0, 256.0], dtype=torch.float64) - torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64)
    return x.to(device, dtype)


# ------------------------------------------------------------------ reference values
def _sharma():
    data = np.loadtxt(DATA / "ciede2000_sharma2005.csv", delimiter=",", comments="#", skiprows=3)
    t = torch.from_numpy(data)
    return t[:, 1:4], t[:, 4:7], t[:, 7]


@pytest.mark.parametrize("dtype", FLOATS)
def test_sharma_2005_pairs(dtype, device):
    lab1, lab2, expect = _sharma()
    assert len(expect) == 34
    out = tp.delta_e(lab1.to(device, dtype), lab2.to(device, dtype), space="lab")
    assert out.dtype == dtype and out.shape == (34,)
    # the table gives 4 decimals: float64 must match to 1e-4 (half a unit plus rounding);
    # float32 carries ~1e-6 relative error on ΔE up to ~30, still well inside 1e-4 + 1e-5
    tol = 1e-4 if dtype == torch.float64 else 1.1e-4
    torch.testing.assert_close(out.cpu().double(), expect, atol=tol, rtol=0)
    # CIEDE2000 is symmetric, and the pairs include both orders of several colours
    torch.testing.assert_close(tp.delta_e(lab2.to(dtype), lab1.to(dtype), space="lab").double(), expect, atol=tol, rtol=0)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", FLOATS)
def test_matches_skimage(method, dtype):
    a, b = _lab((10_000,), seed=1), _lab((10_000,), seed=2)
    ref = torch.from_numpy(SKIMAGE[method](a.numpy(), b.numpy()))
    out = tp.delta_e(a.to(dtype), b.to(dtype), method=method, space="lab")
    assert out.dtype == dtype
    # Same formulas: float64 differs only by operation order (~1e-13 measured), so 1e-9.
    # float32: inputs are rounded to 24 bits and ~60 float32 ops follow; measured max relative
    # error 5e-6 (ΔE >= 1), so 1e-4 relative with 1e-4 absolute below ΔE = 1.
    if dtype == torch.float64:
        torch.testing.assert_close(out, ref, atol=1e-9, rtol=1e-9)
    else:
        torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_srgb_space_matches_skimage(method):
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(2000, 3, generator=g, dtype=torch.float64), torch.rand(2000, 3, generator=g, dtype=torch.float64)
    ref = SKIMAGE[method](rgb2lab(a.numpy()), rgb2lab(b.numpy()))
    torch.testing.assert_close(tp.delta_e(a, b, method=method), torch.from_numpy(ref), atol=1e-8, rtol=1e-8)


def test_weights_and_cmc_mapping():
    a, b = _lab((500,), seed=3), _lab((500,), seed=4)
    for kl, kc in [(1, 1), (2, 1), (1.5, 0.7)]:
        ref = deltaE_cmc(a.numpy(), b.numpy(), kL=kl, kC=kc)
        torch.testing.assert_close(tp.delta_e(a, b, "cmc", "lab", kL=kl, kC=kc), torch.from_numpy(ref))
    ref = deltaE_ciede94(a.numpy(), b.numpy(), kH=2, kC=0.5, kL=3)
    torch.testing.assert_close(tp.delta_e(a, b, "cie94", "lab", kL=3, kC=0.5, kH=2), torch.from_numpy(ref))
    ref = deltaE_ciede2000(a.numpy(), b.numpy(), kL=2, kC=0.5, kH=3)
    torch.testing.assert_close(tp.delta_e(a, b, "ciede2000", "lab", kL=2, kC=0.5, kH=3), torch.from_numpy(ref))
    # cie76 is plain distance and ignores the weights
    torch.testing.assert_close(tp.delta_e(a, b, "cie76", "lab", kL=5), (a - b).norm(dim=-1))


# ------------------------------------------------------------------ shapes, dtypes, devices
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_batched_equals_looped(method, batch, dtype, device):
    g = torch.Generator().manual_seed(7)
    a = torch.rand(*batch, 3, generator=g, dtype=torch.float64).to(device, dtype)
    b = torch.rand(*batch, 3, generator=g, dtype=torch.float64).to(device, dtype)
    out = tp.delta_e(a, b, method=method)
    assert out.shape == batch and out.dtype == dtype and out.device == a.device
    flat_a, flat_b = a.reshape(-1, 3), b.reshape(-1, 3)
    looped = torch.stack([tp.delta_e(x, y, method=method) for x, y in zip(flat_a, flat_b)])
    torch.testing.assert_close(out.reshape(-1), looped)


def test_broadcasting_and_dtype_promotion():
    a = torch.rand(4, 1, 3)
    b = torch.rand(5, 3, dtype=torch.float64)
    out = tp.delta_e(a, b)
    assert out.shape == (4, 5) and out.dtype == torch.float64
    torch.testing.assert_close(out[2, 3], tp.delta_e(a[2, 0].double(), b[3]))
    half = tp.delta_e(a.half(), a.half())
    assert half.dtype == torch.float32 and (half == 0).all()


@pytest.mark.parametrize("batch", [(), (3,)])
def test_adjacent(batch, device):
    g = torch.Generator().manual_seed(8)
    colors = torch.rand(*batch, 6, 3, generator=g).to(device)
    for method in METHODS:
        out = tp.adjacent_delta_e(colors, method=method)
        assert out.shape == (*batch, 5)
        torch.testing.assert_close(out[..., 2], tp.delta_e(colors[..., 2, :], colors[..., 3, :], method=method))
    lab = tp.srgb_to_lab(colors)
    torch.testing.assert_close(tp.adjacent_delta_e(lab, space="lab"), tp.adjacent_delta_e(colors))


def test_jnd():
    assert tp.JND == 2.3


# ------------------------------------------------------------------ properties
# float32-representable values, so the float32 and float64 paths see the same colours (with
# float64-only values such as b = -3e-47, the hue is 360 - tiny in float64 and 0 in float32, which
# lands on opposite sides of CIEDE2000's mean-hue discontinuity at antipodal hues).
lab_values = st.tuples(
    st.floats(0, 100, width=32), st.floats(-128, 127, width=32), st.floats(-128, 127, width=32)
)


@settings(max_examples=60, deadline=None)
@given(lab_values, lab_values)
def test_properties(p, q):
    a = torch.tensor(p, dtype=torch.float64)
    b = torch.tensor(q, dtype=torch.float64)
    for method in METHODS:
        ab = tp.delta_e(a, b, method=method, space="lab")
        assert ab.dtype == torch.float64 and torch.isfinite(ab) and ab >= 0
        assert tp.delta_e(a, a, method=method, space="lab") == 0
        if method in ("cie76", "ciede2000"):
            torch.testing.assert_close(ab, tp.delta_e(b, a, method=method, space="lab"))
        f32 = tp.delta_e(a.float(), b.float(), method=method, space="lab")
        # where the formula itself jumps (CIEDE2000's mean hue at antipodal hues), float32
        # rounding may land on the other side: compare only where a nudge moves it little
        nudge = torch.tensor([0.0, 1e-3, 1e-3], dtype=torch.float64)
        stable = all(abs(float(tp.delta_e(a + s * nudge, b + t * nudge, method=method,
                                          space="lab") - ab)) < 0.05
                     for s in (-1.0, 0.0, 1.0) for t in (-1.0, 0.0, 1.0))
        if stable:
            torch.testing.assert_close(f32.double(), ab, atol=1e-3, rtol=1e-4)


@settings(max_examples=25, deadline=None)
@given(lab_values, lab_values)
def test_gradients_finite(p, q):
    a = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(q, dtype=torch.float64, requires_grad=True)
    for method in METHODS:
        ga, gb = torch.autograd.grad(tp.delta_e(a, b, method=method, space="lab"), (a, b))
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()


# (Lab 1, Lab 2) at the formulas' special points
EDGES = {
    "identical": ([50.0, 20.0, 20.0], [50.0, 20.0, 20.0]),
    "both_grey": ([50.0, 0.0, 0.0], [60.0, 0.0, 0.0]),
    "same_grey": ([50.0, 0.0, 0.0], [50.0, 0.0, 0.0]),
    "hue_wrap": ([50.0, 10.0, -0.5], [55.0, 10.0, 0.5]),
    "hue_wrap_far": ([50.0, 0.3, -10.0], [50.0, -0.3, -10.0]),
    "tiny_chroma": ([50.0, 1e-2, 1e-2], [60.0, 5.0, 5.0]),
    "near_identical": ([50.0, 20.0, 20.0], [50.0, 20.001, 20.0]),
    "black_white": ([0.0, 0.0, 0.0], [100.0, 0.0, 0.0]),
}
# one grey, one chromatic: |(a, b)| is a cone point there, so no derivative exists to check,
# but the gradient must still be finite
NOT_DIFFERENTIABLE = {"grey_vs_colour": ([50.0, 0.0, 0.0], [60.0, 5.0, 5.0])}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", list(EDGES))
def test_gradcheck(method, case):
    p, q = EDGES[case]
    a = torch.tensor([p, [40.0, 30.0, -20.0]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([q, [45.0, -10.0, 25.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: tp.delta_e(x, y, method=method, space="lab"), (a, b))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("space", ["lab", "srgb"])
def test_gradient_finite_at_special_points(method, space):
    cases = list(EDGES.values()) + list(NOT_DIFFERENTIABLE.values())
    a = torch.tensor([c[0] for c in cases], dtype=torch.float64)
    b = torch.tensor([c[1] for c in cases], dtype=torch.float64)
    if space == "srgb":  # greys, black, white, identical colours in sRGB
        a = torch.tensor([[0.0] * 3, [1.0] * 3, [0.5] * 3, [0.2, 0.4, 0.6], [0.0] * 3], dtype=torch.float64)
        b = torch.tensor([[0.0] * 3, [0.5] * 3, [0.5] * 3, [0.2, 0.4, 0.6], [1.0, 0.0, 0.0]], dtype=torch.float64)
    a.requires_grad_(True)
    b.requires_grad_(True)
    out = tp.delta_e(a, b, method=method, space=space)
    ga, gb = torch.autograd.grad(out.sum(), (a, b))
    assert torch.isfinite(ga).all() and torch.isfinite(gb).all()


def test_loss_moves_colour_towards_target():
    target = torch.tensor([0.8, 0.2, 0.3])
    x = torch.full((3,), 0.5, requires_grad=True)
    opt = torch.optim.Adam([x], lr=0.05)
    first = None
    for _ in range(60):
        loss = tp.delta_e(x.clamp(0, 1), target)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(tp.delta_e(x.detach().clamp(0, 1), target)) < first / 5


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, err, msg",
    [
        (dict(a=torch.zeros(3, dtype=torch.uint8)), TypeError, "a: expected a floating dtype"),
        (dict(b=[0.0, 0.0, 0.0]), TypeError, "b: expected a torch.Tensor"),
        (dict(a=torch.zeros(4)), ValueError, r"a: expected shape \[..., 3\], got \[4\]"),
        (dict(b=torch.zeros(0, 3)), ValueError, "b: expected a non-empty tensor"),
        (dict(a=torch.tensor([0.0, float("nan"), 0.0])), ValueError, "a: expected finite values, got NaN"),
        (dict(b=torch.tensor([0.0, float("inf"), 0.0])), ValueError, "b: expected finite values, got infinity"),
        (dict(a=torch.tensor([0.0, 1.1, 0.0])), ValueError, r"a: expected values in \[0, 1\]"),
        (dict(a=torch.zeros(2, 3), b=torch.zeros(3, 3)), ValueError, r"b: expected a shape broadcastable with a \[2, 3\], got \[3, 3\]"),
        (dict(method="ciede2001"), ValueError, r"method: expected one of .*got 'ciede2001'"),
        (dict(method=None), TypeError, "method: expected one of"),
        (dict(space="hsv"), ValueError, r"space: expected one of \['srgb', 'lab'\], got 'hsv'"),
        (dict(kL=0), ValueError, "kL: expected a finite number > 0, got 0.0"),
        (dict(kC=-1.0), ValueError, "kC: expected a finite number > 0"),
        (dict(kH=float("nan")), ValueError, "kH: expected a finite number > 0"),
        (dict(kH="1"), TypeError, "kH: expected a number, got str"),
        (dict(method="cie76", fast=True), ValueError, "fast: expected method 'ciede2000'"),
        (dict(fast=1), TypeError, "fast: expected True, False or None, got int"),
    ],
)
def test_bad_input(kwargs, err, msg):
    args = dict(a=torch.full((3,), 0.5), b=torch.full((3,), 0.25)) | kwargs
    with pytest.raises(err, match=msg):
        tp.delta_e(**args)


def test_bad_input_fast_with_grad_and_adjacent():
    a = torch.rand(3, requires_grad=True)
    with pytest.raises(ValueError, match="fast=True is forward-only"):
        tp.delta_e(a, torch.rand(3), fast=True)
    one = tp.adjacent_delta_e(torch.rand(2, 1, 3))  # one colour: no neighbours, no error
    assert one.shape == (2, 0) and one.dtype == torch.float32
    with pytest.raises(ValueError, match=r"expected values in \[0, 1\]"):
        tp.adjacent_delta_e(torch.full((1, 3), 2.0))  # still checked
    with pytest.raises(ValueError, match=r"colors: expected shape \[..., K, 3\], got \[3\]"):
        tp.adjacent_delta_e(torch.rand(3))
    with pytest.raises(ValueError, match=r"a: expected values in \[0, 1\]"):
        tp.adjacent_delta_e(torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]))


# ------------------------------------------------------------------ fast path
@pytest.mark.parametrize("dtype", FLOATS)
def test_forward_only_formulas_equal_safe_one(dtype):
    a, b = _lab((5000,), dtype, seed=11), _lab((5000,), dtype, seed=12)
    a[:100, 1:] = 0  # greys and the chroma-zero branches
    a[100:150, 1:] = -0.0  # negative zeros: a grey's hue is still 0
    b[50:150] = a[50:150]
    b[200:250, 1] = -b[200:250, 1]  # mirrored colours: h'1 + h'2 = 2π
    b[200:250, 0] = a[200:250, 0]
    # the in-place kernel works in radians, the others in degrees: float32 rounds differently
    # (measured <= 3e-6 relative), float64 agrees to ~1e-13
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-10)
    for k in ((1.0, 1.0, 1.0), (2.0, 0.5, 3.0)):
        expect = ciede2000(*a.unbind(-1), *b.unbind(-1), *k)
        torch.testing.assert_close(ciede2000_rows(a, b, *k), expect)
        torch.testing.assert_close(ciede2000_rows(a.T.contiguous(), b.T.contiguous(), *k), expect)
        for chunk, workers in [(777, 1), (777, 3), (5000, 2), (8192, 2)]:  # chunk boundaries
            out = ciede2000_inplace(a.T, b.T, *k, chunk=chunk, workers=workers)
            torch.testing.assert_close(out, expect, **tol)
    torch.testing.assert_close(tp.delta_e(a, b, space="lab"), ciede2000(*a.unbind(-1), *b.unbind(-1), 1.0, 1.0, 1.0), **tol)


def test_inplace_path_only_without_grad():
    a, b = _lab((300,), torch.float64, seed=21), _lab((300,), torch.float64, seed=22)
    no_grad = tp.delta_e(a, b, space="lab")
    with_grad = tp.delta_e(a.requires_grad_(), b, space="lab")
    assert with_grad.requires_grad and not no_grad.requires_grad
    torch.testing.assert_close(with_grad.detach(), no_grad, atol=1e-10, rtol=1e-10)
    with torch.no_grad():
        assert not tp.delta_e(a, b, space="lab").requires_grad
    # helper threads start with grad mode on: the kernel must not trip over inputs that
    # require grad when the caller disabled it
    big_a = _lab((40_000,), torch.float32, seed=25).requires_grad_()
    big_b = _lab((40_000,), torch.float32, seed=26)
    with torch.no_grad():
        out = ciede2000_inplace(big_a.T, big_b.T, 1.0, 1.0, 1.0, chunk=4096, workers=3)
    torch.testing.assert_close(out, tp.delta_e(big_a.detach(), big_b, space="lab"), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ dim, autocast
@pytest.mark.parametrize("method", METHODS)
def test_dim_channel_first_images(method):
    g = torch.Generator().manual_seed(23)
    x, y = torch.rand(2, 3, 5, 7, generator=g), torch.rand(2, 3, 5, 7, generator=g)
    expect = tp.delta_e(x.movedim(-3, -1), y.movedim(-3, -1), method=method)
    assert expect.shape == (2, 5, 7)
    # float32 ulps differ with the memory layout (vector loops and their scalar tails)
    tol = dict(atol=1e-5, rtol=1e-5)
    for dim in (-3, 1):
        torch.testing.assert_close(tp.delta_e(x, y, method=method, dim=dim), expect, **tol)
    # one colour against every pixel, broadcast along H and W
    ref = y[0, :, 0, 0]
    out = tp.delta_e(x, ref[:, None, None], method=method, dim=-3)
    torch.testing.assert_close(out, tp.delta_e(x.movedim(-3, -1), ref, method=method), **tol)
    # channel dim first, not last, in the broadcast shape: [3, N]
    torch.testing.assert_close(tp.delta_e(x[0].flatten(1), y[0].flatten(1), method=method, dim=0),
                               expect[0].flatten(), **tol)


def test_dim_bad_input():
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"a: expected shape \[..., 3, \*, \*\], got \[2, 4, 4, 3\]"):
        tp.delta_e(x.movedim(1, -1), x, dim=-3)
    with pytest.raises(ValueError, match=r"b: expected shape \[..., 3, \*, \*\], got \[3\]"):
        tp.delta_e(x, torch.rand(3), dim=-3)
    with pytest.raises(ValueError, match=r"dim: expected an int in \[-4, 3\], got 4"):
        tp.delta_e(x, x, dim=4)
    with pytest.raises(TypeError, match="dim: expected an int, got float"):
        tp.delta_e(x, x, dim=1.0)
    with pytest.raises(ValueError, match=r"a: expected values in \[0, 1\]"):
        tp.delta_e(x + 1, x, dim=1)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("space", ["srgb", "lab"])
def test_autocast_computes_in_float32(method, space):
    g = torch.Generator().manual_seed(24)
    x, y = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    if space == "lab":
        x, y = tp.srgb_to_lab(x.movedim(1, -1)).movedim(-1, 1), tp.srgb_to_lab(y.movedim(1, -1)).movedim(-1, 1)
    expect = tp.delta_e(x, y, method=method, space=space, dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tp.delta_e(x, y, method=method, space=space, dim=1)
        grad_out = tp.delta_e(x.requires_grad_(), y, method=method, space=space, dim=1)
    assert out.dtype == torch.float32 and grad_out.dtype == torch.float32
    torch.testing.assert_close(out, expect, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(grad_out.detach(), expect, atol=1e-4, rtol=1e-5)
    # half inputs are upcast: the same colours give the float32 result
    half = tp.delta_e(x.detach().bfloat16(), y.bfloat16(), method=method, space=space, dim=1)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, tp.delta_e(x.detach().bfloat16().float(), y.bfloat16().float(),
                                                method=method, space=space, dim=1))


# ------------------------------------------------------------------ compile policy
@pytest.fixture
def fake_compile(monkeypatch):
    """A fresh policy whose "compiler" returns the eager forward-only function: tests the
    plumbing (layout, reshape, policy) without paying a compile; records calls."""
    calls = []

    def compiler(fn):
        def compiled(*args):
            calls.append(args[0].shape[0] == 3)  # CPU: handed [3, N] channel rows
            return fn(*args)
        return compiled

    policy = CompilePolicy(min_pairs=1 << 20, auto_compile_pairs=1 << 28, compiler=compiler)
    monkeypatch.setattr(cp, "CIEDE2000", policy)
    if torch.get_num_threads() == 1:  # the auto policy stays eager on one CPU thread
        monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    return calls, policy


def test_fast_true_uses_kernel_on_channel_rows(fake_compile):
    calls, _ = fake_compile
    a, b = _lab((4, 1), torch.float32, seed=13), _lab((5,), torch.float32, seed=14)
    out = tp.delta_e(a, b, space="lab", fast=True)
    assert calls == [True] and out.shape == (4, 5)
    torch.testing.assert_close(out, tp.delta_e(a, b, space="lab", fast=False))
    img = _lab((2, 6, 7), torch.float32, seed=15).movedim(-1, 1)  # [B, 3, H, W]
    out = tp.delta_e(img, img.flip(0), space="lab", dim=1, fast=True)
    assert out.shape == (2, 6, 7) and calls == [True, True]
    torch.testing.assert_close(out, tp.delta_e(img, img.flip(0), space="lab", dim=1, fast=False))


@pytest.mark.parametrize("n", [1, 3])
def test_fast_true_pads_short_inputs_to_channel_rows(fake_compile, n):
    """The CPU kernel is built for >= MIN_SIZE columns, and [3, 3] would read as [N, 3]."""
    calls, _ = fake_compile
    a, b = _lab((n,), torch.float32, seed=29), _lab((n,), torch.float32, seed=30)
    out = tp.delta_e(a, b, space="lab", fast=True)
    assert calls == [True] and out.shape == (n,)
    torch.testing.assert_close(out, tp.delta_e(a, b, space="lab", fast=False))


def test_package_on_disk_is_used_without_compiling(monkeypatch, tmp_path):
    """fast=None: a large call runs compiled at once when an earlier process left the CPU
    package on disk (loading it costs milliseconds); without one it keeps amortizing."""
    from torchpalette import _aot

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    kernel = _aot.AotKernel(ciede2000_rows)
    path32, path64 = kernel.path(torch.float32), kernel.path(torch.float64)
    assert path32.parent == tmp_path / "torchpalette" and path32 != path64
    assert path32.name.startswith("ciede2000_rows-") and path32.suffix == ".pt2"
    policy = CompilePolicy(min_pairs=1000, auto_compile_pairs=1 << 40)
    cpu, shape = torch.device("cpu"), torch.Size([1000, 3])
    for dtype in FLOATS:
        assert not policy.prebuilt(ciede2000_rows, cpu, dtype)
    path32.parent.mkdir(parents=True)
    path32.touch()
    assert policy.prebuilt(ciede2000_rows, cpu, torch.float32)
    assert not policy.prebuilt(ciede2000_rows, cpu, torch.float64)
    assert policy.use_compiled(None, cpu, shape, False, lambda: True)
    assert not policy.use_compiled(None, cpu, torch.Size([999, 3]), False, lambda: True)
    assert not policy.use_compiled(None, cpu, shape, False, lambda: False)
    assert not policy.use_compiled(False, cpu, shape, False, lambda: True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: eager is as fast, unless forced
    try:
        assert not policy.use_compiled(None, cpu, shape, False, lambda: True)
        assert policy.use_compiled(True, cpu, shape, False, lambda: True)
    finally:
        torch.set_num_threads(threads)
    # another compiler (the tests' fakes) never counts a package as built
    fake = CompilePolicy(1000, 1 << 40, compiler=lambda fn: fn)
    assert not fake.prebuilt(ciede2000_rows, cpu, torch.float32)


def test_auto_policy_never_compiles_small_calls(fake_compile):
    calls, policy = fake_compile
    policy.min_pairs = 2000  # scaled down to keep the test fast
    big_a, big_b = torch.zeros(2000, 3), torch.zeros(2000, 3)
    small = torch.zeros(1999, 3)
    for _ in range(3):
        tp.delta_e(small, small, space="lab")
    assert calls == [] and policy.eager_pairs_seen == 0
    policy.auto_compile_pairs = 2 * policy.min_pairs
    tp.delta_e(big_a, big_b, space="lab")  # first large call: still eager (amortizing)
    assert calls == [] and policy.eager_pairs_seen == policy.min_pairs
    with torch.enable_grad():
        tp.delta_e(big_a.requires_grad_(), big_b, space="lab")  # needs grad: eager, not counted
    assert calls == [] and policy.eager_pairs_seen == policy.min_pairs
    tp.delta_e(big_a.detach(), big_b, space="lab", fast=False)
    assert calls == []
    tp.delta_e(big_a.detach(), big_b, space="lab")  # enough eager work seen: compile now
    assert calls == [True] and policy.kernel is not None
    tp.delta_e(big_a.detach(), big_b, space="lab")  # once compiled, every large no-grad call
    assert len(calls) == 2
    tp.delta_e(small, small, space="lab")
    assert len(calls) == 2


def test_compile_failure_falls_back_to_eager(fake_compile):
    _, policy = fake_compile

    def broken(*args):
        raise RuntimeError("no compiler")

    policy.compiler = lambda fn: broken
    a, b = _lab((10,), torch.float32, seed=15), _lab((10,), torch.float32, seed=16)
    with pytest.warns(UserWarning, match="compiled path unavailable"):
        out = tp.delta_e(a, b, space="lab", fast=True)
    torch.testing.assert_close(out, tp.delta_e(a, b, space="lab", fast=False))
    assert policy.failed
    tp.delta_e(a, b, space="lab", fast=True)  # no second warning: eager from now on


def test_no_cuda_probe_warning_on_cpu_only_machines(tmp_path):
    """cpp_extension (imported by inductor while compiling) warns "No CUDA runtime is found"
    when a CUDA toolkit is installed without a GPU; the compile policy imports it quietly."""
    if torch.cuda.is_available():
        pytest.skip("the warning only exists without CUDA")
    env = dict(os.environ, CUDA_HOME=str(tmp_path), PYTHONPATH=str(Path(__file__).parents[1]))
    plain = "import torch.utils.cpp_extension"
    quiet = "from torchpalette._policy import torch_compile as c; c(abs); " + plain
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            for code in (plain, quiet)]
    if "No CUDA runtime is found" not in runs[0].stderr:
        pytest.skip("this torch does not warn")
    assert runs[1].returncode == 0 and "No CUDA runtime is found" not in runs[1].stderr


def test_traced_by_torch_compile():
    """Inside a compiled model delta_e takes the functional form (no threads, no out= ops)."""
    a, b = _lab((2, 40_000), torch.float32, seed=27), _lab((40_000,), torch.float32, seed=28)
    compiled = torch.compile(lambda x, y: tp.delta_e(x, y, space="lab"), backend="eager")
    torch.testing.assert_close(compiled(a, b), tp.delta_e(a, b, space="lab"), atol=1e-4, rtol=1e-5)


def test_damaged_package_is_rebuilt_once(monkeypatch, tmp_path):
    """A package that does not load (a killed copy, a full disk) is deleted and built again,
    instead of sending every later process to eager with a warning."""
    from torchpalette import _aot

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    kernel = _aot.AotKernel(ciede2000_rows)
    path = kernel.path(torch.float32)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    builds = []

    def build(p, dtype):
        builds.append(p)
        p.write_bytes(b"rebuilt")

    class Runner:
        def run(self, inputs):
            x1, x2, k = inputs
            return [ciede2000_rows(x1, x2, *k.tolist())]

    def load(p):
        if p.read_bytes() != b"rebuilt":
            raise RuntimeError("Failed to initialize zip archive: not a ZIP archive")
        return Runner()

    monkeypatch.setattr(kernel, "_build", build)
    monkeypatch.setattr(_aot, "_load", load)
    a, b = (_lab((8,), torch.float32, seed=s).T.contiguous() for s in (31, 32))  # [3, N] rows
    out = kernel(a, b, 1.0, 1.0, 1.0)
    assert builds == [path] and path.read_bytes() == b"rebuilt"
    torch.testing.assert_close(out, ciede2000_rows(a, b, 1.0, 1.0, 1.0))
    kernel(a, b, 1.0, 1.0, 1.0)  # loaded once per process
    assert builds == [path]


_FRESH_PROCESS = """
import sys, torch, torchpalette as tp
a, b = torch.rand(5000, 3) * 60, torch.rand(5000, 3) * 60
out = tp.delta_e(a, b, space="lab", fast=True)
assert "torch._inductor.compile_fx" not in sys.modules, "compiled again"
torch.testing.assert_close(out, tp.delta_e(a, b, space="lab", fast=False), atol=1e-3, rtol=1e-4)
"""


@pytest.mark.skipif(not os.environ.get("TORCHPALETTE_TEST_COMPILE"),
                    reason="compiles (minutes); set TORCHPALETTE_TEST_COMPILE=1")
def test_real_compile_cpu(monkeypatch, tmp_path):
    """The AOTInductor package: built once, equal to eager, and loaded by a new process
    without compiling (no inductor compile module imported)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cp, "CIEDE2000", CompilePolicy(1 << 20, 1 << 40))
    a, b = _lab((3000,), torch.float32, seed=17), _lab((3000,), torch.float32, seed=18)
    torch.testing.assert_close(tp.delta_e(a, b, space="lab", fast=True), tp.delta_e(a, b, space="lab", fast=False), atol=1e-3, rtol=1e-4)
    assert list((tmp_path / "torchpalette").glob("*.pt2"))
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path),
               PYTHONPATH=str(Path(__file__).parents[1]))
    run = subprocess.run([sys.executable, "-c", _FRESH_PROCESS], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", FLOATS)
def test_cuda_fast_matches_eager(dtype):
    a, b = _lab((100_000,), dtype, seed=19, device="cuda"), _lab((100_000,), dtype, seed=20, device="cuda")
    a[:100, 1:] = 0
    b[50:150] = a[50:150]
    fast = tp.delta_e(a, b, space="lab", fast=True)
    eager = tp.delta_e(a, b, space="lab", fast=False)
    assert fast.device.type == "cuda" and fast.dtype == dtype
    torch.testing.assert_close(fast, eager, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(eager.cpu(), tp.delta_e(a.cpu(), b.cpu(), space="lab"), atol=1e-4, rtol=1e-5)


@pytest.mark.cuda
def test_cuda_device_mismatch():
    with pytest.raises(ValueError, match="b: expected device"):
        tp.delta_e(torch.rand(3, device="cuda"), torch.rand(3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nudge", [-1, 0, 1])
def test_antipodal_hues_take_the_exact_arithmetic_branch(dtype, nudge):
    # Sharma's pair 14 has hues exactly 180 degrees apart. Moving a2 by a few last bits of the
    # hue angle (what another device's atan2 rounding does) must not jump to the other side of
    # CIEDE2000's discontinuity (4.7461, as pair 15) but stay on the exact-arithmetic one.
    step = 2e-6 if dtype == torch.float32 else 5e-15
    lab1 = torch.tensor([50.0, -0.001, 2.49], dtype=dtype)
    lab2 = torch.tensor([50.0, 0.001 + nudge * step, -2.49], dtype=dtype)
    assert abs(float(tp.delta_e(lab1, lab2, space="lab")) - 4.8045) < 1e-4
