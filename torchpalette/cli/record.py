"""The provenance record of a DST: for each output, the source it came from and the options
that made it, so a re-run redoes exactly what is stale.

One row per output (its POSIX path under DST is the key): the source's relative path, size,
mtime (ns) and content hash (``--hash``, else empty), the digest of the options that change the
output (:func:`options_digest`), and the output's own size and mtime as written, so an output
changed or truncated since is redone without decoding it. ``options`` maps each digest to its
JSON, for people reading the record.

Storage: the standard library's ``sqlite3`` in WAL mode, in DST's hidden folder, one committed
row per output. Chosen over an append-only log, measured on 100,000 rows (``benchmarks/
RESULTS.md``, issue 21): sqlite costs ~55 us a committed row against ~12 us a flushed log
line (both negligible beside decoding an image), both load in ~1 s, but the log must be
replayed and compacted (37 MiB after two full runs against 10 MiB: it grows with every re-run),
while sqlite updates a row in place, takes concurrent writers (torchrun ranks) and stays
consistent after a crash by its journal. A row is committed after its output is renamed into
place, so a crash at worst leaves the outputs being written unrecorded: they are redone, never
wrongly counted finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS outputs (
    key TEXT PRIMARY KEY, src TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    hash TEXT NOT NULL, options TEXT NOT NULL, out_size INTEGER NOT NULL,
    out_mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS options (digest TEXT PRIMARY KEY, json TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Row:
    """One output's provenance (see the module docstring)."""

    key: str
    src: str
    size: int
    mtime_ns: int
    hash: str
    options: str
    out_size: int
    out_mtime_ns: int


def options_digest(options: dict) -> tuple[str, str]:
    """``(digest, json)`` of the options that change an output (sorted keys, so stable)."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16], text


def file_hash(path: Path) -> str:
    """BLAKE2b (128-bit) of a file's content, read in 1 MiB blocks."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Record:
    """The record file, opened for one run (one connection, this thread only)."""

    def __init__(self, path: Path):
        self.path = path
        # a second rank writing at the same time waits for the write lock instead of failing
        # writer threads record outputs (one at a time: the pipeline serialises them)
        self.db = sqlite3.connect(path, timeout=600, isolation_level=None,
                                  check_same_thread=False)
        for attempt in range(600):  # another rank switching the mode holds the file briefly
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError:
                if attempt == 599:
                    raise
                time.sleep(0.1)
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints,
        self.db.executescript(SCHEMA)                  # never corrupt after a crash
        self.pending: list[tuple] = []

    def load(self) -> dict[str, Row]:
        """Every row, by key: one query, so planning costs O(outputs)."""
        cur = self.db.execute("SELECT key, src, size, mtime_ns, hash, options, out_size, "
                              "out_mtime_ns FROM outputs")
        return {r[0]: Row(*r) for r in cur}

    def add_options(self, digest: str, text: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO options VALUES (?, ?)", (digest, text))

    def put(self, row: Row, *, commit: bool = True) -> None:
        """Record a row (an output now in place), committed at once unless ``commit=False``
        (then by the next :meth:`commit`)."""
        self.pending.append((row.key, row.src, row.size, row.mtime_ns, row.hash, row.options,
                             row.out_size, row.out_mtime_ns))
        if commit:
            self.commit()

    def commit(self) -> None:
        if not self.pending:
            return
        with self.db:  # one transaction per batch of outputs
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                self.pending)
        self.pending.clear()

    def delete(self, keys: Iterable[str]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("DELETE FROM outputs WHERE key = ?", [(k,) for k in keys])

    def close(self) -> None:
        try:
            self.commit()
        finally:
            self.db.close()
