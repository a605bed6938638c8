"""``torchpalette quantize --format tokens|npy`` (issue 22, the gaps): every option applies or
exits 2 naming itself; resume, staleness (``--hash``), damaged shards and orphans
(``--delete-orphans``) behave like the PNG mirror's at shard granularity; ``--queue-mib`` and
``--max-pixels`` reach the decoder; npy under torchrun equals one process; a Hugging Face
dataset saved to disk is a SRC."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import torchrun_cli
from torchpalette.cli import commands as cli
from torchpalette.cli import pipeline

ROOT = Path(__file__).resolve().parents[1]


def images(root: Path, n: int, size=(6, 7), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def run(*argv: str) -> int:
    return cli.main(["quantize", *argv, "--workers", "0", "--quiet"])


def shard_keys(dst: Path) -> dict[str, list[str]]:
    """Shard name -> the sample keys it holds."""
    out = {}
    for shard in sorted(dst.glob("*.tar")):
        with tarfile.open(shard) as tar:
            out[shard.name] = sorted({m.name.split(".")[0] for m in tar.getmembers()})
    return out


def stamps(dst: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in dst.glob("*.tar")}


@pytest.mark.parametrize("argv, option", [
    (["--format", "png", "--shard-size", "2"], "--shard-size"),
    (["--format", "png", "--shard-bytes", "1M"], "--shard-bytes"),
    (["--format", "png", "--image-column", "img"], "--image-column"),
    (["--format", "tokens", "--optimize"], "--optimize"),
    (["--format", "npy", "--optimize"], "--optimize"),
    (["--format", "npy", "--shard-size", "2"], "--shard-size"),
    (["--format", "tokens", "--image-column", "img"], "--image-column"),  # a folder SRC
])
def test_option_a_format_does_not_use_exits_2_naming_it(tmp_path, capsys, argv, option):
    src = images(tmp_path / "src", 2)
    assert run(str(src), str(tmp_path / "dst"), *argv) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err
    assert not list((tmp_path / "dst").glob("*.*")) if (tmp_path / "dst").exists() else True


def test_queue_mib_and_max_pixels_reach_the_decoder(tmp_path, monkeypatch, capsys):
    src = images(tmp_path / "src", 3)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src / "big.png")
    budgets = []
    real = pipeline.Decoder

    def spy(*args, **kw):
        budgets.append((kw["budget"], kw["max_pixels"]))
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "Decoder", spy)
    for fmt in ("tokens", "npy"):
        assert run(str(src), str(tmp_path / fmt), "--format", fmt, "--queue-mib", "17",
                   "--max-pixels", "300") == 1  # big.png: 400 pixels, refused alone
        err = capsys.readouterr().err
        assert "big.png" in err and "failed" in err
    assert budgets == [(17 << 20, 300)] * 2
    assert sorted(k for ks in shard_keys(tmp_path / "tokens").values() for k in ks) == [
        "0_png", "1_png", "2_png"]
    assert np.load(tmp_path / "npy" / "indices.npy").shape == (3, 6, 7)


def test_rerun_does_nothing_damaged_shard_redone_hash_sees_content(tmp_path, capsys):
    src = images(tmp_path / "src", 4)
    dst = tmp_path / "dst"
    args = ["--format", "tokens", "--colors", "3", "--shard-size", "2"]
    assert run(str(src), str(dst), *args) == 0
    first = stamps(dst)
    capsys.readouterr()
    assert run(str(src), str(dst), *args) == 0
    assert stamps(dst) == first and "skipped 4 finished" in capsys.readouterr().out
    # a shard changed since written (truncated) is redone
    with open(dst / "shard-000001.tar", "r+b") as f:
        f.truncate(1024)
    assert run(str(src), str(dst), *args) == 0
    assert (dst / "shard-000001.tar").stat().st_size > 1024
    assert stamps(dst)["shard-000000.tar"] == first["shard-000000.tar"]
    # same size and mtime, new content: only --hash sees it
    st = (src / "0.png").stat()
    other = io.BytesIO()
    Image.fromarray(np.full((6, 7, 3), 9, np.uint8)).save(other, format="PNG")
    data = other.getvalue()
    (src / "0.png").write_bytes(data[: st.st_size].ljust(st.st_size, b"\0"))
    os.utime(src / "0.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    before = stamps(dst)
    assert run(str(src), str(dst), *args) == 0
    assert stamps(dst) == before
    assert run(str(src), str(dst), *args, "--hash") in (0, 1)  # re-planned: every unit redone
    assert stamps(dst)["shard-000000.tar"] != before["shard-000000.tar"]
    mtime = stamps(dst)
    assert run(str(src), str(dst), *args, "--hash") in (0, 1)
    assert stamps(dst)["shard-000001.tar"] == mtime["shard-000001.tar"]


def _tar(path: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(buf, "PNG")
            info = tarfile.TarInfo(f"{path.stem}_{i}.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))


def test_orphan_shards_of_a_removed_tar_kept_then_deleted(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    for s in range(3):
        _tar(tmp_path / "in" / f"part-{s}.tar", 2, s)
    dst = tmp_path / "dst"
    args = ["--format", "tokens", "--colors", "3"]
    assert run(f"{tmp_path}/in/*.tar", str(dst), *args) == 0
    (tmp_path / "in" / "part-1.tar").unlink()
    capsys.readouterr()
    assert run(f"{tmp_path}/in/*.tar", str(dst), *args) == 0
    err = capsys.readouterr().err
    assert "orphans: 1" in err and "part-1.tar" in err and "kept" in err
    assert sorted(shard_keys(dst)) == ["part-0.tar", "part-1.tar", "part-2.tar"]  # kept
    assert run(f"{tmp_path}/in/*.tar", str(dst), *args, "--delete-orphans") == 0
    assert "deleted" in capsys.readouterr().err
    assert sorted(shard_keys(dst)) == ["part-0.tar", "part-2.tar"]
    assert run(f"{tmp_path}/in/*.tar", str(dst), *args) == 0
    assert "orphans" not in capsys.readouterr().err  # forgotten once deleted


def test_orphan_in_a_shard_to_rewrite_needs_delete_orphans(tmp_path, capsys):
    src = images(tmp_path / "src", 5)
    dst = tmp_path / "dst"
    args = ["--format", "tokens", "--colors", "3", "--shard-size", "2"]
    assert run(str(src), str(dst), *args) == 0
    before = {p.name: p.read_bytes() for p in dst.glob("*.tar")}
    (src / "1.png").unlink()
    capsys.readouterr()
    assert run(str(src), str(dst), *args) == 2  # its shard must be rewritten: refuse, untouched
    err = capsys.readouterr().err
    assert "--delete-orphans" in err and "1.png" in err
    assert {p.name: p.read_bytes() for p in dst.glob("*.tar")} == before
    assert run(str(src), str(dst), *args, "--delete-orphans") == 0
    keys = shard_keys(dst)
    assert sorted(k for ks in keys.values() for k in ks) == ["0_png", "2_png", "3_png", "4_png"]
    assert run(str(src), str(tmp_path / "clean"), *args) == 0  # equal to a fresh run
    assert {p.name: p.read_bytes() for p in dst.glob("*.tar")} == {
        p.name: p.read_bytes() for p in (tmp_path / "clean").glob("*.tar")}
    # npy: the array is rewritten, so a gone source needs the flag too
    assert run(str(src), str(tmp_path / "npy"), "--format", "npy") == 0
    (src / "4.png").unlink()
    assert run(str(src), str(tmp_path / "npy"), "--format", "npy") == 2
    assert len(json.loads((tmp_path / "npy" / "keys.json").read_text())) == 4
    assert run(str(src), str(tmp_path / "npy"), "--format", "npy", "--delete-orphans") == 0
    assert [k["key"] for k in json.loads((tmp_path / "npy" / "keys.json").read_text())] == [
        "0_png", "2_png", "3_png"]


def test_fewer_parts_after_a_change_leave_no_stale_part(tmp_path):
    src = images(tmp_path / "src", 4, size=(40, 40))
    dst = tmp_path / "dst"
    args = ["--format", "tokens", "--colors", "3", "--shard-bytes", "8k"]
    assert run(str(src), str(dst), *args) == 0
    assert len(shard_keys(dst)) == 4  # one sample a part
    for p in src.iterdir():
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(p)  # smaller: two a part
    assert run(str(src), str(dst), *args) == 0
    keys = shard_keys(dst)
    assert list(keys) == ["shard-000000.tar", "shard-000000_1.tar"]  # old _2, _3 removed
    assert sum(len(k) for k in keys.values()) == 4


def test_dataset_palette_of_an_earlier_run_does_not_outlive_it(tmp_path):
    """A run with each sample's own palette after one with a dataset palette leaves no
    dataset ``palette.npy`` beside shards that no longer use it."""
    src = images(tmp_path / "src", 3)
    dst = tmp_path / "dst"
    assert run(str(src), str(dst), "--format", "tokens", "--fit-palette", "--colors", "4") == 0
    assert (dst / "palette.npy").is_file() and (dst / "palette.json").is_file()
    assert run(str(src), str(dst), "--format", "tokens", "--colors", "4") == 0
    assert not (dst / "palette.npy").exists() and not (dst / "palette.json").exists()
    with tarfile.open(next(dst.glob("*.tar"))) as tar:
        assert any(m.name.endswith(".palette.npy") for m in tar.getmembers())


def test_npy_rerun_does_nothing(tmp_path, capsys):
    src = images(tmp_path / "src", 3)
    dst = tmp_path / "dst"
    assert run(str(src), str(dst), "--format", "npy") == 0
    stamp = (dst / "indices.npy").stat().st_mtime_ns
    capsys.readouterr()
    assert run(str(src), str(dst), "--format", "npy") == 0
    assert (dst / "indices.npy").stat().st_mtime_ns == stamp
    assert "skipped 3 finished" in capsys.readouterr().out


def test_saved_hugging_face_dataset_is_a_src(tmp_path, capsys):
    datasets = pytest.importorskip("datasets")
    rng = np.random.default_rng(4)
    cells, want = [], {}
    for i in range(5):
        arr = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        cells.append({"bytes": b"not an image" if i == 3 else buf.getvalue(), "path": None})
        want[i] = arr
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    ds = datasets.Dataset.from_dict({"image": cells, "label": [10 + i for i in range(5)]},
                                    features=features)
    ds.save_to_disk(str(tmp_path / "hf"), num_shards=2)
    dst = tmp_path / "out"
    assert run(str(tmp_path / "hf"), str(dst), "--format", "tokens", "--colors", "4",
               "--shard-size", "2") == 1
    err = capsys.readouterr().err
    assert "failed: " in err and "data-00001-of-00002.arrow:0" in err  # row 3: fails alone
    from test_tokens import read_shards

    samples = read_shards(dst)
    assert len(samples) == 4 and len(list(dst.glob("*.tar"))) == 3  # 3 + 2 rows, 2 a shard
    labels = sorted(json.loads(m["json"])["torchpalette"]["label"] for m in samples.values())
    assert labels == [10, 11, 12, 14]
    # the tokens decode to the PNG mirror of the same images
    png = tmp_path / "png"
    png.mkdir()
    for i, arr in want.items():
        Image.fromarray(arr).save(png / f"{i}.png")
    assert run(str(png), str(tmp_path / "ref"), "--format", "tokens", "--colors", "4") == 0
    ref = read_shards(tmp_path / "ref")
    got = {json.loads(m["json"])["torchpalette"]["label"] - 10: m for m in samples.values()}
    for i, m in got.items():
        assert m["idx.npy"] == ref[f"{i}_png"]["idx.npy"]
    assert run(str(tmp_path / "hf"), str(tmp_path / "npy"), "--format", "npy",
               "--image-column", "image") == 1
    assert np.load(tmp_path / "npy" / "indices.npy").shape == (4, 4, 6)
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dd"))
    assert run(str(tmp_path / "dd"), str(tmp_path / "o"), "--format", "tokens") == 2
    assert "split" in capsys.readouterr().err


@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_gloo_available()), reason="needs gloo")
def test_npy_under_torchrun_equals_one_process(tmp_path):
    """2 gloo ranks write parts that rank 0 joins: the same keys, rows and palettes as one
    process; an image of another size (on rank 1) fails alone, as it does in one process."""
    src = images(tmp_path / "src", 9, size=(5, 6))
    # units of --batch-size (2) samples in turn: 5b.png (after 5.png) opens unit 3, rank 1's
    Image.fromarray(np.zeros((3, 3, 3), np.uint8)).save(src / "5b.png")
    args = ["quantize", str(src), "", "--format", "npy", "--colors", "5", "--workers", "0",
            "--quiet", "--device", "cpu", "--batch-size", "2"]
    one = tmp_path / "one"
    assert cli.main([*args[:2], str(one), *args[3:]]) == 1
    many = tmp_path / "many"
    codes, logs = torchrun_cli([*args[:2], str(many), *args[3:]])
    assert codes == [1, 1], logs
    assert "failed: 5b.png" in logs[0] and "3x3" in logs[0]
    for name in ("keys.json", "palettes.npy", "indices.npy"):
        assert (one / name).read_bytes() == (many / name).read_bytes(), name
    assert np.load(many / "indices.npy").shape == (9, 5, 6)
