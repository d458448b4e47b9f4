"""The probe and GO-UP under torch.distributed: DDP and FSDP2 with 2 real gloo processes (CPU).

Each test spawns two processes on a free loopback port and compares what rank 0
wrote with a single-process reference run of the same model, seed and data.
A process-group timeout turns a hang into a failure.
"""

from __future__ import annotations

import datetime
import gc
import json
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.capture import distributed as gdist
from goup_probe.dist import context as gctx
from goup_probe.dist.layout import is_dtensor
from goup_probe.optim.goup import GOUP
from goup_probe.store import load_run

WORLD = 2
STEPS = 4
EVERY = 2
BATCH = 16
OPTS = {"sample_size": 300, "keep_samples": 50, "tracers": 16, "seed": 3}
KEY = ["step", "param", "quantity"]
MOMENT_COLS = ["std", "skew", "excess_kurtosis", "min", "max", "param_norm", "grad_norm", "grad_to_param"]
SHADOW_COLS = ["noise_to_signal", "goup_cosine", "goup_fit_p"]
LOG_SCALE_COLS = {"goup_fit_p"}
TEST_COLS = [
    "ks_d",
    "lilliefors_p",
    "shapiro_w",
    "shapiro_p",
    "anderson_a2",
    "anderson_p",
    "dagostino_p",
    "jarque_bera_p",
    "qq_r",
    "shapiro_francia_p",
    "w1_sigma",
]

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")


# ---------------------------------------------------------------------- shared pieces
def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 40), nn.Tanh(), nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 5))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, BATCH, 12, generator=g), torch.randint(0, 5, (STEPS, BATCH), generator=g)


def _train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    for s in range(STEPS):
        F.cross_entropy(model(x[s]), y[s]).backward()
        opt.step()
        opt.zero_grad()


def _shard(model: nn.Module) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn, port: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=40))
    try:
        fn(rank, *args)
        # free DDP/FSDP objects (and the probes that reference them) while the process group is
        # alive: destroyed later, at interpreter exit, gloo's reducer can abort the process
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(fn, *args) -> None:
    mp.spawn(_entry, args=(fn, _free_port(), args), nprocs=WORLD, join=True)


def _reference(path: Path, *, goup: bool = False) -> gp.Probe:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    with gp.attach(model, opt, run_dir=path, every=EVERY, **OPTS) as probe:
        _train(model, opt, x, y)
    return probe


def _aligned(ref: pd.DataFrame, got: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    a = ref.sort_values(KEY).reset_index(drop=True)
    b = got.sort_values(KEY).reset_index(drop=True)
    assert len(a) == len(b), (len(a), len(b))
    pd.testing.assert_frame_equal(a[KEY], b[KEY])
    pd.testing.assert_series_equal(a["status"], b["status"])
    pd.testing.assert_series_equal(a["verdict"], b["verdict"])
    return a, b


def max_relative_differences(ref: pd.DataFrame, got: pd.DataFrame) -> dict[str, float]:
    """Max |got − ref| / |ref| per float column (NaN positions must agree; the mean is in units of std)."""
    a, b = _aligned(ref, got)
    out = {}
    for col in ["mean", *MOMENT_COLS, *SHADOW_COLS, *TEST_COLS]:
        x, y = a[col].to_numpy(float), b[col].to_numpy(float)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=col)
        ok = ~np.isnan(x)
        if col in LOG_SCALE_COLS:
            # Where Δ = −αg to rounding (cos(Δ, −αg) = 1: a first momentum step), ‖Δ + αg‖² is what is left
            # of the float32 sums' rounding, and so is p (1.66e-35 single-process, 1.92e-35 sharded, for the
            # 5-value last bias): both must reject; their digits need not agree.
            exact = ok & (a["goup_cosine"].to_numpy(float) >= 1 - 1e-6)
            np.testing.assert_array_equal(x[exact] < 0.05, y[exact] < 0.05, err_msg=col)
            ok &= ~exact
        scale = a["std"].to_numpy(float)[ok] if col == "mean" else np.abs(x[ok])
        if col in LOG_SCALE_COLS:  # a p-value far in the tail: compare log p (float32 sums move 1e-30 by 20%)
            x, y = np.log(np.maximum(x, 1e-300)), np.log(np.maximum(y, 1e-300))
            scale = np.maximum(np.abs(x[ok]), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(scale > 0, np.abs(x[ok] - y[ok]) / scale, np.abs(x[ok] - y[ok]))
        out[col] = float(rel.max()) if rel.size else 0.0
    return out


# ---------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, out: Path) -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    x, y = _data()
    half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)  # each rank its half of the batch
    for target in ("wrapper", "inner"):
        model = _model()
        ddp = DDP(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        run_dir = out / target if rank == 0 else out / f"{target}-rank{rank}"
        with gp.attach(ddp if target == "wrapper" else model, opt, run_dir=run_dir, every=EVERY, **OPTS) as p:
            _train(ddp, opt, x[:, half], y[:, half])
        if rank != 0:
            assert p.tracked == [n for n, _ in model.named_parameters()]
            assert not p.errors


def test_ddp_rank0_writes_once_and_matches_single_process(tmp_path: Path) -> None:
    _spawn(_ddp_worker, tmp_path)
    ref = load_run(_reference(tmp_path / "ref").run_dir)
    assert not (tmp_path / "wrapper-rank1").exists() and not (tmp_path / "inner-rank1").exists()
    wrapper, inner = load_run(tmp_path / "wrapper"), load_run(tmp_path / "inner")
    for run in (wrapper, inner):
        assert run.meta["world_size"] == WORLD
        assert run.meta["distributed"]["mode"] == gctx.MODE_REPLICATED
        assert run.meta["status"] == "completed" and run.meta["error_count"] == 0
        assert list(run.stats.columns) == list(ref.stats.columns)
        assert sorted(run.stats["param"].unique()) == sorted(ref.stats["param"].unique())
        assert not any(p.startswith("module.") for p in run.stats["param"])
        assert len(run.trajectories) == len(ref.trajectories) == STEPS * 6
        # gradients are averaged over two half batches: equal up to float32 rounding
        diffs = max_relative_differences(ref.stats, run.stats)
        # log p of the GO-UP fit test to 1%: a p of 1e-30 moves with the float32 rounding of ‖Δ + αg‖²
        too_far = {k: v for k, v in diffs.items() if v >= (1e-2 if k in LOG_SCALE_COLS else 1e-3)}
        assert not too_far, too_far
    pd.testing.assert_frame_equal(
        wrapper.stats.sort_values(KEY).reset_index(drop=True)[KEY],
        inner.stats.sort_values(KEY).reset_index(drop=True)[KEY],
    )


# ---------------------------------------------------------------------- FSDP2
def _fsdp_worker(rank: int, out: Path) -> None:
    x, y = _data()  # the full batch on every rank: the averaged gradient is bitwise the single-process one
    model = _shard(_model())
    assert all(is_dtensor(p) for p in model.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gp.attach(model, opt, run_dir=out / "fsdp", every=EVERY, **OPTS) as probe:
        _train(model, opt, x, y)
    assert not probe.errors, probe.errors
    # one GO-UP step on the sharded model, gathered (test only) for comparison
    model = _shard(_model())
    opt = GOUP(model.parameters(), lr=0.05, seed=11)
    F.cross_entropy(model(x[0]), y[0]).backward()
    opt.step()
    full = {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
    if rank == 0:
        torch.save(full, out / "goup.pt")


def test_fsdp2_moments_combined_across_shards_equal_single_process(tmp_path: Path) -> None:
    _spawn(_fsdp_worker, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["fsdp", "goup.pt"]
    ref = load_run(_reference(tmp_path / "ref").run_dir)
    run = load_run(tmp_path / "fsdp")
    assert run.meta["world_size"] == WORLD
    assert run.meta["distributed"]["mode"] == gctx.MODE_SHARDED
    assert run.meta["distributed"]["bytes_received"] > 0
    assert run.meta["status"] == "completed" and run.meta["error_count"] == 0
    assert [t["shape"] for t in run.meta["model"]["tensors"]] == [
        t["shape"] for t in ref.meta["model"]["tensors"]
    ]
    assert list(run.stats.columns) == list(ref.stats.columns)
    diffs = max_relative_differences(ref.stats, run.stats)
    for col in ["mean", *MOMENT_COLS, *SHADOW_COLS]:
        # log p of the GO-UP fit: ‖Δ + αg‖² cancels (Δ = −αg at the first momentum step), so the shards'
        # float32 sums, added in another order, move log p by up to 3.4e-5 relative (seen), not 1e-9
        tolerance = 1e-3 if col in LOG_SCALE_COLS else 1e-9
        assert diffs[col] < tolerance, (col, diffs[col])
    a, b = _aligned(ref.stats, run.stats)
    # the same global subsample, value for value: the tests give identical results
    pd.testing.assert_frame_equal(a[TEST_COLS], b[TEST_COLS], check_exact=True)
    pd.testing.assert_frame_equal(
        ref.samples.sort_values(KEY).reset_index(drop=True),
        run.samples.sort_values(KEY).reset_index(drop=True),
        check_exact=True,
    )
    traj = ["step", "param"]
    pd.testing.assert_frame_equal(
        ref.trajectories.sort_values(traj).reset_index(drop=True),
        run.trajectories.sort_values(traj).reset_index(drop=True),
        check_exact=True,
    )
    pd.testing.assert_frame_equal(ref.table("tracers"), run.table("tracers"))
    # GO-UP: σ is the global std of θ − g and the noise is the single-process draw
    model = _model()
    x, y = _data()
    opt = GOUP(model.parameters(), lr=0.05, seed=11)
    F.cross_entropy(model(x[0]), y[0]).backward()
    opt.step()
    sharded = torch.load(tmp_path / "goup.pt")
    for name, p in model.named_parameters():
        torch.testing.assert_close(sharded[name], p.detach(), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- user quantities
def _user_quantities() -> list:
    relative = gp.Quantity("relative_grad", lambda i: i.grad / (i.theta.abs() + 1e-3), tested=True)
    step_size = gp.Quantity("step_size", lambda i: (i.theta - i.theta_before).abs(), phase="after")
    return ["theta_minus_grad", "update", relative, step_size]


def _tail_share() -> gp.Statistic:
    def share(x):
        centred = np.abs(x - x.mean(axis=1, keepdims=True))
        return {"beyond_2sd": np.mean(centred > 2 * x.std(axis=1, keepdims=True), axis=1)}

    return gp.Statistic("beyond_2sd", {"beyond_2sd": "share beyond 2 std"}, share)


def _user_options() -> dict:
    return {"quantities": _user_quantities(), "statistics": [_tail_share()], **OPTS}


def _user_quantity_worker(rank: int, out: Path) -> None:
    x, y = _data()
    model = _shard(_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gp.attach(model, opt, run_dir=out / "fsdp", every=EVERY, **_user_options()) as p:
        _train(model, opt, x, y)
    assert not p.errors, p.errors
    whole = gp.Quantity("normalised", lambda i: i.grad / i.grad.norm(), elementwise=False)
    try:
        gp.attach(model, opt, run_dir=out / f"refused{rank}", quantities=["grad", whole])
    except ValueError as exc:
        (out / f"refusal{rank}.txt").write_text(str(exc))


def test_fsdp2_user_quantities_equal_single_process(tmp_path: Path) -> None:
    _spawn(_user_quantity_worker, tmp_path)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    with gp.attach(model, opt, run_dir=tmp_path / "ref", every=EVERY, **_user_options()):
        _train(model, opt, x, y)
    ref, run = load_run(tmp_path / "ref"), load_run(tmp_path / "fsdp")
    assert set(run.stats["quantity"]) == {"theta_minus_grad", "update", "relative_grad", "step_size"}
    diffs = max_relative_differences(ref.stats, run.stats)
    for col in ["mean", *MOMENT_COLS]:
        assert diffs[col] < 1e-9, (col, diffs[col])
    a, b = _aligned(ref.stats, run.stats)
    pd.testing.assert_frame_equal(a[TEST_COLS], b[TEST_COLS], check_exact=True)
    assert a["beyond_2sd"].notna().any()
    pd.testing.assert_series_equal(a["beyond_2sd"], b["beyond_2sd"], check_exact=True)
    for rank in range(WORLD):
        message = (tmp_path / f"refusal{rank}.txt").read_text()
        assert "normalised" in message and "sharded" in message


# ---------------------------------------------------------------------- failures
def _failing_worker(rank: int, out: Path) -> None:
    x, y = _data()
    model = _shard(_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    original = gdist._before_fields

    def flaky(layout, theta, grad, captured, tracers):
        if rank == 1 and captured and theta.numel() == 600:  # "2.weight" (30×40) fails on rank 1 only
            raise RuntimeError("injected failure")
        return original(layout, theta, grad, captured, tracers)

    gdist._before_fields = flaky
    try:
        with gp.attach(model, opt, run_dir=out / "flaky", every=EVERY, **OPTS) as probe:
            _train(model, opt, x, y)
        assert probe.step == STEPS
        assert {e["param"] for e in probe.errors} == {"2.weight"}
    finally:
        gdist._before_fields = original
    # rank 0's writer fails at the first flush: every rank stops capturing, training goes on
    model = _shard(_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=out / "broken", every=1, **OPTS) as probe:
        if rank == 0:

            def refuse() -> None:
                raise OSError("disk full (injected)")

            probe._writer.flush_due = refuse
        _train(model, opt, x, y)
    assert probe.step == STEPS
    assert probe.capture_stopped
    (out / f"done{rank}").write_text(json.dumps({"errors": probe.error_count}))


def test_a_failing_rank_does_not_hang_the_others(tmp_path: Path) -> None:
    _spawn(_failing_worker, tmp_path)
    assert (tmp_path / "done0").exists() and (tmp_path / "done1").exists()
    run = load_run(tmp_path / "flaky")
    assert run.meta["status"] == "completed"
    errors = run.meta["errors"]
    assert errors and all(e["param"] == "2.weight" for e in errors)
    assert all("rank(s) [1]" in e["error"] for e in errors)
    stats = run.stats
    captured = sorted(stats["step"].unique())
    assert captured == [0, 2]
    # the failed tensor lost its rows before the step, the others are complete
    assert not (stats["param"] == "2.weight").any()
    assert len(stats[stats["param"] == "0.weight"]) == 2 * len(schema.QUANTITIES)
    assert load_run(tmp_path / "broken").meta["capture_stopped"]["step"] == 0
