"""Sinks (:mod:`~torchpalette.cli.sink`) of ``--format tokens|npy``, so token runs go through
the PNG mirror's pipeline (:func:`~torchpalette.cli.pipeline.run_jobs`): decoding ahead within
``--queue-mib``, ``--max-pixels``, each image quantized alone (tokens equal the PNG pixels
whatever the batch), encoding on writer threads.

The pipeline hands over images in no particular order; a job's key is its index in the run's
sample list. :class:`TokenSink` puts each unit's samples into its shard in sample order (a
reorder buffer holds only the ones that came early), so the bytes of a shard depend on its
samples only, and reports them durable once the shard is renamed into DST. :class:`NpySink`
writes each rank's rows into a part; :func:`merge_npy` joins the parts in sample order.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dstdir import HIDDEN, write_atomic
from .sink import Output, Written
from .sources import Unit
from .tokens import ShardWriter, index_dtype, npy_bytes, palette_u8, sample_members

# (unit, [(shard file name, size, mtime_ns)], failed sample sources) -> None, under the sink lock
OnCommit = Callable[[Unit, list[tuple[str, int, int]], list[str]], None]


class TokenSink:
    """One :class:`~torchpalette.cli.tokens.ShardWriter` per unit of ``units``; a unit's shard
    is committed (renamed into DST) when its last sample is written or failed, then
    ``on_commit`` records it and its samples are reported durable."""

    suffix = ".tar"

    def __init__(self, dst: Path, units: Sequence[Unit], *, pid: str | None, k: int,
                 max_count: int | None, max_bytes: int | None, on_commit: OnCommit):
        self.dst, self.units, self.pid, self.k = dst, list(units), pid, k
        self.max_count, self.max_bytes, self.on_commit = max_count, max_bytes, on_commit
        self.where = [(u, pos) for u, unit in enumerate(self.units)
                      for pos in range(len(unit.samples))]
        n = len(self.units)
        self.cursor = [0] * n
        self.early: list[dict[int, tuple[int, Any, float]]] = [{} for _ in range(n)]
        self.writers: list[ShardWriter | None] = [None] * n
        self.written: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        self.fails: list[list[str]] = [[] for _ in range(n)]
        self.state = ["open"] * n  # open | committed | broken
        self.lock = threading.Lock()

    def write(self, out: Output) -> list[Written]:
        t0 = time.perf_counter()
        g = int(out.key)
        u, pos = self.where[g]
        s = self.units[u].samples[pos]
        members = sample_members(s.key, s.rel, out.indices, out.palette, dataset_pid=self.pid,
                                 k=self.k, extras={x: r.read() for x, r in s.extras.items()},
                                 fields=s.fields)
        with self.lock:
            self.early[u][pos] = (g, members, time.perf_counter() - t0)
            return self._advance(u)

    def failed(self, key: str) -> list[Written]:
        g = int(key)
        u, pos = self.where[g]
        with self.lock:
            if pos < self.cursor[u] or pos in self.early[u]:
                return []  # its write failed while its shard was being written: already settled
            self.early[u][pos] = (g, None, 0.0)
            return self._advance(u)

    def _advance(self, u: int) -> list[Written]:
        unit, early = self.units[u], self.early[u]
        if self.state[u] != "open":
            early.clear()
            return []
        try:
            while self.cursor[u] in early:
                g, members, seconds = early.pop(self.cursor[u])
                if members is None:
                    self.fails[u].append(unit.samples[self.cursor[u]].rel)
                else:
                    if self.writers[u] is None:
                        self.writers[u] = ShardWriter(self.dst, unit.name,
                                                      max_count=self.max_count,
                                                      max_bytes=self.max_bytes)
                    self.writers[u].add(members)  # type: ignore[union-attr]
                    self.written[u].append((g, seconds))
                self.cursor[u] += 1
            return self._commit(u) if self.cursor[u] == len(unit.samples) else []
        except BaseException:  # a shard that cannot be written: never committed nor recorded
            self.state[u] = "broken"
            if self.writers[u] is not None:
                self.writers[u].abort()  # type: ignore[union-attr]
            raise

    def _commit(self, u: int) -> list[Written]:
        writer = self.writers[u]
        names = writer.commit() if writer is not None else []
        stats = [(n, st.st_size, st.st_mtime_ns) for n in names for st in [os.stat(self.dst / n)]]
        self.on_commit(self.units[u], stats, self.fails[u])
        self.state[u], self.writers[u] = "committed", None
        size, mtime = (stats[0][1], stats[0][2]) if stats else (0, 0)
        return [Written(str(g), size, mtime, seconds) for g, seconds in self.written[u]]

    def flush(self) -> list[Written]:
        return []

    def close(self) -> list[Written]:
        """Commit the units with no samples at all (recorded, so a re-run skips them)."""
        with self.lock:
            return [w for u, unit in enumerate(self.units)
                    if self.state[u] == "open" and not unit.samples for w in self._commit(u)]

    def abort(self) -> None:
        """Remove the temp files of shards not committed (a run stopped by an error)."""
        with self.lock:
            for w in self.writers:
                if w is not None:
                    w.abort()


class NpySink:
    """This rank's rows of ``--format npy`` into ``DST/.torchpalette/tmp/npy.<rank>/``: one
    memory-map ``[n, H, W]`` per image size met (usually one), the per-image palettes and
    ``meta.json`` (sample position, key, source, size, row); joined by :func:`merge_npy`."""

    suffix = ".npy"

    def __init__(self, dst: Path, rank: int, positions: Sequence[list[int]], keys: Sequence[str],
                 rels: Sequence[str], k: int, dataset_palette: bool):
        self.part = dst / HIDDEN / "tmp" / f"npy.{rank}"
        self.part.mkdir(parents=True, exist_ok=True)
        self.positions, self.keys, self.rels = positions, keys, rels
        self.k, self.dataset_palette = k, dataset_palette
        self.rows: dict[tuple[int, int], Any] = {}
        self.used: dict[tuple[int, int], int] = {}  # rows filled per size
        self.meta: list[dict[str, Any]] = []
        self.palettes: list[np.ndarray] = []
        self.lock = threading.Lock()

    def write(self, out: Output) -> list[Written]:
        t0 = time.perf_counter()
        if out.palette.shape[-1] == 4:
            raise ValueError("--format npy: expected an opaque image, got transparency (RGBA "
                             "palettes need --format tokens)")
        i = int(out.key)
        h, w = (int(n) for n in out.indices.shape)
        pal = None if self.dataset_palette else palette_u8(out.palette)
        with self.lock:
            arr = self.rows.get((h, w))
            if arr is None:  # sized for every sample of this rank: a sparse file
                arr = self.rows[(h, w)] = np.lib.format.open_memmap(
                    self.part / f"{h}x{w}.npy", mode="w+", dtype=index_dtype(self.k),
                    shape=(len(self.keys), h, w))
            row = self.used[(h, w)] = self.used.get((h, w), -1) + 1
            arr[row] = out.indices.numpy()
            if pal is not None:
                self.palettes.append(np.pad(pal, ((0, self.k - len(pal)), (0, 0))))
            self.meta.append({"pos": self.positions[i], "key": self.keys[i],
                              "source": self.rels[i], "size": [h, w], "row": row,
                              "palette": len(self.palettes) - 1})
        return [Written(out.key, 0, 0, time.perf_counter() - t0)]

    def failed(self, key: str) -> list[Written]:
        return []

    def flush(self) -> list[Written]:
        return []

    def close(self) -> list[Written]:
        with self.lock:
            for arr in self.rows.values():
                arr.flush()
            self.rows.clear()
            if self.palettes:
                np.save(self.part / "palettes.npy", np.stack(self.palettes))
            (self.part / "meta.json").write_text(json.dumps(self.meta))
        return []


def merge_npy(dst: Path, world: int, k: int, dataset_palette: bool) -> list[tuple[str, str]]:
    """Join the ranks' parts in sample order into ``indices.npy`` ``[N, H, W]``, ``keys.json``
    and, without a dataset palette, ``palettes.npy`` ``[N, K, 3]``, each renamed into DST.
    ``H, W``: the first sample's size (as one process would see it); a sample of another size
    fails alone, returned as ``(source, reason)``."""
    tmp = dst / HIDDEN / "tmp"
    parts = [tmp / f"npy.{r}" for r in range(world)]
    rows = sorted(((m, r) for r, p in enumerate(parts)
                   for m in json.loads((p / "meta.json").read_text())), key=lambda x: x[0]["pos"])
    failures: list[tuple[str, str]] = []
    stale = ["indices.npy", "keys.json", "palettes.npy"] if not rows else (
        ["palettes.npy"] if dataset_palette else [])
    for name in stale:  # nothing of an earlier run may pass for this one's
        (dst / name).unlink(missing_ok=True)
    if not rows:
        for p in parts:
            shutil.rmtree(p, ignore_errors=True)
        return failures
    h, w = rows[0][0]["size"]
    keep = []
    for m, r in rows:
        if m["size"] == [h, w]:
            keep.append((m, r))
        else:
            failures.append((m["source"], f"ValueError: --format npy: expected every image "
                                          f"{h}x{w} (the first one's size), got "
                                          f"{m['size'][0]}x{m['size'][1]}"))
    out_tmp = tmp / "indices.npy.part"
    out = np.lib.format.open_memmap(out_tmp, mode="w+", dtype=index_dtype(k),
                                    shape=(len(keep), h, w))
    src = {r: np.load(parts[r] / f"{h}x{w}.npy", mmap_mode="r") for r in {r for _, r in keep}}
    pals = {} if dataset_palette else {r: np.load(parts[r] / "palettes.npy") for r in src}
    for row, (m, r) in enumerate(keep):
        out[row] = src[r][m["row"]]
    out.flush()
    del out, src
    keys = [{"key": m["key"], "source": m["source"]} for m, _ in keep]
    write_atomic(json.dumps(keys).encode(), dst / "keys.json", tmp)
    if not dataset_palette:
        stacked = np.stack([pals[r][m["palette"]] for m, r in keep])
        write_atomic(npy_bytes(stacked), dst / "palettes.npy", tmp)
    os.replace(out_tmp, dst / "indices.npy")
    for p in parts:
        shutil.rmtree(p, ignore_errors=True)
    return failures
