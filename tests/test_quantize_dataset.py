"""``torchpalette quantize`` at dataset scale (issue 21): provenance and stale outputs, nothing
inside SRC, DST holding outputs only, O(files) planning, bounded memory, every input decided,
and the smaller points (batch-size independence, quoted names, bombs, palette files, seeds)."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import torchpalette as tp
from torchpalette.cli import commands as cli

ROOT = Path(__file__).parents[1]
RNG = np.random.default_rng(21)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def q(capsys, src, dst, *extra) -> tuple[int, str, str]:
    return run(capsys, "quantize", src, dst, "--workers", "0", "--quiet", "--device", "cpu",
               *extra)


def save(path: Path, array: np.ndarray, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kw)
    return path


def grey(v: int, size: int = 4) -> np.ndarray:
    return np.full((size, size, 3), v, np.uint8)


def outputs(dst: Path) -> set[str]:
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*")
            if p.is_file() and ".torchpalette" not in p.parts}


def rgb_of(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ----------------------------------------------------------------------------- 1 provenance
def test_clashing_new_source_redoes_the_output(capsys, tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    save(src / "a.jpg", grey(40), quality=100)
    assert q(capsys, src, dst)[0] == 0
    assert abs(int(rgb_of(dst / "a.png")[0, 0, 0]) - 40) <= 1
    save(src / "a.png", grey(200))  # now a.png claims a.png, a.jpg moves to a.jpg.png
    code, out, _ = q(capsys, src, dst)
    assert code == 0 and "quantized 2 images (1 stale outputs redone), skipped 0" in out
    assert "another source now takes this output's name" in out
    assert rgb_of(dst / "a.png")[0, 0, 0] == 200
    assert abs(int(rgb_of(dst / "a.jpg.png")[0, 0, 0]) - 40) <= 1
    assert "quantized 0 images, skipped 2 finished" in q(capsys, src, dst)[1]


def test_changed_source_and_options_are_redone(capsys, tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    save(src / "x.png", grey(10))
    save(src / "y.png", grey(20))
    q(capsys, src, dst)
    save(src / "x.png", grey(99, size=5))  # updated source (new size and mtime)
    code, out, _ = q(capsys, src, dst)
    assert "quantized 1 images (1 stale outputs redone), skipped 1" in out and code == 0
    assert "1 source changed" in out and rgb_of(dst / "x.png").shape == (5, 5, 3)
    for opts in (["--colors", "3"], ["--colors", "3", "--dither", "ordered"],
                 ["--colors", "3", "--dither", "ordered", "--space", "srgb"],
                 ["--colors", "3", "--dither", "ordered", "--space", "srgb", "--seed", "5"]):
        _, out, _ = q(capsys, src, dst, *opts)
        assert "quantized 2 images (2 stale outputs redone)" in out and "2 options changed" in out
    (tmp_path / "p.txt").write_text("#000000\n#ffffff\n")
    _, out, _ = q(capsys, src, dst, "--palette", tmp_path / "p.txt")
    assert "2 options changed" in out
    (tmp_path / "p.txt").write_text("#000000\n#fefefe\n")  # another palette: another digest
    _, out, _ = q(capsys, src, dst, "--palette", tmp_path / "p.txt")
    assert "2 options changed" in out
    _, out, _ = q(capsys, src, dst, "--palette", tmp_path / "p.txt")
    assert "quantized 0 images, skipped 2 finished" in out


def test_record_holds_source_and_options(capsys, tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    save(src / "sub" / "x.jpg", grey(10))
    q(capsys, src, dst, "--hash", "--colors", "5")
    db = sqlite3.connect(dst / ".torchpalette" / "record.sqlite")
    (key, rel, size, mtime, digest, opts), = db.execute(
        "SELECT key, src, size, mtime_ns, hash, options FROM outputs")
    st = (src / "sub" / "x.jpg").stat()
    assert (key, rel, size, mtime) == ("sub/x.png", "sub/x.jpg", st.st_size, st.st_mtime_ns)
    assert len(digest) == 32  # BLAKE2b-128 of the content
    text, = db.execute("SELECT json FROM options WHERE digest = ?", (opts,)).fetchone()
    assert '"colors":5' in text and f'"version":"{tp.__version__}"' in text


def test_hash_catches_a_change_that_keeps_size_and_mtime(capsys, tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    path = save(src / "x.png", grey(10))
    q(capsys, src, dst, "--hash")
    st = path.stat()
    save(src / "x.png", grey(11))
    assert path.stat().st_size == st.st_size
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "skipped 1 finished" in q(capsys, src, dst)[1]  # size + mtime alone: same
    _, out, _ = q(capsys, src, dst, "--hash")
    assert "1 source changed" in out and rgb_of(dst / "x.png")[0, 0, 0] == 11


def test_orphans_listed_kept_then_deleted(capsys, tmp_path):
    src, dst = tmp_path / "s", tmp_path / "d"
    save(src / "keep.png", grey(1))
    save(src / "gone.png", grey(2))
    q(capsys, src, dst)
    (src / "gone.png").unlink()
    code, _, err = q(capsys, src, dst)
    assert code == 0 and "orphans: 1 outputs whose source is gone (gone.png): kept" in err
    assert (dst / "gone.png").exists()
    _, _, err = q(capsys, src, dst, "--delete-orphans")
    assert "deleted" in err and not (dst / "gone.png").exists()
    assert "orphans" not in q(capsys, src, dst)[2]


# ----------------------------------------------------------------------------- 2 nothing in SRC
def test_dst_holding_src_is_refused_before_work(capsys, tmp_path):
    """The issue's case: quantize s/photos s --overwrite would replace s/photos/x.png."""
    s = tmp_path / "s"
    save(s / "photos" / "x.png", grey(5))
    save(s / "photos" / "photos" / "x.png", grey(250))
    before = (s / "photos" / "x.png").read_bytes()
    code, out, err = q(capsys, s / "photos", s, "--overwrite")
    assert code == 2 and out == "" and "DST: expected a folder outside SRC" in err
    assert (s / "photos" / "x.png").read_bytes() == before and not (s / ".torchpalette").exists()


@pytest.mark.parametrize("case", ["inside", "same", "link-to-dst", "dst-through-link"])
def test_overlap_through_nesting_or_symlinks_is_exit_2(capsys, tmp_path, case):
    src, other = tmp_path / "src", tmp_path / "other"
    save(src / "x.png", grey(5))
    other.mkdir()
    dst = {"inside": src / "out", "same": src, "link-to-dst": other / "out",
           "dst-through-link": tmp_path / "alias" / "out"}[case]
    if case == "link-to-dst":  # SRC holds a symlink into DST: the walk would read outputs
        (src / "l").symlink_to(other, target_is_directory=True)
    if case == "dst-through-link":  # DST is inside SRC, named through a symlink to SRC
        (tmp_path / "alias").symlink_to(src, target_is_directory=True)
    code, _, err = q(capsys, src, dst)
    assert code == 2 and "DST: expected a folder outside SRC" in err
    assert not (src / "out").exists() and not (other / "out").exists()


# ----------------------------------------------------------------------------- 3 DST outputs only
def test_dst_holds_outputs_and_one_hidden_folder_temp_files_invisible(capsys, tmp_path):
    from torchvision.datasets import ImageFolder

    src, dst = tmp_path / "s", tmp_path / "d"
    for cls in ("cat", "dog"):
        for i in range(2):
            save(src / "train" / cls / f"{i}.jpg", grey(30 * i + 10))
    q(capsys, src, dst)
    leftover = dst / ".torchpalette" / "tmp" / "12345.0.part"  # a SIGKILLed run's temp file
    leftover.write_bytes(b"\x89PNG half")
    assert sorted(p.name for p in dst.iterdir()) == [".torchpalette", "train"]
    assert not [p for p in dst.rglob("*.png") if ".torchpalette" in p.parts]
    ds = ImageFolder(str(dst / "train"))
    assert len(ds) == 4 and ds.classes == ["cat", "dog"]
    for i in range(len(ds)):
        ds[i][0].load()  # no truncated file among them
    q(capsys, src, dst)
    assert not leftover.exists()  # cleaned on start
    assert sorted(p.name for p in (dst / ".torchpalette").iterdir() if "sqlite" not in p.name) \
        == ["lock", "tmp"]


# ----------------------------------------------------------------------------- 4 O(files)
def test_resume_scans_each_folder_once(capsys, tmp_path, monkeypatch):
    src, dst = tmp_path / "s", tmp_path / "d"
    data = (save(tmp_path / "one.png", grey(7, 1))).read_bytes()
    n_files = 0
    for folder in ("", "a", "a/b"):
        (src / folder).mkdir(parents=True, exist_ok=True)
        for i in range(1000 if folder == "" else 500):
            (src / folder / f"f{i:04d}.png").write_bytes(data)
            n_files += 1
    code, out, _ = q(capsys, src, dst, "--batch-size", "256")
    assert code == 0 and f"quantized {n_files} images" in out
    calls: list[str] = []
    real = os.scandir

    def counting(path="."):
        calls.append(os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    code, out, _ = q(capsys, src, dst)
    assert code == 0 and f"skipped {n_files} finished" in out
    # SRC: 3 folders; DST: 3 output folders + the temp folder cleaned on start
    assert len(calls) == 7, calls
    assert len(set(calls)) == len(calls)


# ----------------------------------------------------------------------------- 5 memory
def test_queue_bounded_in_bytes_with_many_workers(tmp_path):
    """48 images of 1 MP, --workers 4 --batch-size 32 and a 32 MiB queue: the decoded images
    held never pass the queue plus one image, and the peak RSS of the process (a subprocess)
    rises by less than the queue's worth over a run on one such image (48 decoded images at
    once would add ~150 MiB)."""
    src, one = tmp_path / "s", tmp_path / "one"
    big = np.asarray(Image.open(tp.io.SAMPLE).convert("RGB").resize((1024, 1024)))
    for i in range(48):
        save(src / f"p{i:02d}.png", np.roll(big, 8 * i, axis=1), compress_level=0)
    save(one / "p.png", big, compress_level=0)
    code = (
        "import resource, sys\n"
        "from torchpalette.cli import commands\n"
        "opts = ['--workers', '4', '--batch-size', '32', '--queue-mib', '32', '--quiet',\n"
        "        '--device', 'cpu', '--colors', '8']\n"
        "assert commands.main(['quantize', sys.argv[1], sys.argv[3], *opts]) == 0\n"
        "print('ONE_MIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        "rc = commands.main(['quantize', sys.argv[2], sys.argv[4], *opts])\n"
        "print('ALL_MIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
        "sys.exit(rc)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-c", code, str(one), str(src), str(tmp_path / "d1"),
                          str(tmp_path / "d")], capture_output=True, text=True, env=env,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    held = [float(x) for x in re.findall(r"decoded images held at most (\d+) MiB", res.stdout)]
    one_mib = float(re.search(r"ONE_MIB ([\d.]+)", res.stdout).group(1))
    all_mib = float(re.search(r"ALL_MIB ([\d.]+)", res.stdout).group(1))
    assert held[-1] <= 32 + 4  # the budget, plus at most one image over it (4 MiB reserved)
    assert all_mib - one_mib < 80, res.stdout


# ----------------------------------------------------------------------------- 6 alpha
def test_fixed_256_colour_palette_keeps_transparency(capsys, tmp_path):
    rgb = np.asarray(Image.open(tp.io.SAMPLE).convert("RGB").resize((64, 32)))
    a = np.tile(np.linspace(0, 255, 64).astype(np.uint8), (32, 1))
    a[:, :8], a[:, -8:] = 0, 255
    save(tmp_path / "s" / "fade.png", np.dstack([rgb, a]))
    pal = RNG.integers(0, 256, (256, 3))
    (tmp_path / "p.txt").write_text("\n".join("#{:02x}{:02x}{:02x}".format(*c) for c in pal))
    code, _, err = q(capsys, tmp_path / "s", tmp_path / "d", "--palette", tmp_path / "p.txt")
    assert code == 0, err
    with Image.open(tmp_path / "d" / "fade.png") as im:
        assert im.mode == "P" and len(im.getpalette()) // 3 <= 256
        got = np.asarray(im.convert("RGBA"))
    assert (got[..., 3][a == 0] == 0).all()
    assert (got[..., 3][a == 255] == 255).all()
    partial = (a > 0) & (a < 255)
    assert np.abs(got[..., 3][partial].astype(int) - a[partial]).mean() < 40
    assert len(np.unique(got[..., 3][partial])) >= 4  # semi-transparent kept, not opaque
    allowed = {tuple(c) for c in pal}
    assert {tuple(c) for c in got[got[..., 3] > 0][:, :3]} <= allowed


def test_report_on_semi_transparent_rgba(capsys, tmp_path):
    rgb = np.asarray(Image.open(tp.io.SAMPLE).convert("RGB").resize((48, 48)))
    a = np.tile(np.linspace(0, 255, 48).astype(np.uint8), (48, 1))
    save(tmp_path / "semi.png", np.dstack([rgb, a]))
    for colors in ("2", "32", "256"):
        code, out, err = run(capsys, "report", tmp_path / "semi.png", "-o",
                             tmp_path / f"r{colors}.html", "--colors", colors, "--device", "cpu")
        assert code == 0, err
        assert "report written" in out and (tmp_path / f"r{colors}.html").stat().st_size > 1000


# ----------------------------------------------------------------------------- 7 inputs decided
def test_every_suffix_decided_and_hidden_files_counted(capsys, tmp_path):
    src = tmp_path / "s"
    for suffix in (".ppm", ".tga", ".ico"):  # Pillow reads these: decoded
        save(src / f"ok{suffix}", grey(9, 8))
    for name in ("a.heic", "b.jxl", "c.txt", "README"):
        (src / name).write_bytes(b"whatever")
    save(src / ".hidden.png", grey(1))
    code, out, err = q(capsys, src, tmp_path / "d")
    assert code == 0, err  # ok.ico sorts first and keeps ok.png; the others are renamed
    assert outputs(tmp_path / "d") == {"ok.png", "ok.ppm.png", "ok.tga.png"}
    line = next(x for x in err.splitlines() if x.startswith("skipped 5 files not decoded"))
    for part in ("1 .heic (HEIC/HEIF", "1 .jxl (JPEG XL", "1 .txt (not an image suffix)",
                 "1 (no suffix) (no suffix)", "1 hidden"):
        assert part in line, line


@pytest.mark.parametrize("fmt", ["apng", "tiff", "gif", "webp"])
def test_animated_and_multi_page_first_frame_with_a_note(capsys, tmp_path, fmt):
    frames = [Image.fromarray(grey(v, 6)) for v in (30, 200, 90)]
    name = {"apng": "anim.png", "tiff": "pages.tif", "gif": "anim.gif", "webp": "anim.webp"}[fmt]
    kw = {"lossless": True} if fmt == "webp" else {}
    (tmp_path / "s").mkdir()
    frames[0].save(tmp_path / "s" / name, save_all=True, append_images=frames[1:], **kw)
    code, out, err = q(capsys, tmp_path / "s", tmp_path / "d")
    assert code == 0, err
    out_name = Path(name).with_suffix(".png").name
    assert abs(int(rgb_of(tmp_path / "d" / out_name)[0, 0, 0]) - 30) <= 1  # the first frame
    assert f"note: {name}: animated or multi-page image of 3 frames: read the first frame" in err


@pytest.mark.parametrize("link", ["aaa", "zzz"])
def test_real_folder_keeps_its_name_whatever_the_symlink_order(capsys, tmp_path, link):
    src = tmp_path / "s"
    save(src / "real" / "x.png", grey(3))
    (src / link).symlink_to(src / "real", target_is_directory=True)
    code, _, err = q(capsys, src, tmp_path / "d")
    assert code == 0 and outputs(tmp_path / "d") == {"real/x.png"}
    assert f"skipped: {link}/: directory symlink to real/, walked under that name" in err


def test_symlink_loops_say_so(capsys, tmp_path):
    src = tmp_path / "s"
    save(src / "ok.png", grey(3))
    (src / "a.png").symlink_to(src / "b.png")
    (src / "b.png").symlink_to(src / "a.png")
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    code, _, err = q(capsys, src, tmp_path / "d")
    assert code == 0 and outputs(tmp_path / "d") == {"ok.png"}
    assert "skipped: a.png: symlink loop" in err and "skipped: b.png: symlink loop" in err
    assert "skipped: gone.png: broken symlink" in err


def test_file_folder_clash_resolved_like_name_clashes(capsys, tmp_path):
    src = tmp_path / "s"
    save(src / "a.jpg", grey(40), quality=100)
    save(src / "a.png" / "inner.png", grey(80))
    code, out, err = q(capsys, src, tmp_path / "d")
    assert code == 0, err
    assert outputs(tmp_path / "d") == {"a.jpg.png", "a.png/inner.png"}
    assert "renamed 1 outputs" in out
    assert q(capsys, src, tmp_path / "d")[0] == 0  # and again: no FileExistsError


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_out_of_range_seed_is_usage_error(capsys, tmp_path, seed):
    save(tmp_path / "s" / "x.png", grey(3))
    code, out, err = q(capsys, tmp_path / "s", tmp_path / "d", "--seed", seed)
    assert code == 2 and out == "" and "--seed" in err and not (tmp_path / "d").exists()
    assert run(capsys, "palette", tmp_path / "s" / "x.png", "--seed", seed)[0] == 2


def test_palette_prints_the_good_files_and_lists_the_bad(capsys, tmp_path):
    good1, good2 = save(tmp_path / "g1.png", grey(10)), save(tmp_path / "g2.png", grey(200))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    code, out, err = run(capsys, "palette", good1, tmp_path / "bad.png", good2, "-k", "1")
    assert code == 1
    assert out.splitlines() == [f"# {good1}", "#0a0a0a", f"# {good2}", "#c8c8c8"]
    assert "failed: " in err and "bad.png" in err and "not a readable image" in err


# ----------------------------------------------------------------------------- 9 smaller points
def test_output_bytes_do_not_depend_on_batch_size(capsys, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    photo = Image.open(tp.io.SAMPLE).convert("RGB")
    for i in range(16):  # crops of one size: one batch at 16, sixteen at 1
        x, y = RNG.integers(0, 512 - 128, 2)
        photo.crop((x, y, x + 128, y + 128)).resize((160, 160)).save(src / f"c{i:02d}.png")
    for bs in ("1", "16"):
        q(capsys, src, tmp_path / f"d{bs}", "--batch-size", bs)
    for i in range(16):
        name = f"c{i:02d}.png"
        assert (tmp_path / "d1" / name).read_bytes() == (tmp_path / "d16" / name).read_bytes()


def test_newline_names_are_quoted_in_the_failure_list(capsys, tmp_path):
    src = tmp_path / "s"
    src.mkdir()
    (src / "evil\nfailed: forged.png.png").write_bytes(b"not an image")
    code, _, err = q(capsys, src, tmp_path / "d")
    assert code == 1
    assert not any(line.startswith("failed: forged") for line in err.splitlines())
    assert "failed: 'evil\\nfailed: forged.png.png': " in err


def test_decompression_bomb_fails_with_path_and_option(capsys, tmp_path):
    src = tmp_path / "s"
    save(src / "big.png", np.zeros((300, 400, 3), np.uint8))
    code, _, err = q(capsys, src, tmp_path / "d", "--max-pixels", "100000")
    assert code == 1 and "failed: big.png: ValueError:" in err and "--max-pixels" in err
    assert "120,000 pixels" in err
    assert q(capsys, src, tmp_path / "d", "--max-pixels", "120000")[0] == 0


def test_report_to_a_missing_folder_is_exit_2_before_work(capsys, tmp_path, monkeypatch):
    from torchpalette.cli import report

    monkeypatch.setattr(report, "make_report", lambda *a, **k: pytest.fail("work was done"))
    code, out, err = run(capsys, "report", "-o", tmp_path / "missing" / "x.html")
    assert code == 2 and out == "" and "-o/--output" in err and "missing" in err


@pytest.mark.parametrize("text, want", [
    ("#abc\n#112233\n", "ok"),
    ("GIMP Palette\nName: x\n#\n255 0 0 red\n0 0 zero\n", "line 5"),
    ("GIMP Palette\n1 2 3\n300 0 0 too bright\n", "line 3"),
    ("#ff00\n", "line 1"),
    ('[{"colors": [{"rgb": [1, 2, 3]}, {"rgb": [1, 2, 256]}]}]', "colour 2"),
])
def test_palette_file_lines_checked(capsys, tmp_path, text, want):
    from torchpalette.cli.errors import UsageError
    from torchpalette.cli.palette_files import load_palette

    path = tmp_path / "p.txt"
    path.write_text(text)
    if want == "ok":
        got = (load_palette(path) * 255).round().int().tolist()
        assert got == [[0xaa, 0xbb, 0xcc], [0x11, 0x22, 0x33]]
        return
    with pytest.raises(UsageError, match=f"--palette: .*{want}"):
        load_palette(path)


def test_library_warnings_reach_users_as_one_plain_line(capsys, tmp_path):
    save(tmp_path / "flat.png", grey(10))
    code, out, err = run(capsys, "palette", tmp_path / "flat.png", "-k", "4")
    assert code == 0 and out.strip()
    assert "UserWarning" not in err and ".py:" not in err and "torchpalette/" not in err
    assert "note: " in err and "fewer distinct" in err


def test_huge_k_and_kmeans_inputs_refused_at_once():
    import torch

    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"k: expected at most the pixels per image \(64\)"):
        tp.palette(img, k=10**8)
    with pytest.raises(ValueError, match=r"colors: expected at most"):
        tp.quantize(img, colors=10**8)
    pts = torch.rand(50, 3)
    with pytest.raises(ValueError, match=r"points: expected values with \|x\| <="):
        tp.kmeans(pts * 1e20, 3)
    with pytest.raises(ValueError, match="weights: expected a total per batch element"):
        tp.kmeans(pts, 3, weights=torch.full((50,), 1e38))
    with pytest.raises(ValueError, match="points: expected a tensor with data .* meta"):
        tp.kmeans(torch.empty(50, 3, device="meta"), 3)
    assert tp.kmeans(pts * 1e15, 3).centroids.isfinite().all()  # large but safe: fine
