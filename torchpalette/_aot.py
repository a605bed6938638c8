"""Ahead-of-time compiled CPU kernels, kept on disk between processes.

``torch.compile`` pays Dynamo tracing and the inductor import in every new process, seconds
even when its on-disk caches are warm. An AOTInductor package (``torch.export`` +
``torch._inductor.aoti_compile_and_package``) is a zip with a shared library: compiled once per
machine, it loads in milliseconds through the C++ loader in a later process, without importing
Dynamo or inductor. Packages live next to inductor's own caches (``TORCHINDUCTOR_CACHE_DIR``,
default ``<tmp>/torchinductor_<user>``) under ``torchpalette/``, named by a digest of
everything they depend on: the kernel's source, torch's version, dtype, the CPU's instruction
set. A package is written to a temporary name and renamed, so processes compiling at once
never see a partial one.
"""

from __future__ import annotations

import getpass
import hashlib
import inspect
import os
import platform
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: Shortest dynamic size a package accepts (export specializes sizes 0 and 1; 3 would make
#: ``[3, N]`` rows ambiguous with ``[N, 3]``): callers pad shorter inputs.
MIN_SIZE = 4


def cache_dir() -> Path:
    """Where packages are kept: ``$TORCHINDUCTOR_CACHE_DIR/torchpalette`` (inductor's default
    root when unset), so that clearing inductor's cache clears them too."""
    root = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if root is None:
        try:
            user = getpass.getuser()
        except (KeyError, ModuleNotFoundError, OSError):
            user = f"uid_{os.getuid()}" if hasattr(os, "getuid") else "unknown_user"
        root = os.path.join(tempfile.gettempdir(),
                            "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user))
    return Path(root).absolute() / "torchpalette"


def _cpu_id() -> str:
    """The CPU's model and flags where the OS tells them: packages are built for the native
    instruction set (``-march=native``), so a cache shared between machines must not mix."""
    try:
        with open("/proc/cpuinfo") as f:
            head = f.read(1 << 16).split("\n\n", 1)[0]
    except OSError:
        head = platform.processor()
    keep = ("model name", "flags", "Features", "CPU part")
    return "\n".join(line for line in head.splitlines() if line.startswith(keep))


class _Rows(torch.nn.Module):
    """``fn(x1, x2, *scalars)`` with the scalars as one tensor, so that one package serves
    every value of them."""

    def __init__(self, fn: Callable[..., Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x1: Tensor, x2: Tensor, scalars: Tensor) -> Tensor:
        return self.fn(x1, x2, *scalars.unbind(0))


def _load(path: Path) -> Any:
    """The C++ loader of a package: no Dynamo, no inductor import."""
    return torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, -1)


class AotKernel:
    """A forward-only elementwise kernel ``fn(x1 [R, N], x2 [R, N], *scalars) -> [N]`` run
    from an AOTInductor package on the CPU (one package per dtype, built on first use when
    none is on disk). ``N`` is dynamic, at least :data:`MIN_SIZE`."""

    def __init__(self, fn: Callable[..., Tensor], rows: int = 3, n_scalars: int = 3) -> None:
        self.fn, self.rows, self.n_scalars = fn, rows, n_scalars
        self._loaded: dict[torch.dtype, Any] = {}
        self._digest: dict[torch.dtype, str] = {}

    def path(self, dtype: torch.dtype) -> Path:
        """The package file of ``dtype`` for this kernel, torch and CPU."""
        if dtype not in self._digest:
            # the kernel's module and this one (how packages are built)
            source = inspect.getsource(inspect.getmodule(self.fn) or self.fn)
            source += inspect.getsource(sys.modules[__name__])
            key = "\n".join([source, torch.__version__, str(dtype), platform.machine(),
                             torch.backends.cpu.get_cpu_capability(), _cpu_id(), str(MIN_SIZE)])
            self._digest[dtype] = hashlib.sha256(key.encode()).hexdigest()[:20]
        return cache_dir() / f"{self.fn.__name__}-{self._digest[dtype]}.pt2"

    def is_built(self, dtype: torch.dtype) -> bool:
        """Whether this process can run ``dtype`` without compiling (loaded, or on disk)."""
        return dtype in self._loaded or self.path(dtype).is_file()

    def _build(self, path: Path, dtype: torch.dtype) -> None:
        from torch._inductor import aoti_compile_and_package  # heavy: only when compiling

        # a large example: inductor parallelizes loops by the example's size
        x = torch.rand(self.rows, 1 << 20, dtype=dtype)
        n = torch.export.Dim("n", min=MIN_SIZE)
        ep = torch.export.export(
            _Rows(self.fn), (x, x.clone(), torch.ones(self.n_scalars, dtype=dtype)),
            dynamic_shapes=({1: n}, {1: n}, None),
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.pt2")
        try:
            # threads: torch's setting at run time, not the builder's baked in
            aoti_compile_and_package(ep, package_path=str(tmp),
                                     inductor_configs={"cpp.dynamic_threads": True})
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def _runner(self, dtype: torch.dtype) -> Any:
        runner = self._loaded.get(dtype)
        if runner is None:
            path = self.path(dtype)
            if not path.is_file():
                self._build(path, dtype)
            try:
                runner = _load(path)
            except RuntimeError:  # a damaged package (a disk full, a killed copy): once more
                path.unlink(missing_ok=True)
                self._build(path, dtype)
                runner = _load(path)
            self._loaded[dtype] = runner
        return runner

    def __call__(self, x1: Tensor, x2: Tensor, *scalars: float) -> Tensor:
        k = torch.tensor(scalars, dtype=x1.dtype)
        return self._runner(x1.dtype).run([x1.contiguous(), x2.contiguous(), k])[0]
