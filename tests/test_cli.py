"""The `torchpalette` command through its entry point `main(argv)`: outputs, not just exit codes."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchpalette.cli import commands as cli
from torchpalette.cli import plan as folder
from torchpalette.cli.palette_files import load_palette

HEX = re.compile(r"^#[0-9a-f]{6}$")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def blocks(colors: list[tuple[int, int, int]], counts: list[int], width: int = 10) -> np.ndarray:
    """An image of horizontal bands: colour i fills counts[i] rows of ``width`` pixels."""
    rows = [np.tile(np.array(c, np.uint8), (n, width, 1))
            for c, n in zip(colors, counts, strict=True)]
    return np.concatenate(rows)


@pytest.fixture
def photo(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (4, 3), dtype=np.uint8)
    img = base[rng.integers(0, 4, (24, 20))] + rng.integers(0, 6, (24, 20, 3), dtype=np.uint8)
    return save(tmp_path / "photo.png", img)


@pytest.fixture
def tree(tmp_path) -> tuple[Path, Path]:
    """SRC with nested folders, a corrupt file, a zero-byte file, grey, RGBA and 16-bit PNGs."""
    src, rng = tmp_path / "src", np.random.default_rng(0)

    def rgb(h=12, w=10):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    save(src / "one.png", rgb())
    save(src / "a" / "two.jpg", rgb())
    save(src / "a" / "b" / "three.webp", rgb(8, 14))
    save(src / "a" / "grey.png", rgb()[..., 0])
    save(src / "a" / "rgba.png", np.dstack([rgb(), rng.integers(0, 256, (12, 10), np.uint8)]))
    save(src / "a" / "b" / "deep16.png", rng.integers(0, 65536, (12, 10)).astype(np.uint16))
    (src / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (src / "zero.png").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    return src, tmp_path / "dst"


OUTPUTS = {"one.png", "a/two.png", "a/b/three.png", "a/grey.png", "a/rgba.png", "a/b/deep16.png"}
FAILED = {"a/corrupt.jpg", "zero.png"}


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Visible files (DST/.torchpalette/, the lock and record, stays between runs)."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_ino)
            for p in root.rglob("*") if p.is_file() and ".torchpalette" not in p.parts}


# ----------------------------------------------------------------------------- usage
@pytest.mark.parametrize("command", ["report", "palette", "dominant", "delta-e", "quantize"])
def test_help_has_example(capsys, command):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "Example:" in out and f"torchpalette {command}" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["palette", "missing.png"],
        ["palette", "-k", "0", "x.png"],
        ["quantize", "SRC", "DST", "--colors", "0"],
        ["quantize", "SRC", "SRC/inside"],
        ["quantize", "missing-dir", "DST"],
        ["dominant", "missing.png"],
        ["delta-e", "#ff0000", "not-a-colour"],
        ["report", "missing.png"],
        ["frobnicate"],
    ],
)
def test_bad_usage_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "SRC").mkdir()
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "error:" in err
    assert not (tmp_path / "SRC" / "inside").exists()


def test_debug_shows_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "--debug", "delta-e", "#ff0000", "nope")
    assert code == 2 and "Traceback" in err


def test_python_m_entry_point(capsys, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", ["torchpalette", "delta-e", "#000000", "#ffffff",
                                      "--method", "cie76", "--format", "json"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("torchpalette", run_name="__main__")
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["delta_e"] == pytest.approx(100.0, abs=1e-3)


def test_a_torchrun_rank_leaves_through_os_exit(capsys, monkeypatch):
    """Launched as a torchrun rank, the command flushes and leaves with ``os._exit`` (no
    interpreter teardown, where gloo can abort a finished rank); otherwise ``sys.exit``."""
    from torchpalette.cli import commands

    argv = ["torchpalette", "delta-e", "#000000", "#ffffff", "--method", "cie76"]
    monkeypatch.setattr(sys, "argv", argv)
    left = []

    def fake_exit(code):
        left.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(commands.os, "_exit", fake_exit)
    with pytest.raises(SystemExit):
        commands.run()
    assert left == []  # not a rank: sys.exit
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1"),
                        ("LOCAL_WORLD_SIZE", "2")):
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit):
        commands.run()
    assert left == [0]
    assert "100" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda_is_usage_error(capsys, photo):
    code, _, err = run(capsys, "palette", photo, "--device", "cuda")
    assert code == 2 and "CUDA" in err


# ----------------------------------------------------------------------------- delta-e
def test_delta_e_identical_is_under_jnd(capsys):
    code, out, _ = run(capsys, "delta-e", "#ff0000", "red")
    assert code == 0
    assert "0.0000" in out and "under the JND" in out


@pytest.mark.parametrize("method", ["ciede2000", "cie94", "cie76"])
def test_delta_e_json_matches_library(capsys, method):
    import torchpalette as tp

    code, out, _ = run(capsys, "delta-e", "255,136,0", "#3366cc", "--method", method,
                       "--format", "json")
    res = json.loads(out)
    want = float(tp.delta_e(tp.parse_colors([(255, 136, 0)]), tp.parse_colors(["#3366cc"]),
                            method=method)[0])
    assert code == 0 and res["a"] == "#ff8800" and res["b"] == "#3366cc"
    assert res["delta_e"] == pytest.approx(want, rel=1e-6) and res["under_jnd"] is False


# ----------------------------------------------------------------------------- palette / dominant
def test_palette_json(capsys, photo):
    code, out, _ = run(capsys, "palette", photo, "-k", "4", "--format", "json")
    (entry,) = json.loads(out)
    assert code == 0 and entry["image"] == str(photo) and len(entry["colors"]) == 4
    for c in entry["colors"]:
        assert HEX.match(c["hex"]) and c["hex"] == "#{:02x}{:02x}{:02x}".format(*c["rgb"])
    weights = [c["weight"] for c in entry["colors"]]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5) and weights == sorted(weights)[::-1]


def test_palette_several_images_batched_equals_single(capsys, tmp_path, photo):
    rng = np.random.default_rng(3)
    other = save(tmp_path / "other.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    odd = save(tmp_path / "odd.png", rng.integers(0, 256, (9, 7, 3), dtype=np.uint8))
    _, out, _ = run(capsys, "palette", photo, other, odd, "-k", "3", "--format", "json")
    many = json.loads(out)
    assert [e["image"] for e in many] == [str(photo), str(other), str(odd)]
    for entry in many:
        _, out, _ = run(capsys, "palette", entry["image"], "-k", "3", "--format", "json")
        single = json.loads(out)[0]
        assert [c["hex"] for c in single["colors"]] == [c["hex"] for c in entry["colors"]]


def test_palette_hex_css_gpl(capsys, photo):
    _, out, _ = run(capsys, "palette", photo, "-k", "3", "--format", "hex")
    lines = out.split()
    assert len(lines) == 3 and all(HEX.match(x) for x in lines)
    _, css, _ = run(capsys, "palette", photo, "-k", "3", "--format", "css")
    assert re.findall(r"--color-(\d+): (#[0-9a-f]{6});", css) == [
        (str(i), h) for i, h in enumerate(lines, 1)]
    _, gpl, _ = run(capsys, "palette", photo, "-k", "3", "--format", "gpl")
    head, *rows = gpl.strip().splitlines()[:1] + gpl.strip().splitlines()[4:]
    assert head == "GIMP Palette" and gpl.splitlines()[1].startswith("Name: ")
    assert gpl.splitlines()[2] == "Columns: 3" and gpl.splitlines()[3] == "#"
    assert len(rows) == 3
    for row, h in zip(rows, lines, strict=True):
        m = re.match(r"^\s*(\d+)\s+(\d+)\s+(\d+)\t(.*)$", row)
        assert m and all(0 <= int(x) <= 255 for x in m.groups()[:3])
        assert "#{:02x}{:02x}{:02x}".format(*map(int, m.groups()[:3])) == h


def test_dominant_known_counts(capsys, tmp_path):
    colors = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (128, 128, 128)]
    path = save(tmp_path / "bands.png", blocks(colors, [4, 3, 2, 1]))
    code, out, _ = run(capsys, "dominant", path, "--top-n", "4", "--bins", "4", "--format", "json")
    (entry,) = json.loads(out)
    assert code == 0
    assert [tuple(c["rgb"]) for c in entry["colors"]] == colors
    assert [c["weight"] for c in entry["colors"]] == pytest.approx([0.4, 0.3, 0.2, 0.1])


# ----------------------------------------------------------------------------- quantize
def test_quantize_tree(capsys, tree):
    src, dst = tree
    before = snapshot(src)
    code, out, err = run(capsys, "quantize", src, dst, "--colors", "4", "--workers", "0",
                         "--batch-size", "3", "--quiet")
    assert code == 1
    assert snapshot(src) == before  # SRC untouched
    assert set(snapshot(dst)) == OUTPUTS
    failed = {m.group(1) for m in re.finditer(r"^failed: (\S+): .+$", err, re.M)}
    assert failed == FAILED
    assert "quantized 6 images" in out and "2 failed" in out
    for rel in OUTPUTS:
        out_img = Image.open(dst / rel)
        src_rel = next(p for p in before if Path(p).with_suffix(".png").as_posix() == rel)
        src_img = Image.open(src / src_rel)
        assert out_img.size == src_img.size
        rgba = np.asarray(out_img.convert("RGBA"))
        assert out_img.mode == "P"  # indexed PNG, alpha entries included in the 4 colours
        assert len(out_img.getpalette()) // 3 <= 4
        assert len(np.unique(rgba.reshape(-1, 4), axis=0)) <= 4
        if rel == "a/rgba.png":  # transparent stays transparent, opaque stays opaque
            a = np.asarray(src_img)[..., 3]
            assert (rgba[..., 3][a == 0] == 0).all() and (rgba[..., 3][a == 255] == 255).all()
            assert (a == 0).any()
        else:
            assert (rgba[..., 3] == 255).all()


def test_quantize_workers_give_same_bytes(capsys, tree, tmp_path):
    src, dst = tree
    run(capsys, "quantize", src, dst, "--colors", "3", "--workers", "0", "--quiet")
    code, _, _ = run(capsys, "quantize", src, tmp_path / "dst2", "--colors", "3",
                     "--workers", "2", "--batch-size", "2", "--quiet")
    assert code == 1
    for rel in OUTPUTS:
        assert (dst / rel).read_bytes() == (tmp_path / "dst2" / rel).read_bytes(), rel


def test_quantize_killed_midway_then_resumed(capsys, tree, monkeypatch):
    src, dst = tree
    from torchpalette.cli import dstdir, sink

    real_write, calls = sink.write_atomic, []

    def dying_write(data, dst, tmp_dir):
        calls.append(dst)
        if len(calls) == 3:  # half a file on disk, then the process "dies"
            dstdir.temp_path(tmp_dir).write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        return real_write(data, dst, tmp_dir)

    monkeypatch.setattr(sink, "write_atomic", dying_write)
    code, _, err = run(capsys, "quantize", src, dst, "--workers", "0", "--batch-size", "1",
                       "--quiet")
    assert code == 130 and "interrupted" in err
    first = snapshot(dst)
    assert 0 < len(first) < len(OUTPUTS)
    for rel in first:  # nothing partial: only complete PNGs, no temp files
        assert rel in OUTPUTS
        Image.open(dst / rel).verify()
    # a temp file left behind by a SIGKILL is cleaned up by the next run
    leftovers = list((dst / ".torchpalette" / "tmp").iterdir())
    assert len(leftovers) == 1 and leftovers[0].suffix == ".part"
    monkeypatch.setattr(sink, "write_atomic", real_write)
    code, out, _ = run(capsys, "quantize", src, dst, "--workers", "0", "--quiet")
    assert code == 1 and f"skipped {len(first)} finished" in out
    assert not list((dst / ".torchpalette" / "tmp").iterdir())
    second = snapshot(dst)
    assert set(second) == OUTPUTS
    assert all(second[rel] == first[rel] for rel in first)  # finished ones not rewritten
    for rel in OUTPUTS:
        Image.open(dst / rel).verify()
    # --overwrite redoes everything
    run(capsys, "quantize", src, dst, "--workers", "0", "--quiet", "--overwrite")
    assert all(snapshot(dst)[rel] != first[rel] for rel in first)


def test_quantize_palette_file_roundtrip(capsys, tree, photo, tmp_path):
    src, dst = tree
    _, out, _ = run(capsys, "palette", photo, "-k", "5", "--format", "json")
    pal_file = tmp_path / "pal.json"
    pal_file.write_text(out)
    allowed = {tuple(c["rgb"]) for c in json.loads(out)[0]["colors"]}
    code, _, _ = run(capsys, "quantize", src, dst, "--palette", pal_file, "--workers", "0",
                     "--quiet")
    assert code == 1
    for rel in OUTPUTS:
        rgba = np.asarray(Image.open(dst / rel).convert("RGBA")).reshape(-1, 4)
        assert {tuple(c) for c in np.unique(rgba[rgba[:, 3] > 0, :3], axis=0)} <= allowed


@pytest.mark.parametrize("fmt", ["gpl", "hex"])
def test_load_palette_text_formats(capsys, photo, tmp_path, fmt):
    _, out, _ = run(capsys, "palette", photo, "-k", "3", "--format", fmt)
    (tmp_path / "p.txt").write_text(out)
    _, js, _ = run(capsys, "palette", photo, "-k", "3", "--format", "json")
    want = torch.tensor([c["rgb"] for c in json.loads(js)[0]["colors"]]) / 255.0
    assert torch.equal(load_palette(tmp_path / "p.txt"), want.float())


def test_quantize_fit_palette_shares_one_palette(capsys, tree):
    src, dst = tree
    code, _, _ = run(capsys, "quantize", src, dst, "--fit-palette", "--colors", "6",
                     "--workers", "0", "--quiet")
    assert code == 1
    seen = set()
    for rel in OUTPUTS:
        rgba = np.asarray(Image.open(dst / rel).convert("RGBA")).reshape(-1, 4)
        seen |= {tuple(c) for c in np.unique(rgba[rgba[:, 3] > 0, :3], axis=0)}
    assert len(seen) <= 6


def test_plan_jobs_collisions_and_shard(tmp_path):
    src = tmp_path / "s"
    for name in ["a.jpg", "a.png", "b.JPG", "c/d.tiff"]:
        save(src / name, np.zeros((2, 2, 3), np.uint8))
    jobs = folder.plan_jobs(src, tmp_path / "d").jobs
    assert [(j.rel, j.dst.relative_to((tmp_path / "d").resolve()).as_posix()) for j in jobs] == [
        ("a.jpg", "a.jpg.png"), ("a.png", "a.png"), ("b.JPG", "b.png"), ("c/d.tiff", "c/d.png")]
    for world in (1, 2, 3, 5):
        shards = [folder.shard(jobs, r, world) for r in range(world)]
        flat = [j for s in shards for j in s]
        assert sorted(flat, key=lambda j: j.rel) == jobs  # every job exactly once
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank"):
        folder.shard(jobs, 2, 2)
