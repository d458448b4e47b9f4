"""The rows of a phase are tested together (RowSink.batched) and equal testing them one by one."""

import contextlib
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.capture import rows as rows_module
from goup_probe.stats import battery


def _model() -> nn.Module:
    torch.manual_seed(0)
    # distinct sizes, so no tensor is grouped: each is reduced alone and its rows wait for the batch
    return nn.Sequential(nn.Linear(64, 128), nn.Tanh(), nn.Linear(128, 96), nn.Tanh(), nn.Linear(96, 10))


def _run(run_dir, steps=3) -> pd.DataFrame:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    with gp.attach(model, opt, run_dir=run_dir, every=1, tested=("theta_minus_grad", "grad"), tracers=0):
        for _ in range(steps):
            x, y = torch.randn(32, 64, generator=gen), torch.randint(0, 10, (32,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return gp.load_run(run_dir).stats


def _one_by_one(monkeypatch) -> None:
    """Turn the batching off: every row tested and written where it is made."""

    @contextlib.contextmanager
    def immediate(self, guarded):
        yield

    monkeypatch.setattr(rows_module.RowSink, "batched", immediate)


def _assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    keys = ["step", "param", "quantity"]
    assert got[keys].values.tolist() == expected[keys].values.tolist()  # same rows, same order
    for column in expected.columns:
        a, b = got[column].to_numpy(), expected[column].to_numpy()
        if column in keys:
            continue
        if a.dtype.kind == "f":
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=column)
        elif a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b, err_msg=column)
        else:
            assert [str(v) for v in a] == [str(v) for v in b], column


def test_batched_rows_equal_one_by_one_and_are_tested_together(tmp_path, monkeypatch):
    calls = []
    fits = []
    real = rows_module.assess_sample_blocks
    real_fits = battery.compare_fits_blocks

    def spy(blocks, **kwargs):
        calls.append([len(b.fulls) for b in blocks])
        return real(blocks, **kwargs)

    def spy_fits(blocks):
        fits.append([z.shape for z, _ in blocks])
        return real_fits(blocks)

    monkeypatch.setattr(rows_module, "assess_sample_blocks", spy)
    monkeypatch.setattr(battery, "compare_fits_blocks", spy_fits)
    batched = _run(tmp_path / "batched")
    # one call per phase and step (before: theta, g, X; after: the update), one block per sample
    # size: theta, g and X of the two 5000-value weight samples are one block of 6 rows
    assert len(calls) == 2 * 3, calls
    assert [blocks.count(6) for blocks in calls[::2]] == [1, 1, 1], calls
    assert all(len(blocks) > 1 for blocks in calls[::2]), calls
    # the shape fits of every tested size of a phase run in one call (the after phase tests nothing)
    assert len(fits) == 3 and all(len(shapes) >= 3 for shapes in fits), fits
    monkeypatch.undo()
    _one_by_one(monkeypatch)
    single = _run(tmp_path / "single")
    assert len(batched) == 6 * 4 * 3  # 6 tensors x (theta, grad, X, update) x 3 steps
    _assert_same_rows(batched, single)


def test_a_failing_batch_is_retried_row_by_row_and_one_bad_row_costs_only_itself(tmp_path, monkeypatch):
    def failing_batch(*args, **kwargs):
        raise RuntimeError("batch refused")

    real_one = rows_module.assess_sample

    def one(full, sample, **kwargs):
        if (
            kwargs.get("tested") and np.asarray(sample).size == 960
        ):  # the last weight (96 x 10): its tests fail
            raise ValueError("bad sample of the last layer")
        return real_one(full, sample, **kwargs)

    monkeypatch.setattr(rows_module, "assess_sample_blocks", failing_batch)
    monkeypatch.setattr(rows_module, "assess_sample", one)
    with pytest.warns(RuntimeWarning, match="4.weight"):
        stats = _run(tmp_path / "run")
    lost = stats[stats.param == "4.weight"]
    assert set(lost.quantity) == {schema.THETA, schema.UPDATE}  # its tested rows (g and X) failed
    assert len(stats) == 6 * 4 * 3 - 2 * 3
    errors = json.loads((tmp_path / "run" / "run.json").read_text())["errors"]
    assert {e["param"] for e in errors} == {"4.weight"}
    assert {e["where"] for e in errors} == {"stats row"}
    monkeypatch.undo()
    _one_by_one(monkeypatch)
    expected = _run(tmp_path / "single")
    tested = expected.quantity.isin([schema.GRAD, schema.THETA_MINUS_GRAD])
    kept = expected[~((expected.param == "4.weight") & tested)]
    _assert_same_rows(stats.reset_index(drop=True), kept.reset_index(drop=True))
