"""``torchpalette quantize --format tokens|npy`` (issue 22): token shards decode to the PNG
mirror's pixels; WebDataset and Parquet sources with their other members passed through; bad
samples fail alone; K > 256 gives uint16; a killed run resumes with no partial shard visible;
the npy form memory-maps and matches the shards."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import torchpalette as tp
from tests.conftest import torchrun_cli
from torchpalette.cli import commands as cli
from torchpalette.cli.sources import expand_pattern, sample_keys

ROOT = Path(__file__).resolve().parents[1]


def make_tree(root: Path, n: int = 9, corrupt: bool = True) -> Path:
    """``n`` small PNG/JPEG images in nested folders (two sizes, one RGBA) + a corrupt file."""
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (7, 3), dtype=np.uint8)
    for i in range(n):
        h, w = (10, 12) if i % 3 else (8, 8)
        arr = base[rng.integers(0, 7, (h, w))] + rng.integers(0, 6, (h, w, 3), dtype=np.uint8)
        path = root / "ab"[i % 2] / f"img{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if i == 4:  # RGBA with transparency: its own palette with alpha entries
            alpha = np.full((h, w, 1), 255, np.uint8)
            alpha[:3] = 0
            alpha[3:5] = 128
            Image.fromarray(np.concatenate([arr, alpha], 2)).save(path)
        else:
            Image.fromarray(arr).save(path)
    if corrupt:
        (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


def run(*argv: str) -> int:
    return cli.main(["quantize", *argv, "--workers", "0", "--quiet"])


def read_shards(dst: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of every ``*.tar`` in ``dst``: key -> {suffix: bytes}."""
    out: dict[str, dict[str, bytes]] = {}
    for shard in sorted(dst.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                head, _, last = m.name.rpartition("/")
                stem, _, suffix = last.partition(".")
                key = f"{head}/{stem}" if head else stem
                out.setdefault(key, {})[suffix] = tar.extractfile(m).read()
    return out


def decode(dst: Path, members: dict[str, bytes]) -> np.ndarray:
    """``palette[indices]`` -> ``[C, H, W]`` uint8, the sample's palette or the dataset's."""
    idx = np.load(io.BytesIO(members["idx.npy"]))
    if "palette.npy" in members:
        pal = np.load(io.BytesIO(members["palette.npy"]))
    else:
        pal = np.load(dst / "palette.npy")
    return pal[idx].transpose(2, 0, 1)


def png_pixels(path: Path) -> np.ndarray:
    img = tp.read_image(path).numpy()
    return img


@pytest.mark.parametrize("opts", [["--colors", "6"], ["--fit-palette", "--colors", "12"],
                                  ["--colors", "6", "--dither", "ordered"],
                                  ["--colors", "6", "--dither", "floyd-steinberg",
                                   "--dither-strength", "0.5"]])
def test_folder_tokens_decode_to_png_mirror(tmp_path, opts):
    src = make_tree(tmp_path / "src")
    assert run(str(src), str(tmp_path / "png"), *opts) == 1  # the corrupt file fails
    assert run(str(src), str(tmp_path / "tok"), "--format", "tokens", "--shard-size", "4",
               *opts) == 1
    samples = read_shards(tmp_path / "tok")
    pngs = sorted((tmp_path / "png").rglob("*.png"))
    assert len(samples) == len(pngs) == 9
    for png in pngs:
        rel = png.relative_to(tmp_path / "png")
        key = sample_keys([rel.as_posix()])[0]
        members = samples[key]
        meta = json.loads(members["json"])["torchpalette"]
        assert meta["source"] == rel.as_posix()
        got, want = decode(tmp_path / "tok", members), png_pixels(png)
        if got.shape[0] == 4 and want.shape[0] == 3:  # an opaque image's PNG has no alpha
            assert (got[3] == 255).all()
            got = got[:3]
        np.testing.assert_array_equal(got, want, err_msg=str(rel))
        assert np.load(io.BytesIO(members["idx.npy"])).dtype == np.uint8
    assert sorted(p.name for p in (tmp_path / "tok").glob("*.tar")) == [
        "shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    if "--fit-palette" in opts:
        info = json.loads((tmp_path / "tok" / "palette.json").read_text())
        assert info["k"] == 12 and info["space"] == "lab" and info["library_version"]
        assert np.load(tmp_path / "tok" / "palette.npy").shape == (12, 3)


def test_webdataset_source_passes_labels_and_isolates_a_bad_sample(tmp_path, capsys):
    wds = pytest.importorskip("webdataset")
    rng = np.random.default_rng(0)
    (tmp_path / "data").mkdir()
    for s in range(2):
        with wds.TarWriter(str(tmp_path / "data" / f"shard-{s:06d}.tar")) as sink:
            for i in range(3):
                arr = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(arr).save(buf, format="PNG")
                png = b"garbage" if (s, i) == (1, 1) else buf.getvalue()
                sink.write({"__key__": f"s{s}_{i}", "png": png, "cls": str(s * 3 + i).encode(),
                            "txt": f"caption {s} {i}", "json": {"author": "me"}})
    dst = tmp_path / "out"
    assert run(f"{tmp_path}/data/shard-{{000000..000001}}.tar", str(dst), "--format", "tokens",
               "--colors", "4") == 1
    assert "s1_1" in capsys.readouterr().err
    assert sorted(p.name for p in dst.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    ds = wds.WebDataset(str(dst / "shard-{000000..000001}.tar"), shardshuffle=False)
    got = {s["__key__"]: s for s in ds}
    assert sorted(got) == ["s0_0", "s0_1", "s0_2", "s1_0", "s1_2"]
    for key, s in got.items():
        assert int(s["cls"]) == int(key[1]) * 3 + int(key[3])  # labels passed through
        assert s["txt"] == f"caption {key[1]} {key[3]}".encode()
        meta = json.loads(s["json"])
        assert meta["author"] == "me" and meta["torchpalette"]["size"] == [6, 7]
        assert np.load(io.BytesIO(s["idx.npy"])).max() < 4


def test_parquet_source(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rng = np.random.default_rng(1)
    cells = []
    for i in range(5):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)).save(buf, format="PNG")
        cells.append({"bytes": b"bad" if i == 2 else buf.getvalue(), "path": f"im{i}.png"})
    pq.write_table(pa.table({"image": cells, "label": list(range(5))}), tmp_path / "d.parquet",
                   row_group_size=2)  # units of 3 rows cross row groups
    dst = tmp_path / "out"
    assert run(str(tmp_path / "d.parquet"), str(dst), "--format", "tokens", "--colors", "3",
               "--shard-size", "3") == 1
    assert sorted(p.name for p in dst.glob("*.tar")) == ["d-000000.tar", "d-000001.tar"]
    samples = read_shards(dst)
    assert sorted(samples) == ["d/000000000", "d/000000001", "d/000000003", "d/000000004"]
    meta = json.loads(samples["d/000000003"]["json"])["torchpalette"]
    assert meta["label"] == 3 and meta["size"] == [5, 6]


def test_512_colours_give_uint16_and_imagegpt_centres(tmp_path):
    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(src / f"{i}.png")
    assert run(str(src), str(tmp_path / "fit"), "--format", "tokens", "--fit-palette",
               "--colors", "512") == 0
    pal = np.load(tmp_path / "fit" / "palette.npy")
    assert pal.shape == (512, 3) and pal.dtype == np.uint8
    samples = read_shards(tmp_path / "fit")
    idx = np.load(io.BytesIO(samples["0_png"]["idx.npy"]))
    assert idx.dtype == np.uint16 and idx.max() > 255
    # ImageGPT's kmeans_centers.npy form: float RGB in [-1, 1], read as (c + 1) / 2
    centers = pal.astype(np.float32) / 255 * 2 - 1
    np.save(tmp_path / "kmeans_centers.npy", centers)
    assert run(str(src), str(tmp_path / "igpt"), "--format", "tokens", "--palette",
               str(tmp_path / "kmeans_centers.npy")) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "igpt" / "palette.npy"), pal)
    again = read_shards(tmp_path / "igpt")
    np.testing.assert_array_equal(np.load(io.BytesIO(again["0_png"]["idx.npy"])), idx)
    assert run(str(src), str(tmp_path / "png"), "--colors", "512") == 2  # PNG holds 256


_KILL = """
import os, sys
from torchpalette.cli import tokens, commands
real = tokens.ShardWriter.add
calls = [0]
def add(self, members):
    calls[0] += 1
    if calls[0] == int(sys.argv[1]):
        os._exit(9)  # killed mid-shard: the temp part is open, nothing flushed or renamed
    real(self, members)
tokens.ShardWriter.add = add
sys.exit(commands.main(["quantize", *sys.argv[2:]]))
"""


def test_kill_mid_shard_then_rerun_completes(tmp_path):
    src = make_tree(tmp_path / "src", n=12, corrupt=False)
    args = ["--format", "tokens", "--shard-size", "5", "--colors", "5", "--workers", "0",
            "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    dst = tmp_path / "dst"
    p = subprocess.run([sys.executable, "-c", _KILL, "8", str(src), str(dst), *args], env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 9, p.stderr
    visible = sorted(f.name for f in dst.iterdir() if not f.name.startswith("."))
    assert visible == ["shard-000000.tar"]  # the finished shard; the killed one is not visible
    hidden = dst / ".torchpalette"  # main's DstDir: its lock, <pid>.<n>.part temp files
    assert (hidden / "lock").exists()
    left = list((hidden / "tmp").iterdir())
    assert left and all(p.name.endswith(".part") for p in left)
    with tarfile.open(dst / "shard-000000.tar") as tar:
        assert len(tar.getnames()) == 5 * 3
    first = (dst / "shard-000000.tar").stat().st_mtime_ns
    assert run(str(src), str(dst), *args[:-3]) == 0
    assert (dst / "shard-000000.tar").stat().st_mtime_ns == first  # resumed, not redone
    assert not list((dst / ".torchpalette" / "tmp").iterdir())
    assert run(str(src), str(tmp_path / "clean"), *args[:-3]) == 0
    for name in ("shard-000000.tar", "shard-000001.tar", "shard-000002.tar"):
        assert (dst / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_changed_options_redo_every_shard(tmp_path):
    src = make_tree(tmp_path / "src", n=4, corrupt=False)
    dst = tmp_path / "dst"
    assert run(str(src), str(dst), "--format", "tokens", "--colors", "3") == 0
    before = read_shards(dst)
    assert run(str(src), str(dst), "--format", "tokens", "--colors", "5") == 0
    after = read_shards(dst)
    assert max(np.load(io.BytesIO(m["palette.npy"])).shape[0] for m in after.values()) > 3
    assert before.keys() == after.keys()
    assert run(str(src), str(dst), "--format", "tokens", "--colors", "5", "--shard-size",
               "1") == 0
    assert sorted(p.name for p in dst.glob("*.tar")) == [f"shard-{i:06d}.tar" for i in range(4)]
    assert run(str(src), str(dst), "--format", "tokens", "--colors", "5", "--shard-size",
               "3") == 0  # the old shard-000002/3 would hold stale copies: gone
    assert sorted(p.name for p in dst.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert len(read_shards(dst)) == 4


def test_changed_source_redoes_its_shard_only(tmp_path):
    src = make_tree(tmp_path / "src", n=6, corrupt=False)
    dst = tmp_path / "dst"
    args = ["--format", "tokens", "--colors", "3", "--shard-size", "3"]
    assert run(str(src), str(dst), *args) == 0
    stamps = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.tar")}
    Image.fromarray(np.full((5, 5, 3), 200, np.uint8)).save(src / "b" / "img05.png")
    assert run(str(src), str(dst), *args) == 0
    now = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.tar")}
    assert now["shard-000000.tar"] == stamps["shard-000000.tar"]  # a/ untouched
    assert now["shard-000001.tar"] != stamps["shard-000001.tar"]  # b/img05 changed
    assert json.loads(read_shards(dst)["b/img05_png"]["json"])["torchpalette"]["size"] == [5, 5]


def test_shard_bytes_split_parts(tmp_path):
    src = make_tree(tmp_path / "src", n=6, corrupt=False)
    dst = tmp_path / "dst"
    assert run(str(src), str(dst), "--format", "tokens", "--colors", "3", "--shard-bytes",
               "6k") == 0
    parts = sorted(p.name for p in dst.glob("*.tar"))
    assert len(parts) > 1 and parts[0] == "shard-000000.tar"
    assert all((dst / p).stat().st_size <= 6000 + 1024 * 10 for p in parts)
    assert len(read_shards(dst)) == 6


def test_npy_memory_maps_and_matches_tokens(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)).save(src / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(src / "small.png")
    for fmt in ("npy", "tokens"):
        code = run(str(src), str(tmp_path / fmt), "--format", fmt, "--fit-palette",
                   "--colors", "8")
        assert code == (1 if fmt == "npy" else 0)  # npy: the odd size fails alone
    arr = np.load(tmp_path / "npy" / "indices.npy", mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape == (4, 9, 11) and arr.dtype == np.uint8
    keys = json.loads((tmp_path / "npy" / "keys.json").read_text())
    samples = read_shards(tmp_path / "tokens")
    for row, k in zip(arr, keys, strict=True):
        np.testing.assert_array_equal(row, np.load(io.BytesIO(samples[k["key"]]["idx.npy"])))
    np.testing.assert_array_equal(np.load(tmp_path / "npy" / "palette.npy"),
                                  np.load(tmp_path / "tokens" / "palette.npy"))


def test_expand_pattern_and_keys(tmp_path):
    for n in ("x-1.tar", "x-2.tar"):
        (tmp_path / n).touch()
    assert expand_pattern(f"{tmp_path}/x-*.tar::b-{{1..2}}.tar") == [
        f"{tmp_path}/x-1.tar", f"{tmp_path}/x-2.tar", "b-1.tar", "b-2.tar"]
    assert sample_keys(["a/b.c.png", "a/b_c.png", "A/B_C.png"]) == [
        "a/b_c_png", "a/b_c_png~2", "A/B_C_png~3"]


def test_bad_usage_exits_2(tmp_path, capsys):
    (tmp_path / "x.txt").touch()
    assert run(str(tmp_path / "x.txt"), str(tmp_path / "o"), "--format", "tokens") == 2
    assert "SRC" in capsys.readouterr().err
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((4, 3), 3.0, np.float32))
    (tmp_path / "src").mkdir()
    assert run(str(tmp_path / "src"), str(tmp_path / "o"), "--format", "tokens", "--palette",
               str(bad)) == 2
    assert "--palette" in capsys.readouterr().err
    src = make_tree(tmp_path / "tree", n=2, corrupt=False)
    assert run(str(src), str(src / "out"), "--format", "tokens") == 2  # DST inside SRC
    assert "DST" in capsys.readouterr().err
    assert not (src / "out").exists() or not list((src / "out").glob("*.tar"))


def test_uint8_palette_rule_matches_png(tmp_path):
    """The token palette's rounding is the indexed PNG's: an entry at x.5/255 agrees."""
    from torchpalette.cli.tokens import palette_u8

    pal = torch.tensor([[0.5 / 255, 1.5 / 255, 2.5 / 255], [0.2, 0.4, 0.6]])
    data = tp.io.encode_indexed_png(torch.tensor([[0, 1]]), pal)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))[0],
                          palette_u8(pal))


@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_gloo_available()), reason="needs gloo")
def test_torchrun_two_ranks_equal_one_process(tmp_path):
    """2 gloo ranks (started as torchrun starts them) take disjoint shards, fit one palette
    (statistics all-reduced) and write the single-process shards byte for byte; the corrupt
    file fails alone on its rank and rank 0 lists it."""
    src = make_tree(tmp_path / "src", n=11)
    args = ["quantize", str(src), "", "--format", "tokens", "--fit-palette", "--colors", "6",
            "--shard-size", "3", "--workers", "0", "--quiet", "--device", "cpu"]
    one = tmp_path / "one"
    assert cli.main([*args[:2], str(one), *args[3:]]) == 1
    many = tmp_path / "many"
    codes, logs = torchrun_cli([*args[:2], str(many), *args[3:]])
    assert codes == [1, 1], logs
    assert "broken.png" in logs[0]
    names = sorted(p.name for p in one.glob("*.tar"))
    assert names == sorted(p.name for p in many.glob("*.tar")) and len(names) == 4
    for name in [*names, "palette.npy"]:
        assert (one / name).read_bytes() == (many / name).read_bytes(), name
    assert len(list((many / ".torchpalette").glob("tokens.*.jsonl"))) == 2  # one log per rank


def test_readme_recipe_reads_shards_and_npy(tmp_path):
    """The README's torch.utils.data recipe: webdataset batches and the npy memory-map decode
    to the same images as the PNG mirror."""
    wds = pytest.importorskip("webdataset")
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(9)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)).save(src / f"{i}.png")
    for fmt in ("png", "tokens", "npy"):
        shards = ["--shard-size", "4"] if fmt == "tokens" else []
        assert run(str(src), str(tmp_path / fmt), "--format", fmt, "--fit-palette",
                   "--colors", "10", *shards) == 0
    palette = torch.from_numpy(np.load(tmp_path / "tokens" / "palette.npy"))
    ds = (wds.WebDataset(str(tmp_path / "tokens" / "shard-{000000..000001}.tar"),
                         shardshuffle=False)
          .decode().to_tuple("__key__", "idx.npy").batched(8))
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    keys, indices = next(iter(loader))
    images = palette[torch.as_tensor(indices).long()].permute(0, 3, 1, 2)
    assert list(keys) == [f"{i}_png" for i in range(6)]  # both shards, in order
    arr = np.load(tmp_path / "npy" / "indices.npy", mmap_mode="r")
    batch = torch.from_numpy(arr[:6].astype(np.int64))
    from_npy = torch.from_numpy(np.load(tmp_path / "npy" / "palette.npy"))[batch]
    assert torch.equal(from_npy.permute(0, 3, 1, 2), images)
    for i in range(6):
        assert torch.equal(images[i], tp.read_image(tmp_path / "png" / f"{i}.png"))
