"""`torchpalette report` and torchpalette.cli.report: every section, any image size, degenerate
images, no raw warnings, terminal swatches, safe overwrite."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchpalette as tp
from torchpalette.cli import commands as cli
from torchpalette.cli import report
from torchpalette.cli import terminal
from torchpalette.cli.palette_files import rgb255

SECTIONS = ["image", "histogram", "dominant", "sorted", "neighbours", "palette", "reduced"]


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    img = base[rng.integers(0, 12, (40, 48))] + rng.integers(0, 8, (40, 48, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return path


def gradient_jpeg(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth two-way gradient plus noise, as a JPEG (a photo-like test image made here)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, width, dtype=np.float32)[None, :]
    img = np.empty((height, width, 3), np.uint8)
    for c, (a, b) in enumerate([(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]):
        noise = rng.integers(0, 25, (height, width), dtype=np.uint8)
        img[..., c] = ((a * x + b * y) * 230 + noise).astype(np.uint8)
    Image.fromarray(img).save(path, quality=90)
    return path


def section(html: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S).group(1)


def swatch_count(html: str, sid: str) -> int:
    return section(html, sid).count('class="swatch"')


def run_report(tmp_path, *args) -> tuple[int, str]:
    out = tmp_path / "r.html"
    code = cli.main(["report", *map(str, args), "-o", str(out), "--device", "cpu"])
    return code, out.read_text(encoding="utf-8") if out.exists() else ""


def test_report_html_has_every_section(capsys, tmp_path, photo, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    code, html = run_report(tmp_path, photo, "--top-n", 12, "--colors", 8)
    stdout = capsys.readouterr().out
    assert code == 0 and report.MARK in html
    positions = [html.index(f'<section id="{s}">') for s in SECTIONS]
    assert positions == sorted(positions)  # the notebook's order
    assert "48 x 40 pixels" in html
    assert swatch_count(html, "dominant") == 12 and swatch_count(html, "sorted") == 12
    assert swatch_count(html, "palette") == 8
    # one neighbour-table row per pair (plus the header row)
    assert section(html, "neighbours").count("<tr") - 1 == 11
    assert section(html, "palette").count("<tr") - 1 == 7
    # the reduced section: plain and every dither per count, each with its palette under it
    reduced = section(html, "reduced")
    figures = re.findall(r'<figure class="reduced[^"]*" data-colors="(\d+)" data-dither="([\w-]+)"'
                         r'(.*?)</figure>', reduced, re.S)
    assert [(int(n), d) for n, d, _ in figures] == [
        (n, d) for n in report.REDUCED_COLORS for d in ("none", *report.DITHERS)]
    for n, _, body in figures:
        assert body.count("<img") == 1 and 'type="range"' in body
        assert 1 <= body.count('class="swatch"') <= int(n)
    for n in report.REDUCED_COLORS:
        assert f"{n} colours, no dither: mean ΔE00" in html
    # self-contained: no external requests
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert re.findall(r"url\((.)", html) == ['"'] and 'url("data:image/png;base64,' in html
    assert "<script>" in html and "<script src" not in html and "@import" not in html
    # terminal summary, plain hex without colour
    assert "\x1b[" not in stdout and re.search(r"#[0-9a-f]{6}", stdout) and "r.html" in stdout


def test_reduced_images_are_indexed_pngs_with_n_colours(photo):
    rep = report.make_report(photo, top_n=8, colors=4, device="cpu")
    assert [r.colors for r in rep.reductions] == list(report.REDUCED_COLORS)
    assert [(r.colors, r.dither) for r in rep.dithered] == [
        (n, d) for n in report.REDUCED_COLORS for d in report.DITHERS]
    html = report.render_html(rep)
    uris = re.findall(r'data-colors="(\d+)" data-dither="none"><div class="compare"[^>]*><img '
                      r'alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 6
    for (n, data), r in zip(uris, rep.reductions):
        png = base64.b64decode(data)
        assert png == r.png
        img = Image.open(io.BytesIO(png))
        assert img.mode == "P" and img.size == (48, 40)
        used = {c for _, c in img.convert("RGB").getcolors()}
        assert len(used) <= int(n) and used <= set(map(tuple, rgb255(r.palette)))
        assert f"indexed PNG {len(png) / 1024:.1f} KiB" in html
    des = [r.mean_de for r in rep.reductions]
    assert all(d >= 0 for d in des) and des[-1] < des[0]
    # dithering mixes palette colours: other images (where the palette allows), same palettes
    per_count = len(report.DITHERS)
    pairs = [(p, d) for i, p in enumerate(rep.reductions)
             for d in rep.dithered[i * per_count : (i + 1) * per_count]]
    assert len(pairs) == len(rep.dithered)
    assert all(torch.equal(d.palette, p.palette) for p, d in pairs)
    assert any(d.png != p.png for p, d in pairs)


def test_mean_de_counts_each_pixel_once():
    rng = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 9, 11), dtype=torch.uint8, generator=rng)
    reduced = torch.randint(0, 4, (3, 9, 11), dtype=torch.uint8, generator=rng) * 80
    want = tp.delta_e(image.flatten(1).T.float() / 255, reduced.flatten(1).T.float() / 255)
    assert report._mean_de(image, reduced) == pytest.approx(float(want.mean()), rel=1e-5)


@pytest.mark.parametrize(("h", "w", "limit"), [(6000, 8000, 262144), (512, 512, 262144),
                                               (1, 10**7, 1000), (7, 3, 1), (100, 100, 9999)])
def test_analysis_size_is_bounded_and_keeps_the_aspect(h, w, limit):
    ah, aw = report.analysis_size(h, w, limit)
    assert 1 <= ah <= h and 1 <= aw <= w and ah * aw <= max(limit, 1)
    if h * w <= limit:
        assert (ah, aw) == (h, w)
    elif min(ah, aw) > 50:
        assert abs(aw / ah - w / h) < 0.01 * w / h and ah * aw > 0.98 * limit


def test_large_image_counts_every_pixel_and_analyses_a_small_copy(tmp_path, monkeypatch):
    path = gradient_jpeg(tmp_path / "big.jpg", 300, 200)
    monkeypatch.setattr(report, "_BAND_PIXELS", 5000)  # several bands of rows
    rep = report.make_report(path, top_n=8, colors=4, reduced=(2,), max_pixels=6000)
    full = tp.histogram(tp.read_image(path))
    assert torch.equal(rep.histogram, full) and int(rep.histogram[0].sum()) == 300 * 200
    assert (rep.width, rep.height) == (300, 200)
    assert (rep.analysed_width, rep.analysed_height) == (94, 63)
    assert Image.open(io.BytesIO(rep.reductions[0].png)).size == (94, 63)
    assert Image.open(io.BytesIO(rep.original)).size == (94, 63)  # not the big file
    assert any("count all 300 x 200 pixels" in n for n in rep.notes)
    assert "analysed at 94 x 63" in report.render_html(rep)


def test_huge_jpeg_peak_memory_is_bounded(tmp_path):
    """24 megapixels in a subprocess: peak RSS under 2 GiB and at most ~16 bytes a pixel above
    the process after import (the old report needed about 500 bytes a pixel)."""
    path = gradient_jpeg(tmp_path / "huge.jpg", 6000, 4000)
    code = ("import resource, sys, torchpalette.cli.report as r\n"
            "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "rep = r.make_report(sys.argv[1], top_n=8, colors=4, reduced=(2,))\n"
            "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "print(base, peak, rep.analysed_width, rep.analysed_height, len(rep.notes))\n")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                         text=True, timeout=300, check=True)
    base, peak, aw, ah, notes = map(int, out.stdout.split())
    assert aw * ah <= report.ANALYSIS_PIXELS and notes == 1
    assert peak < 2 * 1024**2  # KiB
    assert (peak - base) * 1024 < 16 * 6000 * 4000


def no_raw_warnings(tmp_path, capsys, *args) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning that escapes fails the test
        code, html = run_report(tmp_path, *args)
    err = capsys.readouterr().err
    assert code == 0 and err == ""
    return html


@pytest.mark.parametrize("size", [(1, 1), (16, 12)])
def test_single_colour_image_gives_a_report(tmp_path, capsys, size):
    path = tmp_path / "flat.png"
    Image.new("RGB", size, (200, 40, 90)).save(path)
    html = no_raw_warnings(tmp_path, capsys, path)
    for sid in ("dominant", "sorted", "palette"):
        assert swatch_count(html, sid) == 1 and "#c8285a" in section(html, sid)
    assert "No neighbouring pairs" in section(html, "neighbours")
    assert "nothing to sort" in section(html, "sorted") and "<table" not in section(html, "palette")
    assert "fewer distinct colours" in section(html, "image")  # the warning, as a note
    assert section(html, "reduced").count("<img") == 6 * (1 + len(report.DITHERS))


@pytest.mark.parametrize(("option", "sid"), [("--colors", "palette"), ("--top-n", "sorted")])
def test_one_colour_options_give_a_report(tmp_path, capsys, photo, option, sid):
    html = no_raw_warnings(tmp_path, capsys, photo, option, 1)
    assert swatch_count(html, sid) == 1 and "nothing to sort" in section(html, sid)
    other = "palette" if sid == "sorted" else "sorted"
    assert swatch_count(html, other) > 1 and "nothing to sort" not in section(html, other)
    assert ("No neighbouring pairs" in section(html, "neighbours")) == (option == "--top-n")


@pytest.mark.parametrize("kind", ["grey.png", "grey.jpg", "palette.png", "palette.gif"])
def test_grey_and_palette_images_give_no_raw_warnings(tmp_path, capsys, kind):
    rng = np.random.default_rng(3)
    if kind.startswith("grey"):
        im = Image.fromarray((np.linspace(0, 255, 64)[None, :] * np.ones((40, 1))).astype(np.uint8))
    else:
        im = Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).convert(
            "P", palette=Image.ADAPTIVE, colors=5)
    im.save(tmp_path / kind)
    html = no_raw_warnings(tmp_path, capsys, tmp_path / kind)
    assert "64 x 40 pixels" in html
    if kind.startswith("palette"):  # 5 colours: the 8..64-colour reductions show 5
        assert "fewer distinct colours" in section(html, "image")
        assert "Palette: 5 colours." in section(html, "reduced")


def test_summary_truecolor_when_forced(capsys, tmp_path, photo, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert cli.main(["report", str(photo), "-o", str(tmp_path / "r.html"), "--top-n", "4",
                     "--colors", "4"]) == 0
    assert "\x1b[48;2;" in capsys.readouterr().out


class _Tty:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("env", "tty", "want"), [
    ({"COLORTERM": "truecolor", "TERM": "xterm"}, True, "truecolor"),
    ({"COLORTERM": "24bit"}, True, "truecolor"),
    ({"TERM": "xterm-direct"}, True, "truecolor"),
    ({"TERM": "xterm-256color"}, True, "256"),
    ({"TERM": "screen-256color", "COLORTERM": "truecolor"}, True, "truecolor"),
    ({"TERM": "xterm"}, True, None),
    ({"TERM": "dumb", "COLORTERM": "truecolor"}, True, None),
    ({"TERM": "xterm-256color"}, False, None),  # a pipe or a file: plain hex
    ({"TERM": "xterm-256color", "NO_COLOR": "1"}, True, None),
    ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, True, None),
    ({"FORCE_COLOR": "1"}, False, "truecolor"),
    ({"FORCE_COLOR": "1", "TERM": "xterm-256color"}, False, "256"),
    ({"FORCE_COLOR": "2", "COLORTERM": "truecolor"}, False, "256"),
    ({"FORCE_COLOR": "0", "COLORTERM": "truecolor"}, True, None),
    ({"NO_COLOR": "", "COLORTERM": "truecolor"}, True, "truecolor"),  # empty: not set
])
def test_terminal_colour_detection(env, tty, want):
    assert terminal.color_mode(_Tty(tty), env) == want


@pytest.mark.parametrize(("rgb", "index"), [((255, 0, 0), 196), ((0, 0, 0), 16),
                                            ((255, 255, 255), 231), ((128, 128, 128), 244),
                                            ((95, 135, 175), 67), ((20, 20, 22), 233)])
def test_xterm256_nearest(rgb, index):
    assert terminal._xterm256(*rgb) == index
    line = terminal.swatches(torch.tensor([rgb]) / 255.0, use_color="256")
    assert line == f"\x1b[48;5;{index}m  \x1b[0m"


def test_report_never_overwrites_a_foreign_file(capsys, tmp_path, photo):
    out = tmp_path / "notes.html"
    out.write_text("<html>my notes</html>")
    args = ["report", str(photo), "-o", str(out), "--top-n", "4", "--colors", "4"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--force" in err
    assert out.read_text() == "<html>my notes</html>"
    assert cli.main(args + ["--force"]) == 0
    assert report.MARK in out.read_text(encoding="utf-8")
    assert cli.main(args) == 0  # an earlier report is replaced without --force
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_report_default_is_bundled_sample(capsys, tmp_path, monkeypatch):
    # the bundled sample, shrunk so the test stays fast; the default path is what is tested
    small = tmp_path / "sample" / "astronaut.jpg"
    small.parent.mkdir()
    Image.open(report.SAMPLE).resize((64, 64)).save(small, quality=90)
    monkeypatch.setattr(report, "SAMPLE", small)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    assert report.SAMPLE.name == "astronaut.jpg"
    assert cli.main(["report", "--top-n", "8", "--colors", "8"]) == 0
    html = (tmp_path / "torchpalette-report.html").read_text(encoding="utf-8")
    assert "astronaut.jpg" in html and "64 x 64" in html
    # the file itself is shown (once as the picture, once behind the comparison sliders)
    assert html.count(base64.b64encode(small.read_bytes()).decode()) == 2


def test_report_rgba_keeps_alpha_and_ignores_transparent_pixels(tmp_path):
    rng = np.random.default_rng(2)
    rgba = np.dstack([rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),
                      np.where(np.arange(20)[None, :] < 10, 255, 0).repeat(20, 0).astype(np.uint8)])
    rgba[:, 10:, :3] = 0  # transparent half is black; must not count
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    rep = report.make_report(path, top_n=4, colors=4, reduced=(2,))
    for r in (rep.reductions[0], rep.dithered[0]):
        img = Image.open(io.BytesIO(r.png)).convert("RGBA")
        assert np.array_equal(np.asarray(img)[..., 3], rgba[..., 3])
        assert r.mean_de > 0
    assert (rep.palette.sum(-1) > 0).all() and (rep.dominant.sum(-1) > 0).all()
    assert int(rep.histogram[0].sum()) == 200  # only the opaque half is counted
