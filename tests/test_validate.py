"""_validate.py: every check raises the documented error, naming argument, expected, actual."""

from __future__ import annotations

import pytest
import torch

from torchpalette import _validate as v

NAN, INF = float("nan"), float("inf")


def test_shape_str():
    assert v.shape_str(torch.Size([2, 3, 4])) == "[2, 3, 4]"
    assert v.shape_str(()) == "[]"


def test_check_tensor():
    x = torch.zeros(1)
    assert v.check_tensor(x, "x") is x
    with pytest.raises(TypeError, match="x: expected a torch.Tensor, got list"):
        v.check_tensor([0.0], "x")


def test_nonempty_finite_range():
    with pytest.raises(ValueError, match=r"x: expected a non-empty tensor, got shape \[0, 3\]"):
        v.check_nonempty(torch.zeros(0, 3), "x")
    v.check_finite(torch.tensor([1, 2]), "x")  # integers are always finite
    with pytest.raises(ValueError, match="x: expected finite values, got NaN"):
        v.check_finite(torch.tensor([0.0, NAN, INF]), "x")
    with pytest.raises(ValueError, match="x: expected finite values, got infinity"):
        v.check_finite(torch.tensor([0.0, -INF]), "x")
    v.check_range(torch.tensor([0.0, 1.0]), "x", 0, 1)
    with pytest.raises(ValueError, match=r"x: expected values in \[0, 1\], got values in \[-0.5, 1\]"):
        v.check_range(torch.tensor([-0.5, 1.0]), "x", 0, 1)
    with pytest.raises(TypeError, match="x: expected a floating dtype, got torch.int32"):
        v.check_float_dtype(torch.zeros(1, dtype=torch.int32), "x")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float16, torch.float32, torch.float64])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
@pytest.mark.parametrize("channels", [3, 4])
def test_check_image_accepts(dtype, batch, channels, device):
    img = torch.zeros(*batch, channels, 4, 5, dtype=dtype, device=device)
    assert v.check_image(img) is img


@pytest.mark.parametrize(
    "image, kwargs, err, msg",
    [
        ([[0]], {}, TypeError, "image: expected a torch.Tensor, got list"),
        (torch.zeros(3, 4, 4, dtype=torch.int64), {}, TypeError, "image: expected dtype uint8 or a float dtype, got torch.int64"),
        (torch.zeros(4, 4), {}, ValueError, r"image: expected shape \[..., 3\|4, H, W\], got \[4, 4\]"),
        (torch.zeros(1, 4, 4), {}, ValueError, r"expected 3\|4 channels at dim -3.*got 1 .*grey images"),
        (torch.zeros(5, 4, 4), {}, ValueError, "got 5 in shape"),
        (torch.zeros(4, 4, 4), {"allow_alpha": False}, ValueError, r"image: expected 3 channels .*got 4"),
        (torch.zeros(3, 0, 4), {}, ValueError, "image: expected a non-empty tensor"),
        (torch.full((3, 2, 2), NAN), {}, ValueError, "image: expected finite values, got NaN"),
        (torch.full((3, 2, 2), 1.5), {}, ValueError, r"image: expected values in \[0, 1\]"),
        (torch.full((3, 2, 2), -0.1), {}, ValueError, r"image: expected values in \[0, 1\]"),
    ],
)
def test_check_image_rejects(image, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        v.check_image(image, **kwargs)


def test_check_image_skip_values_and_name():
    v.check_image(torch.full((3, 2, 2), 2.0), check_values=False)
    with pytest.raises(ValueError, match="^photo: "):
        v.check_image(torch.zeros(2, 2), "photo")


def test_check_colors():
    x = torch.rand(5, 3)
    assert v.check_colors(x) is x
    v.check_colors(torch.tensor([50.0, -80.0, 90.0]), "lab", value_range=None)
    cases = [
        (torch.zeros(3, dtype=torch.uint8), {}, TypeError, "colors: expected a floating dtype"),
        (torch.zeros(5, 4), {}, ValueError, r"colors: expected shape \[..., 3\], got \[5, 4\]"),
        (torch.zeros(3), {"min_ndim": 2}, ValueError, r"colors: expected shape \[..., K, 3\], got \[3\]"),
        (torch.zeros(0, 3), {}, ValueError, "non-empty"),
        (torch.tensor([0.0, INF, 0.0]), {"value_range": None}, ValueError, "infinity"),
        (torch.tensor([0.0, 2.0, 0.0]), {}, ValueError, r"values in \[0, 1\], got values in \[0, 2\]"),
    ]
    for colors, kwargs, err, msg in cases:
        with pytest.raises(err, match=msg):
            v.check_colors(colors, **kwargs)
    v.check_colors(torch.tensor([0.0, 2.0, NAN]), check_values=False)


def test_check_int():
    assert v.check_int(3, "k", low=1) == 3
    assert v.check_int(torch.tensor(4), "k") == 4
    for bad in (True, 2.0, "3", torch.tensor(2.0), torch.tensor([1])):
        with pytest.raises(TypeError, match="k: expected an int, got"):
            v.check_int(bad, "k")
    with pytest.raises(ValueError, match=r"k: expected an int in \[1, inf\], got 0"):
        v.check_int(0, "k", low=1)
    with pytest.raises(ValueError, match=r"k: expected an int in \[-inf, 256\], got 257"):
        v.check_int(257, "k", high=256)


def test_check_positive():
    assert v.check_positive(2, "x") == 2.0
    assert v.check_positive(0, "x", allow_zero=True) == 0.0
    with pytest.raises(TypeError, match="x: expected a number, got bool"):
        v.check_positive(True, "x")
    for bad in (0, -1.0, NAN, INF):
        with pytest.raises(ValueError, match="x: expected a finite number > 0"):
            v.check_positive(bad, "x")
    with pytest.raises(ValueError, match="x: expected a finite number >= 0, got -1.0"):
        v.check_positive(-1, "x", allow_zero=True)


def test_check_choice():
    assert v.check_choice("lab", "space", ["lab", "srgb"]) == "lab"
    with pytest.raises(ValueError, match=r"space: expected one of \['lab', 'srgb'\], got 'hsv'"):
        v.check_choice("hsv", "space", ["lab", "srgb"])
    with pytest.raises(TypeError, match=r"space: expected one of \['lab'\], got int"):
        v.check_choice(1, "space", ["lab"])


@pytest.mark.parametrize("shapes", [((5, 3), (3,)), ((2, 1, 3), (4, 3)), ((0, 3), (1, 3)),
                                    ((), (2,)), ((1,), ()), ((2, 3), (2, 3), (1, 1, 3))])
def test_broadcast_shape_equals_torch(shapes):
    assert v.broadcast_shape(*shapes) == torch.broadcast_shapes(*shapes)


@pytest.mark.parametrize("shapes", [((5, 3), (4, 3)), ((0, 3), (2, 3))])
def test_broadcast_shape_raises_as_torch(shapes):
    with pytest.raises(RuntimeError):
        torch.broadcast_shapes(*shapes)
    with pytest.raises(RuntimeError):
        v.broadcast_shape(*shapes)
