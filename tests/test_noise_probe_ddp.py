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
