"""Tests for torchpalette.sort.sort_colors (the step sort)."""

from __future__ import annotations

import colorsys

import pytest
import torch

import torchpalette as tp
from torchpalette.sort import GREY_CHROMA

BATCHES = [(), (2,), (2, 3)]


def random_colors(batch, k=24, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*batch, k, 3, generator=g, dtype=torch.float64).to(dtype).to(device)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch", BATCHES)
def test_returns_a_permutation(batch, dtype, device):
    colors = random_colors(batch, dtype=dtype, device=device)
    out, index = tp.sort_colors(colors)
    assert out.shape == colors.shape and out.dtype == dtype and out.device == colors.device
    assert index.shape == colors.shape[:-1] and index.dtype == torch.int64
    assert torch.equal(index.sort(-1).values, torch.arange(24, device=device).expand_as(index))
    assert torch.equal(out, colors.gather(-2, index[..., None].expand_as(colors)))


def test_batched_equals_looped():
    colors = random_colors((2, 3), seed=1)
    out, index = tp.sort_colors(colors, repetitions=5)
    for i in range(2):
        for j in range(3):
            o, ix = tp.sort_colors(colors[i, j], repetitions=5)
            assert torch.equal(ix, index[i, j]) and torch.equal(o, out[i, j])


def test_grey_ramp_ordered_by_luminance(device):
    levels = torch.linspace(0, 1, 11, device=device)
    perm = torch.randperm(11, generator=torch.Generator().manual_seed(0)).to(device)
    ramp = levels[perm][:, None].expand(11, 3).clone()
    out, index = tp.sort_colors(ramp)
    assert torch.equal(out[:, 0], levels)
    assert torch.equal(perm[index], torch.arange(11, device=device))


def test_greys_first():
    colors = torch.tensor([[1.0, 0, 0], [0.6, 0.6, 0.6 + GREY_CHROMA / 2], [0, 0, 1],
                           [0.2, 0.2, 0.2], [0.5, 0.5, 0.5 + 2 * GREY_CHROMA]])
    _, index = tp.sort_colors(colors)
    assert index[:2].tolist() == [3, 1]  # the two greys, dark to light
    assert 4 in index[2:].tolist()  # chroma above the threshold: a (blue) hue, not a grey


@pytest.mark.parametrize("repetitions", [6, 12])
def test_rainbow_in_hue_order(repetitions, device):
    hues = [(i + 0.5) / repetitions for i in range(repetitions)]  # one hue per step
    rainbow = torch.tensor([colorsys.hsv_to_rgb(h, 1.0, 1.0) for h in hues], device=device)
    perm = torch.randperm(repetitions, generator=torch.Generator().manual_seed(2)).to(device)
    _, index = tp.sort_colors(rainbow[perm], repetitions=repetitions)
    assert torch.equal(perm[index], torch.arange(repetitions, device=device))


def test_steps_nondecreasing_and_alternating():
    colors = random_colors((), k=200, dtype=torch.float64, seed=3)
    reps = 4
    out, _ = tp.sort_colors(colors, repetitions=reps)
    hsv = torch.tensor([colorsys.rgb_to_hsv(*c) for c in out.tolist()], dtype=torch.float64)
    chroma = out.amax(-1) - out.amin(-1)
    step = torch.where(chroma < GREY_CHROMA, -1, (hsv[:, 0] * reps).floor().clamp(max=reps - 1))
    assert (step.diff() >= 0).all()
    lum = (out @ torch.tensor([0.241, 0.691, 0.068], dtype=torch.float64)).sqrt()
    for s in range(reps):
        run = lum[step == s]
        if len(run) > 1:  # even steps dark -> light, odd steps light -> dark
            assert ((run.diff() >= 0) if s % 2 == 0 else (run.diff() <= 0)).all()


def test_deterministic_and_ties_keep_input_order():
    colors = torch.tensor([[0.2, 0.4, 0.9]] * 3 + [[0.9, 0.1, 0.1]])
    _, index = tp.sort_colors(colors)
    assert index.tolist() == [3, 0, 1, 2]
    a = tp.sort_colors(random_colors((4,), seed=9))
    b = tp.sort_colors(random_colors((4,), seed=9))
    assert torch.equal(a[1], b[1])


def test_bad_input():
    with pytest.raises(ValueError, match=r"colors: expected shape \[\.\.\., K, 3\]"):
        tp.sort_colors(torch.rand(3))
    with pytest.raises(ValueError, match=r"colors: expected shape \[\.\.\., K, 3\]"):
        tp.sort_colors(torch.rand(5, 4))
    with pytest.raises(TypeError, match="colors: expected a floating dtype"):
        tp.sort_colors(torch.zeros(5, 3, dtype=torch.uint8))
    nan = torch.rand(5, 3)
    nan[2, 1] = float("nan")
    with pytest.raises(ValueError, match="colors: expected finite values, got NaN"):
        tp.sort_colors(nan)
    with pytest.raises(ValueError, match=r"colors: expected values in \[0, 1\]"):
        tp.sort_colors(torch.full((5, 3), 1.5))
    with pytest.raises(ValueError, match=r"colors: expected a non-empty"):
        tp.sort_colors(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"repetitions: expected an int in \[1, inf\], got 0"):
        tp.sort_colors(torch.rand(5, 3), repetitions=0)
    with pytest.raises(TypeError, match="repetitions: expected an int"):
        tp.sort_colors(torch.rand(5, 3), repetitions=2.0)
