"""torch.distributed glue shared by dataset palettes (:mod:`torchpalette.fit`) and the VQ
layer's EMA statistics: sum over ranks, rank 0's value to every rank. Never imports
``torch.distributed`` unless a program already did (or a group is given)."""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import Tensor


def distributed(process_group: Any) -> bool:
    """True when a group is given or torch.distributed is initialised (never imports it)."""
    dist = sys.modules.get("torch.distributed")
    if process_group is not None:
        return True
    return dist is not None and dist.is_available() and dist.is_initialized()


def all_reduce(stats: Tensor, process_group: Any) -> Tensor:
    """Sum ``stats`` over the ranks when torch.distributed is initialised (or a group given)."""
    if not distributed(process_group):
        return stats
    import torch.distributed as dist

    comm = stats
    if dist.get_backend(process_group) == "nccl" and stats.device.type != "cuda":
        comm = stats.to(_nccl_device(process_group))
    dist.all_reduce(comm, op=dist.ReduceOp.SUM, group=process_group)
    return comm.to(stats.device)


def _nccl_device(process_group: Any) -> torch.device:
    """The GPU through which this rank talks NCCL when its statistics live on the CPU: the
    group's bound device, else the current one if the caller chose it (``set_device``), else
    ``LOCAL_RANK``'s (torchrun sets it), so ranks of one node never all pick GPU 0."""
    import torch.distributed as dist

    group = process_group if process_group is not None else dist.group.WORLD
    bound = getattr(group, "bound_device_id", None)
    if bound is not None:
        return torch.device(bound)
    current = torch.cuda.current_device()
    local = os.environ.get("LOCAL_RANK")
    if current != 0 or local is None:
        return torch.device("cuda", current)
    return torch.device("cuda", int(local) % max(1, torch.cuda.device_count()))


def broadcast(colors: Tensor, process_group: Any) -> Tensor:
    """Give every rank rank 0's ``colors`` (any tensor), so ranks on different hardware still
    agree."""
    if not distributed(process_group):
        return colors
    import torch.distributed as dist

    comm = colors.contiguous()
    if dist.get_backend(process_group) == "nccl" and colors.device.type != "cuda":
        comm = comm.to(_nccl_device(process_group))
    src = 0 if process_group is None else dist.get_global_rank(process_group, 0)
    dist.broadcast(comm, src=src, group=process_group)
    return comm.to(colors.device)
