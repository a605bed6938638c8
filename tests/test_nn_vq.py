"""tp.nn.PaletteVQ (issue 23): EMA updates, k-means initialisation, dead-colour re-seeding,
usage statistics, decode, commitment loss and its gradient, gradient modes, state, DDP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torchpalette as tp
from torchpalette._spaces import to_space
from torchpalette.nn import PaletteVQ

RED, BLUE, GREEN, WHITE = (torch.tensor(c) for c in (
    [0.9, 0.1, 0.1], [0.1, 0.2, 0.9], [0.1, 0.7, 0.2], [1.0, 1.0, 1.0]))


def _image(colors, per=8, batch=2):
    """``batch`` images ``[3, len(colors) * per, per]``: a band of each colour."""
    bands = [c.view(3, 1, 1).expand(3, per, per) for c in colors]
    return torch.cat(bands, 1).expand(batch, -1, -1, -1).clone()


def _near(pal, color, atol=2e-3):
    return bool(((pal - color).abs().amax(-1) < atol).any())


def test_kmeans_init_finds_the_colours_of_the_first_batch():
    vq = PaletteVQ(colors=3, init_batches=1)
    vq(_image([RED, BLUE, GREEN]))
    for c in (RED, BLUE, GREEN):
        assert _near(vq.palette, c)
    assert int(vq.batches_seen) == 1


def test_init_uses_the_first_batches():
    vq = PaletteVQ(colors=2, init_batches=2, dead_threshold=0.0)
    vq(_image([RED, RED]))  # one colour only: fewer than K, falls back to pixels
    vq(_image([BLUE, WHITE]))  # the second batch re-runs k-means on both
    assert _near(vq.palette, RED, 0.05) or _near(vq.palette, BLUE, 0.05)
    assert int(vq.batches_seen) == 2 and vq._init_images == []


def test_ema_update_follows_the_formula():
    vq = PaletteVQ(colors=2, init_batches=1, decay=0.5, eps=1e-9, dead_threshold=0.0)
    vq(_image([RED, BLUE]))  # init, then step 0: the batch means exactly
    red2 = torch.tensor([0.8, 0.15, 0.1])
    vq(_image([red2, BLUE]))  # step 1: decay min(0.5, 1/2): the mean of both batches
    want = (to_space(RED, "lab") + to_space(red2, "lab")) / 2
    got = vq.codebook[(vq.codebook - want).norm(dim=-1).argmin()]
    torch.testing.assert_close(got, want, atol=1e-3, rtol=0)
    assert _near(vq.palette, BLUE)


def test_dead_colours_are_reseeded_and_recover():
    g = torch.Generator().manual_seed(0)
    vq = PaletteVQ(colors=4, init_batches=1, dead_threshold=0.5, decay=0.8)
    vq(_image([RED]))  # one colour seen: four copies of it, three never used
    four = _image([RED, BLUE, GREEN, WHITE])
    for _ in range(20):
        vq(four + 0.01 * torch.rand(four.shape, generator=g))
    vq.eval()
    out = vq(four)
    assert len(out.indices.unique()) == 4  # every colour back in use
    assert tp.delta_e(out.quantized.movedim(1, -1), four.movedim(1, -1)).mean() < 1.5


def test_usage_counts_and_perplexity():
    vq = PaletteVQ(colors=2, init_batches=1, dead_threshold=0.0)
    x = _image([RED, BLUE], batch=3)
    vq(x)
    vq(x)
    assert float(vq.counts.sum()) == 2 * x[:, 0].numel()
    torch.testing.assert_close(vq.usage, torch.tensor([0.5, 0.5]))
    assert abs(vq.perplexity - 2.0) < 1e-4
    vq.reset_usage()
    assert float(vq.counts.sum()) == 0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_decode_round_trip_and_index_dtype(dtype):
    x = _image([RED, BLUE, GREEN])
    vq = PaletteVQ(colors=3)
    vq(x)
    vq.eval()
    x = (x * 255).round().to(torch.uint8) if dtype == torch.uint8 else x
    out = vq(x)
    assert out.indices.dtype == torch.uint8 and out.indices.shape == (2, 24, 8)
    assert out.quantized.dtype == dtype
    assert torch.equal(vq.decode(out.indices, dtype), out.quantized)
    wide = PaletteVQ(colors=3, index_dtype=torch.int64)
    wide.load_state_dict(vq.state_dict())  # index_dtype is a setting: the saved one wins
    assert wide.eval()(x).indices.dtype == torch.uint8


def test_commitment_loss_and_its_gradient():
    x = (_image([RED, BLUE]) + 0.05).clamp(0, 1).requires_grad_()
    vq = PaletteVQ(colors=2, init_batches=1, commitment=1.0)
    vq(x.detach())  # init and a first step on the same colours
    out = vq(x)
    assert out.loss.ndim == 0 and float(out.loss.detach()) >= 0
    out.loss.backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)
    # eval mode: no loss; commitment=0: no loss
    vq.eval()
    assert float(vq(x).loss) == 0.0
    zero = PaletteVQ(colors=2, commitment=0.0)
    assert float(zero(x).loss) == 0.0


def test_hard_forward_straight_through_and_soft_backward():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    st = PaletteVQ(colors=4)
    st(x)
    soft = PaletteVQ(colors=4, gradient="soft", temperature=1.0)
    soft.load_state_dict(st.state_dict())  # same codebook...
    soft.gradient, soft.temperature = "soft", 1.0  # ...and the soft backward
    st.eval()
    soft.eval()
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    qa, qb = st(a).quantized, soft(b).quantized
    assert torch.equal(qa.detach(), qb.detach())  # the same hard forward value
    qa.sum().backward()
    qb.sum().backward()
    assert torch.equal(a.grad, torch.ones_like(a))  # straight-through
    assert not torch.allclose(b.grad, torch.ones_like(b))  # the soft assignment's gradient


def test_state_round_trip_settings_and_other_k():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    vq = PaletteVQ(colors=5, decay=0.9, commitment=0.5, dead_threshold=0.1)
    vq(x)
    other = PaletteVQ(colors=5)
    other.load_state_dict(vq.state_dict())
    assert (other.decay, other.commitment, other.dead_threshold) == (0.9, 0.5, 0.1)
    vq.eval()
    other.eval()
    assert torch.equal(other(x).quantized, vq(x).quantized)
    with pytest.raises(ValueError, match="colors=5"):
        PaletteVQ(colors=4).load_state_dict(vq.state_dict())
    with pytest.raises(RuntimeError, match="no palette"):
        PaletteVQ(colors=3).eval()(x)


def test_bad_arguments():
    with pytest.raises(ValueError, match="decay"):
        PaletteVQ(decay=1.0)
    with pytest.raises(ValueError, match="gradient"):
        PaletteVQ(gradient="gumbel")
    with pytest.raises(ValueError, match="colors"):
        PaletteVQ(colors=0)
    with pytest.raises(ValueError, match="index_dtype"):
        PaletteVQ(colors=300, index_dtype=torch.uint8)
    # no 256 cap (issue 22): past 256 the default indices take tp.quantize's wider dtype
    assert PaletteVQ(colors=300).colors == PaletteVQ(colors=300, index_dtype=torch.int16).colors


def test_ddp_two_gloo_ranks_keep_identical_codebooks(tmp_path):
    dist = pytest.importorskip("torch.distributed")
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("needs torch.distributed gloo")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).parents[1]
    worker = Path(__file__).with_name("_vq_dist_worker.py")
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        procs.append(subprocess.Popen([sys.executable, str(worker), str(tmp_path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    for p in procs:
        log, _ = p.communicate(timeout=180)
        assert p.returncode == 0, log
    a, b = (torch.load(tmp_path / f"vq-{r}.pt") for r in range(2))
    for name in ("codebook", "ema_counts", "ema_sums", "counts"):
        assert torch.equal(a[name], b[name]), name
    # both ranks' pixels of the 5 batches since the last (second) initialisation
    assert float(a["counts"].sum()) == 5 * 2 * 2 * 144
