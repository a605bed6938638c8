"""color.py: sRGB <-> Lab/Oklab against scikit-image, round trips, parse_colors, to_hex."""

from __future__ import annotations

import pytest
import torch
from skimage.color import rgb2lab

import torchpalette as tp
from torchpalette.color import CSS_COLORS

BATCHES = [(), (2,), (2, 3)]
FLOATS = [torch.float32, torch.float64]


def _rand(shape, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, 3, generator=g, dtype=torch.float64).to(device, dtype)


# ------------------------------------------------------------------ conversions
@pytest.mark.parametrize("dtype", FLOATS)
def test_srgb_to_lab_matches_skimage(dtype):
    x = _rand((10_000,), torch.float64)
    ref = torch.from_numpy(rgb2lab(x.numpy()))
    # Same formula and D65 white as skimage: float64 agrees to rounding; float32 keeps ~7
    # significant digits of L in [0, 100] and a, b up to ~100, so 1e-3 absolute is ~30 ulp.
    atol = 1e-9 if dtype == torch.float64 else 1e-3
    torch.testing.assert_close(tp.srgb_to_lab(x.to(dtype)).double(), ref, atol=atol, rtol=0)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("dtype", FLOATS)
def test_round_trips(batch, dtype, device):
    x = _rand(batch, dtype, device)
    lab = tp.srgb_to_lab(x)
    assert lab.shape == x.shape and lab.dtype == dtype and lab.device == x.device
    assert (tp.lab_to_srgb(lab) - x).abs().max() < 1e-4
    ok = tp.srgb_to_oklab(x)
    assert ok.shape == x.shape and ok.dtype == dtype
    assert (tp.oklab_to_srgb(ok) - x).abs().max() < 1e-4


def test_round_trip_many_float32():
    x = _rand((100_000,), torch.float32, seed=1)
    assert (tp.lab_to_srgb(tp.srgb_to_lab(x)) - x).abs().max() < 1e-4


def test_known_values():
    white, black = torch.ones(3), torch.zeros(3)
    # a, b of white are ~0.005, not 0: the sRGB matrix's white and the D65 white point differ
    # in the 4th decimal (skimage gives the same)
    torch.testing.assert_close(tp.srgb_to_lab(white), torch.tensor([100.0, 0.0, 0.0]), atol=1e-2, rtol=0)
    torch.testing.assert_close(tp.srgb_to_lab(black), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(tp.srgb_to_oklab(white), torch.tensor([1.0, 0.0, 0.0]), atol=1e-4, rtol=0)
    # Ottosson's published value for sRGB red: (0.62796, 0.22486, 0.12585)
    torch.testing.assert_close(
        tp.srgb_to_oklab(torch.tensor([1.0, 0.0, 0.0])),
        torch.tensor([0.62796, 0.22486, 0.12585]),
        atol=2e-4,
        rtol=0,
    )


@pytest.mark.parametrize("fn", [tp.srgb_to_lab, tp.srgb_to_oklab])
def test_srgb_input_rejected(fn):
    with pytest.raises(TypeError, match="colors: expected a floating dtype, got torch.uint8"):
        fn(torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"colors: expected shape \[..., 3\], got \[4\]"):
        fn(torch.zeros(4))
    with pytest.raises(ValueError, match="colors: expected finite values, got NaN"):
        fn(torch.tensor([0.0, float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"colors: expected values in \[0, 1\]"):
        fn(torch.tensor([0.0, 1.5, 0.0]))
    with pytest.raises(ValueError, match="non-empty"):
        fn(torch.zeros(0, 3))
    with pytest.raises(TypeError, match="expected a torch.Tensor, got list"):
        fn([0.0, 0.0, 0.0])


# ------------------------------------------------------------------ parse_colors
def test_css_table_has_the_148_names():
    assert len(CSS_COLORS) == 148
    assert CSS_COLORS["rebeccapurple"] == "#663399"
    assert CSS_COLORS["grey"] == CSS_COLORS["gray"] == "#808080"
    assert CSS_COLORS["aqua"] == CSS_COLORS["cyan"] and CSS_COLORS["fuchsia"] == CSS_COLORS["magenta"]
    assert CSS_COLORS["lightgoldenrodyellow"] == "#fafad2"
    names = list(CSS_COLORS)
    out = tp.parse_colors(names)
    assert out.shape == (148, 3)
    assert tp.to_hex(out) == list(CSS_COLORS.values())


def test_parse_formats():
    out = tp.parse_colors(["#ff8800", "#F80", (255, 136, 0), [255, 136, 0], " Orange ",
                           torch.tensor([1.0, 136 / 255, 0.0]), torch.tensor([255, 136, 0], dtype=torch.uint8)])
    assert out.dtype == torch.float32 and out.shape == (7, 3)
    for i in (0, 1, 2, 3, 5, 6):
        torch.testing.assert_close(out[i], torch.tensor([1.0, 136 / 255, 0.0]))
    torch.testing.assert_close(out[4], torch.tensor([1.0, 165 / 255, 0.0]))  # orange: #ffa500


@pytest.mark.parametrize("single", ["red", (255, 0, 0), torch.tensor([1.0, 0.0, 0.0])])
def test_parse_single_colour(single):
    torch.testing.assert_close(tp.parse_colors(single), torch.tensor([[1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("batch", BATCHES)
def test_parse_tensor(batch, device):
    x = _rand(batch, torch.float64, device)
    out = tp.parse_colors(x, device=device)
    assert out.shape == (max(1, x.numel() // 3), 3) and out.dtype == torch.float32
    assert out.device.type == device.type
    torch.testing.assert_close(out, x.reshape(-1, 3).float())
    u8 = (x * 255).round().to(torch.uint8).reshape(-1, 3)
    torch.testing.assert_close(tp.parse_colors(u8), u8.float() / 255)  # a tensor stays on its device


@pytest.mark.parametrize(
    "bad, err, msg",
    [
        (["#12"], ValueError, r"colors\[0\]: expected '#rgb'.*got '#12'"),
        (["#ggg"], ValueError, r"got '#ggg'"),
        (["#ff880000"], ValueError, r"got '#ff880000'"),
        (["red", "notacolour"], ValueError, r"colors\[1\].*got 'notacolour'"),
        ([(1, 2)], ValueError, r"colors\[0\]: expected 3 ints in 0..255, got 2 values"),
        ([(256, 0, 0)], ValueError, r"expected 3 ints in 0..255, got \(256, 0, 0\)"),
        ([(-1, 0, 0)], ValueError, r"expected 3 ints in 0..255"),
        ([(0.5, 0.2, 0.1)], TypeError, r"got float 0.5"),
        ([(True, 0, 0)], TypeError, r"got bool"),
        ([None], TypeError, r"colors\[0\]: .* got NoneType"),
        ([], ValueError, "empty sequence"),
        (42, TypeError, "got int"),
        ([torch.tensor([0.5, float("nan"), 0.0])], ValueError, "NaN"),
        ([torch.tensor([0.5, 2.0, 0.0])], ValueError, r"values in \[0, 1\]"),
        ([torch.zeros(4)], ValueError, r"shape \[3\], got \[4\]"),
        (torch.zeros(0, 3), ValueError, "non-empty"),
        (torch.tensor([[0.0, 0.0, 1.5]]), ValueError, r"values in \[0, 1\]"),
    ],
)
def test_parse_bad(bad, err, msg):
    with pytest.raises(err, match=msg):
        tp.parse_colors(bad)


# ------------------------------------------------------------------ to_hex
def test_to_hex_shapes():
    assert tp.to_hex(torch.tensor([1.0, 0.0, 0.0])) == "#ff0000"
    assert tp.to_hex(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])) == ["#000000", "#ffffff"]
    nested = tp.to_hex(torch.zeros(2, 3, 4, 3, dtype=torch.float64))
    assert len(nested) == 2 and len(nested[0]) == 3 and nested[1][2] == ["#000000"] * 4
    assert tp.to_hex(torch.tensor([[18, 52, 86]], dtype=torch.uint8)) == ["#123456"]


@pytest.mark.parametrize("dtype", FLOATS)
def test_to_hex_round_trip(dtype, device):
    g = torch.Generator().manual_seed(3)
    ints = torch.randint(0, 256, (500, 3), generator=g)
    x = (ints.to(dtype) / 255).to(device)
    hexes = tp.to_hex(x)
    assert all(len(h) == 7 and h.startswith("#") for h in hexes)
    torch.testing.assert_close(tp.parse_colors(hexes) * 255, ints.float(), atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    "bad, err",
    [
        (torch.tensor([0.0, 1.2, 0.0]), ValueError),
        (torch.tensor([0.0, float("nan"), 0.0]), ValueError),
        (torch.zeros(2, 4), ValueError),
        (torch.zeros(2, 4, dtype=torch.uint8), ValueError),
        (torch.zeros(0, 3), ValueError),
        (torch.zeros(3, dtype=torch.int64), TypeError),
        ([0.0, 0.0, 0.0], TypeError),
    ],
)
def test_to_hex_bad(bad, err):
    with pytest.raises(err, match="colors: expected"):
        tp.to_hex(bad)


# ------------------------------------------------------------------ the one Lab implementation
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
def test_fast_lab_path_matches_kornia(dtype):
    """The package's one sRGB -> Lab (``_spaces``, channel-first, table-linearised uint8)
    against kornia.color.rgb_to_lab, its reference: same formulas and constants."""
    import kornia.color as kc

    from torchpalette import _spaces

    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (2, 3, 4096), generator=g, dtype=torch.uint8)
    x = pixels if dtype == torch.uint8 else pixels.to(dtype) / 255
    ref = kc.rgb_to_lab(pixels.double().div(255).unsqueeze(-1)).squeeze(-1)
    got = _spaces.srgb_to_lab_cf(x)
    assert got.shape == (2, 3, 4096)
    atol = 1e-9 if dtype == torch.float64 else 2e-4
    torch.testing.assert_close(got.double(), ref, atol=atol, rtol=0)
    with_one = _spaces.srgb_to_lab_cf(x, append_one=True)
    assert torch.equal(with_one[:, :3], got) and bool((with_one[:, 3] == 1).all())
    # the public channel-last function is the same implementation
    colors = x.transpose(1, 2) if dtype != torch.uint8 else (pixels.float() / 255).transpose(1, 2)
    torch.testing.assert_close(tp.srgb_to_lab(colors), _spaces.srgb_to_lab_cf(
        colors.transpose(1, 2)).transpose(1, 2))


def test_fast_lab_path_has_gradients():
    x = torch.rand(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(tp.srgb_to_lab, (x,))
