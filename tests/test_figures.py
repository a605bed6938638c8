"""Tests for torchpalette.cli.figures: histogram SVG, swatch SVG and swatch image."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

import torchpalette as tp
from torchpalette.cli.figures import histogram_legend, histogram_svg, swatches_image, swatches_svg

SVG = "{http://www.w3.org/2000/svg}"


def _no_external_refs(svg: str) -> None:
    for bad in ("href", "url(", "<image", "<script", "@import", "<link"):
        assert bad not in svg


def _polylines(root, scale="linear"):
    group = root.find(f"{SVG}g[@class='scale-{scale}']")
    return group.findall(SVG + "polyline")


def _points(line) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in line.get("points").split()]


def test_histogram_svg_curves_axes_and_dashed_luminance():
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    svg = histogram_svg(tp.histogram(image, bins=64), width=300, height=200)
    root = ET.fromstring(svg)  # well-formed XML
    assert root.tag == SVG + "svg" and root.get("viewBox") == "0 0 300 200"
    lines = _polylines(root)
    assert [line.find(SVG + "title").text for line in lines] == ["red", "green", "blue",
                                                                  "luminance"]
    assert [line.get("stroke-dasharray") is not None for line in lines] == [False] * 3 + [True]
    for line in lines:
        pts = _points(line)
        assert len(pts) == 64
        assert all(0 <= x <= 300 and 0 <= y <= 200 for x, y in pts)
    texts = [t.text for t in root.iter(SVG + "text")]
    assert ["0", "64", "128", "192", "255"] == [t for t in texts if t in ("0", "64", "128",
                                                                            "192", "255")][-5:]
    assert "level (0-255)" in texts and "pixels" in texts
    assert root.find(f"{SVG}g[@class='scale-log']") is None
    _no_external_refs(svg)


def test_histogram_svg_peak_at_top_and_zero_on_the_axis():
    counts = torch.zeros(4, 8, dtype=torch.int64)
    counts[0, 3] = 10
    for scale in ("linear", "log"):
        red = _points(_polylines(ET.fromstring(histogram_svg(counts, scale=scale)), scale)[0])
        assert red[3][1] < red[0][1] and red[0][1] == red[1][1]  # the peak is the highest
        assert min(y for _, y in red) == red[3][1]


def test_histogram_svg_log_scale_lifts_small_counts():
    counts = torch.ones(4, 16, dtype=torch.int64)
    counts[:, 0] = 10**6  # one black spike, as in the sample photo
    root = ET.fromstring(histogram_svg(counts, scale="both"))
    lin, log = _points(_polylines(root, "linear")[0]), _points(_polylines(root, "log")[0])
    base, top = lin[1][1], lin[0][1]  # a count of 1 is on the axis on a linear scale ...
    assert log[0][1] == pytest.approx(top, abs=0.01)
    assert (base - log[1][1]) / (base - top) > 0.04  # ... clearly above it on a log scale
    ticks = [t.text for t in root.find(f"{SVG}g[@class='scale-log']").iter(SVG + "text")]
    assert ticks == ["1", "10", "100", "1k", "10k", "100k", "1M"]
    lin_ticks = [t.text for t in root.find(f"{SVG}g[@class='scale-linear']").iter(SVG + "text")]
    assert lin_ticks[0] == "0" and 3 <= len(lin_ticks) <= 6


def test_histogram_legend_has_every_curve():
    legend = ET.fromstring(histogram_legend())
    items = legend.findall("li")
    assert [li.find("svg").tail.strip() for li in items] == ["red", "green", "blue", "luminance"]
    assert [li.find("svg/line").get("stroke-dasharray") is not None for li in items] == [
        False, False, False, True]


def test_histogram_svg_bad_input():
    with pytest.raises(ValueError, match=r"counts: expected shape \[4, bins\]"):
        histogram_svg(torch.zeros(3, 8))
    with pytest.raises(ValueError, match="counts: expected non-negative"):
        histogram_svg(torch.full((4, 8), -1))
    with pytest.raises(ValueError, match="counts: expected finite values, got NaN"):
        histogram_svg(torch.full((4, 8), float("nan")))
    with pytest.raises(TypeError, match="counts: expected a torch.Tensor"):
        histogram_svg([[0] * 8] * 4)
    with pytest.raises(ValueError, match=r"width: expected an int in \[160, inf\], got 3"):
        histogram_svg(torch.zeros(4, 8), width=3)
    with pytest.raises(ValueError, match="scale: expected one of linear, log, both, got 'ln'"):
        histogram_svg(torch.zeros(4, 8), scale="ln")


@pytest.mark.parametrize("k", [1, 10, 23])
def test_swatches_svg_grid(k, device):
    colors = torch.rand(k, 3, generator=torch.Generator().manual_seed(k)).to(device)
    captions = [f"ΔE {i} <&>" for i in range(k)]
    svg = swatches_svg(colors, size=20, captions=captions)
    root = ET.fromstring(svg)
    rects = root.findall(SVG + "rect")
    assert len(rects) == k
    hexes = tp.to_hex(colors.cpu())
    assert [r.get("fill") for r in rects] == hexes
    xs = sorted({float(r.get("x")) for r in rects})
    ys = sorted({float(r.get("y")) for r in rects})
    assert len(xs) == min(k, 10) and len(ys) == -(-k // 10)
    texts = [t.text for t in root.findall(SVG + "text")]
    assert texts[0::2] == hexes and texts[1::2] == captions  # escaped, read back intact
    _no_external_refs(svg)


def test_swatches_svg_cells_fit_long_captions():
    captions = ["", "ΔE 41.1 < JND", "ΔE 2.2 < JND"]
    root = ET.fromstring(swatches_svg(torch.rand(3, 3), size=20, captions=captions))
    xs = [float(t.get("x")) for t in root.findall(SVG + "text")][1::2]
    font = float(root.get("font-size"))
    widest = 0.62 * font * max(map(len, captions))
    assert all(b - a >= widest for a, b in zip(xs, xs[1:]))  # centres a full text apart
    assert float(root.get("width")) >= 3 * widest


def test_swatches_svg_without_labels():
    svg = swatches_svg(torch.rand(4, 3), labels=False, per_row=2)
    root = ET.fromstring(svg)
    assert root.findall(SVG + "text") == []
    assert len({r.get("y") for r in root.findall(SVG + "rect")}) == 2


def test_swatches_svg_bad_input():
    with pytest.raises(ValueError, match=r"colors: expected shape \[K, 3\], got \[2, 4, 3\]"):
        swatches_svg(torch.rand(2, 4, 3))
    with pytest.raises(ValueError, match="captions: expected 4 strings"):
        swatches_svg(torch.rand(4, 3), captions=["a"])
    with pytest.raises(ValueError, match=r"per_row: expected an int in \[1, inf\], got 0"):
        swatches_svg(torch.rand(4, 3), per_row=0)
    with pytest.raises(ValueError, match=r"colors: expected values in \[0, 1\]"):
        swatches_svg(torch.full((4, 3), 2.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_swatches_image(dtype, device):
    colors = torch.rand(13, 3, generator=torch.Generator().manual_seed(1), dtype=dtype).to(device)
    img = swatches_image(colors, per_row=5, size=6, gap=2)
    assert img.dtype == torch.uint8 and img.device == colors.device
    assert img.shape == (3, 3 * 8 + 2, 5 * 8 + 2)
    want = colors.mul(255).round().to(torch.uint8)
    for i in range(13):
        r, c = divmod(i, 5)
        cell = img[:, r * 8 + 2 : r * 8 + 8, c * 8 + 2 : c * 8 + 8]
        assert (cell == want[i][:, None, None]).all()
    assert (img[:, 16 + 2 :, 3 * 8 + 2 :] == 255).all()  # two unused cells: white
    assert (img[:, :2] == 255).all() and (img[:, :, :2] == 255).all()  # gaps: white


def test_swatches_image_bad_input():
    with pytest.raises(ValueError, match=r"gap: expected an int in \[0, inf\], got -1"):
        swatches_image(torch.rand(3, 3), gap=-1)
    with pytest.raises(TypeError, match="colors: expected a floating dtype"):
        swatches_image(torch.zeros(3, 3, dtype=torch.uint8))
