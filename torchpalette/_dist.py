"""torch.distributed glue shared by dataset palettes (:mod:`torchpalette.fit`) and the VQ
layer's EMA statistics: sum over ranks, rank 0's value to every rank. Never imports
``torch.distributed`` unless a program already did (or a group is given)."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor


def distributed(process_group: Any) -> bool:
    """True when a group is given or torch.distributed is initialised."""
    dist = sys.modules.get("torch.distributed")
    if process_group is not None:
        return True
    return dist is not None and dist.is_available() and dist.is_initialized()


def _comm(x: Tensor, process_group: Any) -> Tensor:
    """``x`` where the backend can reduce it (NCCL needs CUDA tensors)."""
    import torch.distributed as dist

    comm = x.contiguous()
    if dist.get_backend(process_group) == "nccl" and x.device.type != "cuda":
        comm = comm.to(torch.device("cuda", torch.cuda.current_device()))
    return comm


def all_reduce(stats: Tensor, process_group: Any) -> Tensor:
    """Sum ``stats`` over the ranks when torch.distributed is initialised (or a group given)."""
    if not distributed(process_group):
        return stats
    import torch.distributed as dist

    comm = _comm(stats, process_group)
    dist.all_reduce(comm, op=dist.ReduceOp.SUM, group=process_group)
    return comm.to(stats.device)


def broadcast(x: Tensor, process_group: Any) -> Tensor:
    """Rank 0's ``x`` on every rank, so ranks on different hardware still agree."""
    if not distributed(process_group):
        return x
    import torch.distributed as dist

    comm = _comm(x, process_group)
    src = 0 if process_group is None else dist.get_global_rank(process_group, 0)
    dist.broadcast(comm, src=src, group=process_group)
    return comm.to(x.device)
