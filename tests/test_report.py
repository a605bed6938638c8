"""`torchpalette report` and torchpalette.cli.report: every section, inline images, safe overwrite."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchpalette.cli import commands as cli
from torchpalette.cli import report

SECTIONS = ["image", "histogram", "dominant", "sorted", "neighbours", "palette", "reduced"]


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (12, 3), dtype=np.uint8)
    img = base[rng.integers(0, 12, (40, 48))] + rng.integers(0, 8, (40, 48, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return path


def swatch_count(html: str, section: str) -> int:
    body = re.search(rf'<section id="{section}">(.*?)</section>', html, re.S).group(1)
    return body.count("<rect")


def test_report_html_has_every_section(capsys, tmp_path, photo, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = tmp_path / "r.html"
    code = cli.main(["report", str(photo), "-o", str(out), "--top-n", "12", "--colors", "8",
                     "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert code == 0
    html = out.read_text(encoding="utf-8")
    assert report.MARK in html
    positions = [html.index(f'<section id="{s}">') for s in SECTIONS]
    assert positions == sorted(positions)  # the notebook's order
    assert "40 x 48" in html or "48 x 40" in html
    assert swatch_count(html, "dominant") == 12 and swatch_count(html, "sorted") == 12
    assert swatch_count(html, "palette") == 8
    assert html.count('<figure class="reduced">') == 6
    for n in report.REDUCED_COLORS:
        assert f"{n} colours: mean ΔE00" in html
    # ΔE tables: one row per neighbour pair
    neighbours = re.search(r'<section id="neighbours">(.*?)</section>', html, re.S).group(1)
    assert neighbours.count("<tr") - 1 == 11
    # self-contained: no external requests
    assert not re.search(r'(src|href)="(?!data:)', html) and "url(" not in html
    assert "<svg" in html
    # terminal summary, plain hex without colour
    assert "\x1b[" not in stdout and re.search(r"#[0-9a-f]{6}", stdout) and str(out) in stdout


def test_reduced_images_are_indexed_pngs_with_n_colours(tmp_path, photo):
    rep = report.make_report(photo, top_n=8, colors=4, device="cpu")
    assert [r.colors for r in rep.reductions] == list(report.REDUCED_COLORS)
    html = report.render_html(rep)
    uris = re.findall(r'<figure class="reduced"><img alt="(\d+) colours" '
                      r'src="data:image/png;base64,([^"]+)"', html)
    assert len(uris) == 6
    for (n, data), r in zip(uris, rep.reductions):
        png = base64.b64decode(data)
        assert png == r.png
        img = Image.open(io.BytesIO(png))
        assert img.mode == "P" and img.size == (48, 40)
        assert len(img.convert("RGB").getcolors()) <= int(n)
        assert f"{len(png) / 1024:.1f} KiB" in html
    des = [r.mean_de for r in rep.reductions]
    assert all(d >= 0 for d in des) and des[-1] < des[0]


def test_summary_truecolor_when_forced(capsys, tmp_path, photo, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert cli.main(["report", str(photo), "-o", str(tmp_path / "r.html"), "--top-n", "4",
                     "--colors", "4"]) == 0
    assert "\x1b[48;2;" in capsys.readouterr().out


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
    assert html.count("data:image/jpeg;base64,") == 1


def test_report_rgba_keeps_alpha_and_ignores_transparent_pixels(tmp_path):
    rng = np.random.default_rng(2)
    rgba = np.dstack([rng.integers(0, 256, (20, 20, 3), dtype=np.uint8),
                      np.where(np.arange(20)[None, :] < 10, 255, 0).repeat(20, 0).astype(np.uint8)])
    rgba[:, 10:, :3] = 0  # transparent half is black; must not count
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    rep = report.make_report(path, top_n=4, colors=4, reduced=(2,))
    img = Image.open(io.BytesIO(rep.reductions[0].png)).convert("RGBA")
    assert np.array_equal(np.asarray(img)[..., 3], rgba[..., 3])
    assert rep.reductions[0].mean_de > 0
    assert (rep.palette.sum(-1) > 0).all() and (rep.dominant.sum(-1) > 0).all()
