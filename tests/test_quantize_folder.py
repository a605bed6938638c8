"""``torchpalette quantize`` on a messy tree, as a new user's real folder would be: every output
file, its mode, palette size and pixels against a NumPy/Pillow reference; the failure list and
the exit status; clashing names, unreadable folders, broken outputs, concurrent runs, alpha."""

from __future__ import annotations

import fcntl
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchpalette as tp
from torchpalette.cli import commands as cli
from torchpalette.cli import quantizers

ROOT = Path(__file__).parents[1]
RNG = np.random.default_rng(5)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def outputs(dst: Path) -> set[str]:
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*")
            if p.is_file() and ".torchpalette" not in p.parts}


def failed(err: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^failed: (\S+): (.+)$", err, re.M)}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "P", path
        return np.asarray(im.convert("RGBA"))


def entries(path: Path) -> int:
    with Image.open(path) as im:
        return len(im.getpalette()) // 3


def few_colours(h: int, w: int, n: int = 3) -> np.ndarray:
    """An image of ``n`` distinct colours, so a 16-colour palette reproduces it exactly."""
    base = RNG.integers(0, 256, (n, 3), dtype=np.uint8)
    return base[RNG.integers(0, n, (h, w))]


@pytest.fixture
def messy(tmp_path):
    """SRC with mixed RGBA in one same-size batch, clashing names, high-depth TIFFs, tRNS,
    GIF transparency, a rotated WebP, corrupt and zero-byte files; DST with a truncated
    output of an earlier run."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    ref: dict[str, np.ndarray] = {}  # output -> expected RGBA pixels (exact: few colours)
    rgb = few_colours(8, 6)
    for name, alpha in [("opaque", 255), ("clear", 0), ("half", None)]:
        a = np.full((8, 6), alpha if alpha is not None else 0, np.uint8)
        if alpha is None:
            a[:, 2:4], a[:, 4:] = 128, 255  # transparent, partial and opaque columns
        save(src / "rgba" / f"{name}.png", np.dstack([rgb, a]))
        want = np.dstack([rgb, a]).copy()
        want[a == 0] = 0  # transparent pixels: the one (0, 0, 0, 0) entry
        ref[f"rgba/{name}.png"] = want
    for i, name in enumerate(["a.png", "a.PNG", "b.jpg", "b.png", "b.jpg.png"]):
        solid = np.full((4, 4, 3), 40 * i + 20, np.uint8)  # each source its own grey
        save(src / "clash" / name, solid, **({"quality": 100} if name.endswith("jpg") else {}))
    grey16 = np.array([[0, 32768], [65535, 20000]], np.uint16)
    save(src / "deep" / "g16.tif", grey16)
    flt = np.array([[0.0, 0.5], [1.0, 0.25]], np.float32)
    Image.fromarray(flt, mode="F").save(src / "deep" / "f.tif")
    key = few_colours(5, 5)
    key[0, 0] = (1, 2, 3)
    save(src / "trns.png", key, transparency=(1, 2, 3))
    gif = Image.fromarray(RNG.integers(0, 3, (5, 4)).astype(np.uint8), "P")
    gif.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200])
    gif.save(src / "t.gif", transparency=1)
    rot = np.zeros((2, 4, 3), np.uint8)
    rot[:, :2] = 255
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6
    save(src / "rot.webp", rot, exif=exif, lossless=True)
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    (src / "zero.png").write_bytes(b"")
    (src / "notes.txt").write_text("ignored")
    # an earlier run's output, truncated: must be redone, not counted as finished
    save(dst / "trns.png", key)
    data = (dst / "trns.png").read_bytes()
    (dst / "trns.png").write_bytes(data[: len(data) // 2])
    return src, dst, ref


def test_messy_tree(capsys, messy):
    src, dst, ref = messy
    code, out, err = run(capsys, "quantize", src, dst, "--workers", "0", "--batch-size", "8",
                         "--quiet", "--device", "cpu")
    assert code == 1
    assert set(failed(err)) == {"corrupt.jpg", "zero.png"}
    assert "0-byte" in failed(err)["zero.png"]
    assert "quantized 13 images (1 stale outputs redone), skipped 0 finished, 2 failed" in out
    assert "redone: 1 output not in the record" in out
    assert "timings: decode" in out and "idle" in out
    assert "renamed 2 outputs" in out
    assert outputs(dst) == {
        "rgba/opaque.png", "rgba/clear.png", "rgba/half.png", "clash/a.png", "clash/a.PNG.png",
        "clash/b.png", "clash/b.jpg.png", "clash/b.jpg~2.png", "deep/g16.png", "deep/f.png",
        "trns.png", "t.png", "rot.png"}
    for rel, want in ref.items():  # mixed RGBA in one batch: each exact, alpha kept
        assert np.array_equal(pixels(dst / rel), want), rel
    assert entries(dst / "rgba/clear.png") == 1
    assert entries(dst / "rgba/opaque.png") == 3
    # clashing names: every source kept, each output holds its own source's grey
    greys = {"a.png": 20, "a.PNG.png": 60, "b.jpg~2.png": 100, "b.png": 140, "b.jpg.png": 180}
    for name, g in greys.items():
        got = pixels(dst / "clash" / name)
        assert np.abs(got[..., :3].astype(int) - g).max() <= 1 and (got[..., 3] == 255).all()
    # high-depth TIFFs scaled like 16-bit PNG (NumPy reference)
    g16 = np.round(np.array([[0, 32768], [65535, 20000]]) * 255 / 65535).astype(np.uint8)
    assert np.array_equal(pixels(dst / "deep/g16.png")[..., 0], g16)
    assert np.array_equal(pixels(dst / "deep/f.png")[..., 0], [[0, 128], [255, 64]])
    # tRNS colour key and GIF transparency became alpha (Pillow reference)
    want = np.asarray(Image.open(src / "trns.png").convert("RGBA")).copy()
    want[want[..., 3] == 0] = 0
    assert np.array_equal(pixels(dst / "trns.png"), want)
    want = np.asarray(Image.open(src / "t.gif").convert("RGBA")).copy()
    want[want[..., 3] == 0] = 0
    assert np.array_equal(pixels(dst / "t.png"), want)
    # WebP EXIF orientation honoured (rotated clockwise: 4 rows, white on top)
    assert np.array_equal(pixels(dst / "rot.png")[..., 0], np.rot90(
        np.where(np.arange(4) < 2, 255, 0)[None].repeat(2, 0), k=-1))
    # a re-run finds everything finished and the same failures
    code, out, err = run(capsys, "quantize", src, dst, "--workers", "0", "--quiet")
    assert code == 1 and "quantized 0 images, skipped 13 finished, 2 failed" in out


def test_batch_failure_fails_only_its_culprit(capsys, tmp_path, monkeypatch):
    src = tmp_path / "src"
    for i in range(5):
        img = few_colours(6, 6)
        img[0, 0] = (7, 7, 7) if i == 2 else img[0, 0]
        save(src / f"im{i}.png", img)
    real = quantizers.Quantizer.rgb_batch

    def picky(self, x):  # the library fails a batch that contains image 2
        if bool((x[:, :, 0, 0] == 7).all(1).any()):
            raise ValueError("image: boom")
        return real(self, x)

    monkeypatch.setattr(quantizers.Quantizer, "rgb_batch", picky)
    code, out, err = run(capsys, "quantize", src, tmp_path / "dst", "--workers", "0",
                         "--batch-size", "5", "--quiet")
    assert code == 1 and failed(err) == {"im2.png": "ValueError: image: boom"}
    assert outputs(tmp_path / "dst") == {f"im{i}.png" for i in (0, 1, 3, 4)}


def test_alpha_at_16_colours_bounds_entries(capsys, tmp_path):
    """Many (colour, alpha) pairs (the '393 pairs' failure): <= 16 entries with alpha."""
    h, w = 32, 40
    rgb = np.asarray(Image.open(tp.io.SAMPLE).convert("RGB").resize((w, h)))
    a = np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))
    a[:, :5], a[:, -5:] = 0, 255
    save(tmp_path / "src" / "fade.png", np.dstack([rgb, a]))
    save(tmp_path / "src" / "la.png", np.dstack([rgb[..., 0], a]))  # grey + alpha
    code, _, err = run(capsys, "quantize", tmp_path / "src", tmp_path / "dst", "--workers", "0",
                       "--quiet")
    assert code == 0, err
    for name in ("fade.png", "la.png"):
        got = pixels(tmp_path / "dst" / name)
        assert entries(tmp_path / "dst" / name) <= 16
        assert (got[..., 3][a == 0] == 0).all() and (got[..., 3][a == 255] == 255).all()
        partial = (a > 0) & (a < 255)
        assert np.abs(got[..., 3][partial].astype(int) - a[partial]).mean() < 16
        assert len(np.unique(got[..., 3])) >= 4  # partial alpha approximated, not dropped


@pytest.mark.parametrize("colors", [2, 3, 5, 16])
def test_rgba_entries_bounded_for_small_palettes(colors):
    x = torch.from_numpy(np.dstack([few_colours(6, 12, 6), np.repeat(
        np.array([0, 0, 60, 128, 200, 255], np.uint8), 2)[None].repeat(6, 0)])).permute(2, 0, 1)
    idx, pal = quantizers.Quantizer(colors).rgba_one(x)
    assert pal.shape[1] == 4 and len(pal) <= colors and int(idx.max()) < len(pal)
    a = x[3]
    got = (pal[idx.long()][..., 3] * 255).round()
    assert (got[a == 0] == 0).all()
    assert (got[a == 255] == 255).all()  # opaque entries only for opaque pixels


def test_alpha_with_fixed_palette(capsys, tmp_path):
    a = np.tile(np.linspace(0, 255, 30).astype(np.uint8), (6, 1))
    save(tmp_path / "src" / "fade.png", np.dstack([few_colours(6, 30), a]))
    (tmp_path / "p.txt").write_text("#000000\n#ffffff\n#ff0000\n")
    code, _, err = run(capsys, "quantize", tmp_path / "src", tmp_path / "dst", "--palette",
                       tmp_path / "p.txt", "--workers", "0", "--quiet")
    assert code == 0, err
    got = pixels(tmp_path / "dst" / "fade.png")
    assert (got[..., 3][a == 0] == 0).all() and (got[..., 3][a == 255] == 255).all()
    colours = {tuple(c) for c in got[got[..., 3] > 0][:, :3]}
    assert colours <= {(0, 0, 0), (255, 255, 255), (255, 0, 0)}


def test_broken_outputs_redone(capsys, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for i in range(3):
        save(src / f"x{i}.png", few_colours(5, 5))
    run(capsys, "quantize", src, dst, "--workers", "0", "--quiet")
    good = (dst / "x2.png").stat().st_ino
    (dst / "x0.png").write_bytes(b"")
    data = (dst / "x1.png").read_bytes()
    (dst / "x1.png").write_bytes(data[:-15])
    code, out, _ = run(capsys, "quantize", src, dst, "--workers", "0", "--quiet")
    assert code == 0 and "quantized 2 images (2 stale outputs redone), skipped 1 finished" in out
    assert "redone: 2 output changed or damaged since written" in out
    assert (dst / "x2.png").stat().st_ino == good
    for i in range(3):
        Image.open(dst / f"x{i}.png").load()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_unreadable_folder_reported(capsys, tmp_path):
    src = tmp_path / "src"
    save(src / "ok.png", few_colours(4, 4))
    save(src / "locked" / "hidden.png", few_colours(4, 4))
    (src / "locked").chmod(0)
    try:
        code, out, err = run(capsys, "quantize", src, tmp_path / "dst", "--workers", "0",
                             "--quiet")
    finally:
        (src / "locked").chmod(0o755)
    assert code == 1 and "locked/" in failed(err) and "unreadable folder" in err
    assert outputs(tmp_path / "dst") == {"ok.png"}


def test_unreadable_folder_reported_via_walk(capsys, tmp_path, monkeypatch):
    """The same path without permissions (runs as root too): os.walk's error is a failure."""
    src = tmp_path / "src"
    save(src / "ok.png", few_colours(4, 4))
    (src / "bad").mkdir()
    real = os.scandir

    def scandir(path="."):
        if Path(path).name == "bad":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, _, err = run(capsys, "quantize", src, tmp_path / "dst", "--workers", "0", "--quiet")
    assert code == 1 and failed(err) == {"bad/": "unreadable folder (Permission denied)"}
    assert outputs(tmp_path / "dst") == {"ok.png"}


def test_directory_symlinks_followed_once(capsys, tmp_path):
    src, other = tmp_path / "src", tmp_path / "other"
    save(other / "in_link.png", few_colours(4, 4))
    save(src / "real" / "x.png", few_colours(4, 4))
    (src / "link").symlink_to(other, target_is_directory=True)
    (src / "real" / "loop").symlink_to(src, target_is_directory=True)
    code, _, err = run(capsys, "quantize", src, tmp_path / "dst", "--workers", "0", "--quiet")
    assert code == 0
    assert outputs(tmp_path / "dst") == {"link/in_link.png", "real/x.png"}
    assert "skipped: real/loop/: directory symlink loop" in err


def _quantize_proc(src: Path, dst: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "torchpalette", "quantize", str(src), str(dst), "--workers", "0",
         "--quiet", "--batch-size", "1", "--device", "cpu"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def twelve(tmp_path) -> Path:
    src = tmp_path / "src"
    for i in range(12):
        save(src / f"im{i:02d}.png", few_colours(16, 16, 5))
    return src


def test_second_run_waits_for_the_lock(twelve, tmp_path):
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / ".torchpalette").mkdir()
    fd = os.open(dst / ".torchpalette" / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another run holds DST
    proc = _quantize_proc(twelve, dst)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 120)
        said = proc.stderr.readline() if ready else ""
        time.sleep(1)
        assert "waiting" in said and "pid" in said
        assert proc.poll() is None and outputs(dst) == set()  # waiting, nothing written
    finally:
        os.close(fd)  # the other run ends
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "quantized 12 images" in out and len(outputs(dst)) == 12


def test_two_concurrent_runs_write_each_output_once(twelve, tmp_path):
    dst = tmp_path / "dst"
    procs = [_quantize_proc(twelve, dst) for _ in range(2)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    done = [int(re.search(r"quantized (\d+) images", out).group(1)) for out, _ in results]
    skipped = [int(re.search(r"skipped (\d+) finished", out).group(1)) for out, _ in results]
    assert sum(done) == 12 and sorted(skipped) == sorted([12 - d for d in done])
    assert len(outputs(dst)) == 12 and not list((dst / ".torchpalette" / "tmp").iterdir())


@pytest.mark.parametrize("content", [
    "{not json", '[{"colors": [{"hex": "#ff0000"}]}]', '{"colors": [{"rgb": [1, 2]}]}',
    "no colours here", b"\xff\xfe\x00binary", None])
def test_malformed_palette_is_usage_error(capsys, tmp_path, content):
    save(tmp_path / "src" / "x.png", few_colours(4, 4))
    pal = tmp_path / "p.json"
    if isinstance(content, bytes):
        pal.write_bytes(content)
    elif content is not None:
        pal.write_text(content)
    code, out, err = run(capsys, "quantize", tmp_path / "src", tmp_path / "dst", "--palette",
                         pal, "--workers", "0", "--quiet")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "--palette: " in err
    assert not (tmp_path / "dst").exists()


def test_fit_palette_with_fewer_colours_warns_and_goes_on(capsys, tmp_path):
    save(tmp_path / "src" / "two.png", few_colours(6, 6, 2))
    code, _, err = run(capsys, "quantize", tmp_path / "src", tmp_path / "dst", "--fit-palette",
                       "--colors", "16", "--workers", "0", "--quiet")
    assert code == 0 and "warning: --fit-palette" in err and "2 distinct colours" in err
    assert entries(tmp_path / "dst" / "two.png") == 2


@pytest.mark.parametrize("fit", [False, True])
def test_no_readable_file_reports_clearly(capsys, tmp_path, fit):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "bad.png").write_bytes(b"not a png")
    (tmp_path / "src" / "empty.jpg").write_bytes(b"")
    extra = ["--fit-palette"] if fit else []
    code, _, err = run(capsys, "quantize", tmp_path / "src", tmp_path / "dst", "--workers", "0",
                       "--quiet", *extra)
    assert code == 1 and set(failed(err)) == {"bad.png", "empty.jpg"}
    assert "no readable image in SRC: all 2 failed" in err and "alpha > 0" not in err


def test_output_names_rule():
    from torchpalette.cli.plan import output_names

    rels = sorted(["a.png", "a.PNG", "b.jpg", "b.png", "b.jpg.png", "C/x.png", "c/x.png"])
    got = dict(zip(rels, output_names(rels), strict=True))
    assert got == {"C/x.png": "C/x.png", "a.PNG": "a.PNG.png", "a.png": "a.png",
                   "b.jpg": "b.jpg~2.png", "b.jpg.png": "b.jpg.png", "b.png": "b.png",
                   "c/x.png": "c/x.png.png"}
    assert len({n.casefold() for n in got.values()}) == len(rels)


def test_help_documents_clash_rule(capsys):
    code, out, _ = run(capsys, "quantize", "--help")
    assert code == 0 and "a.PNG.png" in out and "--optimize" in out


def test_optimize_gives_smaller_or_equal_files(capsys, tmp_path):
    rgb = np.asarray(Image.open(tp.io.SAMPLE).convert("RGB").resize((96, 96)))
    save(tmp_path / "src" / "p.png", rgb)
    run(capsys, "quantize", tmp_path / "src", tmp_path / "fast", "--workers", "0", "--quiet")
    run(capsys, "quantize", tmp_path / "src", tmp_path / "small", "--workers", "0", "--quiet",
        "--optimize")
    fast, small = (tmp_path / d / "p.png" for d in ("fast", "small"))
    assert small.stat().st_size <= fast.stat().st_size
    assert np.array_equal(pixels(fast), pixels(small))
    assert fast.read_bytes()[24] == 4  # 16 colours: 4-bit PNG


def _first_importer(module: str, code: str) -> str:
    """Which module first imports ``module`` while running ``code`` (a fresh interpreter)."""
    probe = f"""
import builtins, sys
real, first = builtins.__import__, []
def spy(name, globals=None, *a, **k):
    if name.split(".")[0] == {module!r} and {module!r} not in sys.modules and not first:
        first.append((globals or {{}}).get("__name__", "?"))
    return real(name, globals, *a, **k)
builtins.__import__ = spy
{code}
print("FIRST", first[0] if first else "none")
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    return re.search(r"FIRST (\S+)", res.stdout).group(1)


def test_io_and_app_do_not_import_torchvision_at_start_up():
    # torchvision's package import pulls in torchvision.ops and torch._dynamo (seconds)
    code = "from torchpalette.cli import commands\ncommands.main(['delta-e', 'red', 'orange'])"
    first = _first_importer("torchvision", code)
    assert not first.startswith(("torchpalette.io", "torchpalette.cli")), first


def test_delta_e_start_up_loads_no_dynamo():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "torchpalette", "delta-e",
                          "red", "orange"], capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "torch._dynamo" not in res.stderr


def test_batched_jpeg_decode_falls_back_per_file(tmp_path):
    """The --device cuda JPEG path (here on the CPU: decode_jpeg takes a device): a corrupt
    file in the batch fails alone, the others decode like read_image."""
    from torchpalette.cli import decode

    paths = [save(tmp_path / f"j{i}.jpg", few_colours(8, 8), quality=95) for i in range(3)]
    (tmp_path / "j1.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    items = [decode.decode_one(i, str(p), raw_jpeg=True) for i, p in enumerate(paths)]
    assert [d.kind for d in items] == ["jpeg"] * 3
    got = decode.gpu_decode_jpegs(items, paths, torch.device("cpu"))
    assert [(d.i, d.kind, d.error is None) for d in got] == [
        (0, "rgb", True), (1, "", False), (2, "rgb", True)]
    assert "not a readable image" in got[1].error
    for i in (0, 2):
        assert got[i].image.equal(tp.read_image(paths[i]))
    fine = [items[0], items[2]]
    got = decode.gpu_decode_jpegs(fine, paths, torch.device("cpu"))  # one batched call
    assert [g.image.shape for g in got] == [(3, 8, 8)] * 2


@pytest.mark.cuda
def test_cuda_jpeg_run_isolates_a_corrupt_file(capsys, tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        save(src / f"j{i}.jpg", few_colours(16, 16), quality=95)
    (src / "j9.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    code, _, err = run(capsys, "quantize", src, tmp_path / "g", "--device", "cuda",
                       "--workers", "0", "--quiet")
    assert code == 1 and set(failed(err)) == {"j9.jpg"}
    assert outputs(tmp_path / "g") == {f"j{i}.png" for i in range(4)}
    for i in range(4):  # 3 colours, so the GPU decode's rounding barely matters
        want = tp.read_image(src / f"j{i}.jpg").permute(1, 2, 0).numpy().astype(int)
        assert np.abs(pixels(tmp_path / "g" / f"j{i}.png")[..., :3] - want).mean() < 3


def test_dither_strength_and_hidden_rgb(capsys, tmp_path):
    """``--dither-strength 0`` is no dither and a value outside [0, 1] is bad usage; with a
    fixed palette, the RGB under alpha 0 changes no visible pixel of a Floyd–Steinberg output."""
    h, w = 24, 32
    rgb = np.asarray(Image.open(tp.io.SAMPLE).convert("RGB").resize((w, h)))
    a = np.full((h, w), 255, np.uint8)
    a[4:12, 6:20] = 0
    other = rgb.copy()
    other[a == 0] = RNG.integers(0, 256, (int((a == 0).sum()), 3), dtype=np.uint8)
    save(tmp_path / "src" / "one" / "x.png", np.dstack([rgb, a]))
    save(tmp_path / "src" / "two" / "x.png", np.dstack([other, a]))
    save(tmp_path / "plain" / "y.png", rgb)
    (tmp_path / "p.txt").write_text("#000000\n#ffffff\n#ff0000\n#3060c0\n")
    fixed = ["--palette", tmp_path / "p.txt", "--workers", "0", "--quiet"]
    code, _, err = run(capsys, "quantize", tmp_path / "src", tmp_path / "fs", "--dither",
                       "floyd-steinberg", *fixed)
    assert code == 0, err
    one = pixels(tmp_path / "fs" / "one" / "x.png")
    two = pixels(tmp_path / "fs" / "two" / "x.png")
    assert (one[a > 0] == two[a > 0]).all()
    for d, extra in (("s0", ["--dither", "ordered", "--dither-strength", "0"]), ("none", [])):
        code, _, err = run(capsys, "quantize", tmp_path / "plain", tmp_path / d, *extra, *fixed)
        assert code == 0, err
    assert (pixels(tmp_path / "s0" / "y.png") == pixels(tmp_path / "none" / "y.png")).all()
    code, _, err = run(capsys, "quantize", tmp_path / "plain", tmp_path / "bad",
                       "--dither-strength", "2")
    assert code == 2 and "--dither-strength" in err
