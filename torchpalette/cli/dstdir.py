"""DST's one hidden folder, ``DST/.torchpalette/``: the lock, the provenance record and the
temp files. DST itself holds outputs only.

* ``lock``: an exclusive ``fcntl.flock`` held for the whole run, so a second run on the same
  DST waits, then finds the work done. The kernel drops it when its process dies, so a killed
  run never blocks the next one. Where ``fcntl`` is missing (Windows) runs are not serialised;
  NFS may not honour flock.
* ``record.sqlite``: see :mod:`torchpalette.cli.record`.
* ``tmp/``: each output is written there, then renamed into place (same file system, so the
  rename is atomic). Temp names end in ``.part``, never an image suffix, so no image loader
  or ``rglob("*.png")`` picks one up; leftovers of a killed run are removed on start (under the
  lock: no other run is writing).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HIDDEN = ".torchpalette"
_counter = itertools.count()
_counter_lock = threading.Lock()


class DstDir:
    """The hidden folder of ``dst``; use as a context manager to hold the lock."""

    def __init__(self, dst: Path, on_wait: Callable[[str], None] | None = None):
        self.dst = dst
        self.root = dst / HIDDEN
        self.tmp = self.root / "tmp"
        self.record_path = self.root / "record.sqlite"
        self.on_wait = on_wait
        self.fd: int | None = None
        self.waited_s = 0.0

    def __enter__(self) -> DstDir:
        self.tmp.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 64, 0).decode(errors="replace").strip() or "?"
            if self.on_wait is not None:
                self.on_wait(holder)
            t0 = time.perf_counter()
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            self.waited_s = time.perf_counter() - t0
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        return self

    def clean_temp(self) -> int:
        """Remove temp files a killed run left (call under the lock); returns how many."""
        n = 0
        for entry in os.scandir(self.tmp):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            n += 1
        return n

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor releases the flock
            self.fd = None


def temp_path(tmp_dir: Path) -> Path:
    """A fresh temp file name in ``tmp_dir``: ``<pid>.<n>.part`` (unique across threads)."""
    with _counter_lock:
        n = next(_counter)
    return tmp_dir / f"{os.getpid()}.{n}.part"


def write_atomic(data: bytes, dst: Path, tmp_dir: Path) -> os.stat_result:
    """``data`` to ``dst`` through a temp file in ``tmp_dir`` + ``os.replace``; returns the
    output's stat (for the record). Nothing is left behind if writing fails."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(tmp_dir)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return os.stat(dst)


def say_waiting(holder: str) -> None:
    print(f"torchpalette quantize: another run (pid {holder}) is writing to this DST; waiting "
          f"for it to finish, then doing what is left", file=sys.stderr, flush=True)
