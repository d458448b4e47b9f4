"""gp.NoiseProbe under DDP (2 gloo processes on CPU): rank 0 measures, no rank's trajectory changes."""

from __future__ import annotations

import datetime
import gc
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import goup_probe as gp
from goup_probe import schema

WORLD, STEPS, EVERY = 2, 8, 3

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=40))
    try:
        _worker(rank, out)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _worker(rank: int, out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    g = torch.Generator().manual_seed(5)
    noise_data = [(torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]
    for label in ("plain", "noise"):
        torch.manual_seed(0)
        model = DDP(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Dropout(0.2), nn.Linear(12, 3)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        noise = (
            gp.NoiseProbe(nn.functional.cross_entropy, noise_data, every=EVERY) if label == "noise" else None
        )
        torch.manual_seed(10 + rank)
        with gp.attach(model, opt, run_dir=out / label, every=4, tracers=0, noise=noise):
            for _ in range(STEPS):
                opt.zero_grad()
                nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
                opt.step()
        torch.save([p.detach() for p in model.parameters()], out / f"{label}-rank{rank}.pt")


def test_rank0_records_the_noise_and_no_rank_changes_its_trajectory(tmp_path: Path) -> None:
    mp.spawn(_entry, args=(_free_port(), tmp_path), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        plain, noisy = (torch.load(tmp_path / f"{label}-rank{rank}.pt") for label in ("plain", "noise"))
        for a, b in zip(plain, noisy, strict=True):
            assert torch.equal(a, b)
    rows = gp.load_run(tmp_path / "noise").table(schema.NOISE_PROBE)
    assert sorted(rows["step"].unique()) == [s for s in range(STEPS) if s % EVERY == 0]
    assert (rows["status"] == schema.STATUS_OK).all()
    assert set(rows["param"]) == {"0.weight", "0.bias", "3.weight", "3.bias", schema.MODEL_ROW}


# ---------------------------------------------------------------------- grad_noise across ranks (comm hook)
def _entry_ranks(rank: int, port: int, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=40))
    try:
        _rank_noise_worker(rank, out)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _rank_noise_worker(rank: int, out: Path) -> None:
    """DDP with grad_noise; each rank's own gradient, computed apart on its batch, gathered for the check."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.manual_seed(0)
    inner = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3))
    model = DDP(inner, bucket_cap_mb=0.0001)  # one bucket per tensor: the slicing across buckets is exercised
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(20 + rank)
    expected = {}
    quantities = [schema.THETA_MINUS_GRAD, schema.GRAD_NOISE]
    with gp.attach(model, opt, run_dir=out / "ranks", every=2, tracers=0, quantities=quantities):
        for step in range(4):
            x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
            own = torch.autograd.grad(nn.functional.cross_entropy(inner(x), y), list(inner.parameters()))
            for (name, _), grad in zip(inner.named_parameters(), own, strict=True):
                every = [torch.empty_like(grad) for _ in range(WORLD)]
                dist.all_gather(every, grad.contiguous())
                expected[(step, name)] = torch.stack([e.reshape(-1).double() for e in every])
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    if rank == 0:
        torch.save(expected, out / "expected.pt")


def test_ddp_grad_noise_rows_are_the_ranks_gradients_minus_their_mean(tmp_path: Path) -> None:
    mp.spawn(_entry_ranks, args=(_free_port(), tmp_path), nprocs=WORLD, join=True)
    expected = torch.load(tmp_path / "expected.pt")
    run = gp.load_run(tmp_path / "ranks")
    noise = run.table(schema.NOISE).set_index(["step", "param"])
    stats = run.stats[run.stats["quantity"] == schema.GRAD_NOISE].set_index(["step", "param", "micro_batch"])
    assert sorted(noise.index.get_level_values("step").unique()) == [0, 2]
    for step in (0, 2):
        for name, _ in nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).named_parameters():
            g = expected[(step, name)].numpy()
            xi = g - g.mean(axis=0)
            trace = float((xi**2).sum()) / (WORLD - 1)
            row = noise.loc[(step, name)]
            assert row["n_micro"] == WORLD
            assert row["trace_sigma"] == pytest.approx(trace, rel=1e-5)
            assert row["grad_sq_norm"] == pytest.approx(
                float(g.mean(0) @ g.mean(0)) - trace / WORLD, rel=1e-4
            )
            for r in range(WORLD):
                assert stats.loc[(step, name, r), "std"] == pytest.approx(xi[r].std(), rel=1e-5)
                assert stats.loc[(step, name, r), "mean"] == pytest.approx(xi[r].mean(), abs=1e-6)
