"""torchpalette.cli.report_html: swatch cards, histogram toggle, interaction script, and the
layout checked in a real browser (headless Chromium; skipped where it is not installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

import torchpalette as tp
from torchpalette.cli import report
from torchpalette.cli.report_html import swatch_cards

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def test_swatch_cards_carry_hex_rgb_lab_and_weight():
    colors = torch.tensor([[1.0, 0.5, 0.0], [0.1, 0.2, 0.3]])
    html = swatch_cards(colors, torch.tensor([0.75, 0.25]), [[("a <b>", "x")], [("c", "y")]])
    infos = re.findall(r'data-info="([^"]*)"', html)
    lab = tp.srgb_to_lab(colors)
    assert len(infos) == 2 and html.count('<span class="chip">') == 2
    assert infos[0].startswith("#ff8000 · RGB 255 128 0 · Lab ")
    assert f"Lab {lab[1, 0]:.1f} {lab[1, 1]:.1f} {lab[1, 2]:.1f}" in infos[1]
    assert "weight 75.00%" in infos[0] and "weight 25.00%" in infos[1]
    assert 'data-hex="#1a334d"' in html and "a &lt;b&gt;" in html  # captions escaped
    assert swatch_cards(torch.zeros(0, 3)) == '<div class="swatches"></div>'


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, report.Report]:
    """A report of the sample photo (shrunk to stay fast) with many swatches and long captions:
    64 dominant colours, a 32-colour palette."""
    tmp = tmp_path_factory.mktemp("page")
    small = tmp / "astronaut.jpg"
    Image.open(report.SAMPLE).resize((96, 96)).save(small, quality=90)
    rep = report.make_report(small, top_n=64, colors=32, device="cpu")
    out = tmp / "report.html"
    report.write_report(rep, out)
    return out, rep


@pytest.fixture
def page(built) -> Path:
    return built[0]


def test_page_interaction_is_inline(built):
    page, rep = built
    html = page.read_text(encoding="utf-8")
    assert len(rep.dominant) == 64 and len(rep.palette) == 32
    chips = sum(len(r.palette) for r in rep.reductions + rep.dithered)
    assert html.count('class="swatch"') == 64 * 2 + 32 + chips
    # copy on click with a fallback, hover details, comparison sliders, log toggle: all inline
    for needle in ("navigator.clipboard", 'execCommand("copy")', "mouseover", "focusin",
                   '"--pos"', 'id="logscale" checked', ".scale-log"):
        assert needle in html
    assert html.count('type="range"') == (1 + len(report.DITHERS)) * len(report.REDUCED_COLORS)
    assert '<meta name="viewport"' in html
    assert not re.search(r'(src|href)="(?!data:)', html) and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")


def chromium_selftest(url: str, tmp_path: Path, width: int, height: int = 900) -> dict:
    """Load ``url`` in headless Chromium and return the page's own layout findings."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
           f"--window-size={width},{height}", "--virtual-time-budget=2000", "--dump-dom", url]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="selftest">(.*?)</pre>', dom, re.S)
    assert found, f"no self-test result in the page (chromium printed {len(dom)} chars)"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def phone_frame(page: Path, tmp_path: Path, width: int) -> str:
    """A page framing ``page`` at ``width`` CSS pixels (below Chromium's minimum window
    width), which shows the report's findings it receives by postMessage."""
    frame = tmp_path / "frame.html"
    frame.write_text(
        f'<!DOCTYPE html><body style="margin:0"><iframe src="{page.as_uri()}#selftest" '
        f'style="width:{width}px;height:844px;border:0"></iframe><script>'
        'addEventListener("message", function (e) { var p = document.createElement("pre");'
        ' p.id = "selftest"; p.textContent = JSON.stringify(e.data.selftest);'
        " document.body.appendChild(p); });</script></body>", encoding="utf-8")
    return frame.as_uri()


def assert_clean(found: dict, page_html: str) -> None:
    assert found["labels"] == page_html.count('class="label ')
    assert found["swatches"] == page_html.count('class="swatch"') and found["figures"] > 20
    assert found["overlaps"] == [] and found["label_overflows"] == []
    assert found["swatch_overlaps"] == [] and found["figure_overflows"] == []
    assert found["clipped_text"] == [] and found["page_overflow"] is False
    assert found["histogram_fill"] > 0.95  # the figure uses the page width
    # interaction: hover shows RGB, Lab and weight; click copies (or offers) the hex code
    hx = found["first_hex"]
    assert re.fullmatch(rf"{hx} · RGB \d+ \d+ \d+ · Lab [-\d.]+ [-\d.]+ [-\d.]+ · weight "
                        r"[\d.]+%", found["hover"])
    assert found["click"] in (f"copied {hx}", f"select and copy: {hx}")
    assert found["slider"] == "20%"


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (apt-get install chromium)")
def test_layout_in_a_real_browser_desktop_and_phone(page, tmp_path):
    html = page.read_text(encoding="utf-8")
    desktop = chromium_selftest(page.as_uri() + "#selftest", tmp_path, 1280)
    assert desktop["width"] == 1280
    assert_clean(desktop, html)
    phone = chromium_selftest(phone_frame(page, tmp_path, 390), tmp_path, 800)
    assert phone["width"] == 390
    assert_clean(phone, html)


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (apt-get install chromium)")
def test_browser_selftest_catches_a_broken_layout(page, tmp_path):
    """The checks can fail: squeeze the cards, stop captions wrapping, enlarge the histogram
    text and widen a figure, and the page itself reports each problem."""
    broken = tmp_path / "broken.html"
    css = (".swatches{grid-template-columns:repeat(auto-fill,2.5em);gap:0}"
           ".swatch .label{white-space:nowrap;overflow-wrap:normal}"
           ".hist svg{font-size:90px}.reduced{grid-template-columns:3000px}</style>")
    broken.write_text(page.read_text(encoding="utf-8").replace("</style>", css, 1),
                      encoding="utf-8")
    found = chromium_selftest(broken.as_uri() + "#selftest", tmp_path, 1280)
    assert found["label_overflows"] and found["overlaps"]
    assert found["clipped_text"] and found["figure_overflows"] and found["page_overflow"]
