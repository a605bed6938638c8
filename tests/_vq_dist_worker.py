"""One gloo rank of tests/test_nn_vq.py's DDP test: trains a PaletteVQ on this rank's own
images (other pixels on every rank) and saves its buffers to ``OUT/vq-RANK.pt``.

Usage: python _vq_dist_worker.py OUT (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import torchpalette as tp

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
dist.init_process_group("gloo")
g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
vq = tp.nn.PaletteVQ(colors=6, init_batches=2, dead_threshold=0.5, seed=rank)
for _ in range(6):
    vq(torch.rand(2, 3, 12, 12, generator=g) * (0.5 + 0.5 * rank))
torch.save({k: t for k, t in vq.state_dict().items() if isinstance(t, torch.Tensor)},
           out / f"vq-{rank}.pt")
dist.destroy_process_group()
