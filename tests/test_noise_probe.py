"""gp.NoiseProbe: gradient noise (and curvature) at θ_t inside a probed run, without changing training."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema

STEPS = 30
EVERY = 7
SCHEDULED = [s for s in range(STEPS) if s % EVERY == 0]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))


def _noise_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(7)
    return [(torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]


def _greedy_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy that also draws from numpy's and Python's global generators (restored by the probe)."""
    np.random.rand()  # noqa: NPY002 (the legacy global stream is what must be restored)
    random.random()
    return nn.functional.cross_entropy(out, y)


def _train(run_dir, noise=None, reference=None, **options):
    """30 steps of SGD with momentum on data drawn from the global torch/numpy/Python streams."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    with gp.attach(model, opt, run_dir=run_dir, every=10, tracers=0, noise=noise, **options):
        for step in range(STEPS):
            x = torch.randn(8, 6) + float(np.random.rand())  # noqa: NPY002
            x = x + random.random()
            y = torch.randint(0, 3, (8,))
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            if reference is not None:
                reference(step, model)
            opt.step()
    return model, gp.load_run(run_dir)


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_trajectory_is_bit_identical_and_rows_come_at_the_scheduled_steps_only(tmp_path):
    plain, _ = _train(tmp_path / "plain")
    noise = gp.NoiseProbe(_greedy_loss, _noise_batches(), every=EVERY, curvature={"iters": 5, "probes": 4})
    probed, run = _train(tmp_path / "noise", noise=noise)
    for a, b in zip(_weights(plain), _weights(probed), strict=True):
        assert torch.equal(a, b)
    rows = run.table(schema.NOISE_PROBE)
    assert sorted(rows["step"].unique()) == SCHEDULED
    assert (rows["status"] == schema.STATUS_OK).all()
    names = [n for n, _ in probed.named_parameters()]
    for _, at_step in rows.groupby("step"):
        assert list(at_step["param"]) == [*names, schema.MODEL_ROW]
    assert run.meta["capture"]["noise_probe"]["schedule"] == "every(7)"


def test_rows_equal_a_direct_gradient_noise_and_curvature_call_at_the_same_theta(tmp_path):
    expected = {}
    curv = {"top": 1, "iters": 8, "probes": 6}

    def reference(step, model):  # θ_t and the RNG state the probe's pre hook sees next
        if step in SCHEDULED:
            direct = gp.gradient_noise(model, _greedy_loss, _noise_batches())
            inputs = torch.cat([x for x, _ in _noise_batches()])
            targets = torch.cat([y for _, y in _noise_batches()])
            hessian = gp.curvature(model, _greedy_loss, (inputs, targets), **curv)
            expected[step] = (direct, hessian)

    noise = gp.NoiseProbe(_greedy_loss, _noise_batches(), every=EVERY, curvature=curv)
    _, run = _train(tmp_path / "r", noise=noise, reference=reference)
    rows = run.table(schema.NOISE_PROBE)
    assert sorted(expected) == SCHEDULED
    for step, (direct, hessian) in expected.items():
        at = rows[rows["step"] == step].set_index("param")
        for name, scale in direct.noise_scale_per_tensor.items():
            assert at.loc[name, "b_simple"] == pytest.approx(scale.b_simple, rel=1e-12)
            assert at.loc[name, "trace_sigma"] == pytest.approx(scale.trace_sigma, rel=1e-12)
            tail = direct.tail_index.get(name)  # absent for a tensor too small for the estimator
            assert at.loc[name, "tail_alpha"] == pytest.approx(
                tail.alpha if tail else np.nan, rel=1e-12, nan_ok=True
            )
            assert at.loc[name, "curv_trace"] == pytest.approx(hessian.blocks[name].trace, rel=1e-9)
            assert at.loc[name, "curv_top"] == pytest.approx(hessian.blocks[name].eigenvalues[0], rel=1e-9)
        frame = direct.to_frame().set_index("param")
        assert list(at.loc[frame.index, "pooled_verdict"]) == list(frame["pooled_verdict"])
        assert at.loc[schema.MODEL_ROW, "b_simple"] == pytest.approx(direct.noise_scale.b_simple, rel=1e-12)
        assert at.loc[schema.MODEL_ROW, "curv_top"] == pytest.approx(hessian.top_eigenvalue, rel=1e-9)
        assert at.loc[schema.MODEL_ROW, "curv_hvps"] == hessian.hvps


def test_a_failing_loss_fn_is_an_error_row_and_training_is_unchanged(tmp_path):
    def broken(out, y):
        torch.randn(3)  # consumes the RNG before it fails: restored all the same
        raise RuntimeError("loss_fn exploded")

    plain, _ = _train(tmp_path / "plain")
    with pytest.warns(RuntimeWarning, match="NoiseProbe"):
        probed, run = _train(tmp_path / "broken", noise=gp.NoiseProbe(broken, _noise_batches(), every=EVERY))
    for a, b in zip(_weights(plain), _weights(probed), strict=True):
        assert torch.equal(a, b)
    rows = run.table(schema.NOISE_PROBE)
    assert sorted(rows["step"]) == SCHEDULED
    assert (rows["status"] == schema.STATUS_ERROR).all()
    assert rows["error"].str.contains("loss_fn exploded").all()
    assert any(e["where"] == "NoiseProbe" for e in run.meta["errors"])


def test_strict_raises_the_loss_fn_error(tmp_path):
    def broken(out, y):
        raise RuntimeError("loss_fn exploded")

    with pytest.raises(RuntimeError, match="loss_fn exploded"):
        _train(tmp_path / "r", noise=gp.NoiseProbe(broken, _noise_batches(), every=EVERY), strict=True)


def test_batch_sizes_recut_the_data_and_give_rows_per_unit_size(tmp_path):
    noise = gp.NoiseProbe(_greedy_loss, _noise_batches(), schedule=gp.explicit([3]), batch_sizes=(8, 16))
    expected = {}

    def reference(step, model):
        if step == 3:
            data = _noise_batches()
            x, y = torch.cat([b[0] for b in data]), torch.cat([b[1] for b in data])
            units = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 64, 8)]
            expected["b8"] = gp.gradient_noise(model, _greedy_loss, units).noise_scale.b_simple

    _, run = _train(tmp_path / "r", noise=noise, reference=reference)
    rows = run.table(schema.NOISE_PROBE)
    assert set(rows["step"]) == {3}
    model_rows = rows[rows["param"] == schema.MODEL_ROW].set_index("unit_size")
    assert model_rows.loc[8, "n_units"] == 8 and model_rows.loc[16, "n_units"] == 4
    assert model_rows.loc[8, "b_simple"] == pytest.approx(expected["b8"], rel=1e-12)


def test_resume_drops_and_rerecords_noise_probe_rows(tmp_path):
    noise = gp.NoiseProbe(_greedy_loss, _noise_batches(), every=EVERY)
    _train(tmp_path / "r", noise=noise)
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=10, tracers=0, noise=noise, resume=10):
        for _ in range(5):  # steps 10..14: one scheduled step (14)
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 6)), torch.randint(0, 3, (8,))).backward()
            opt.step()
    steps = gp.load_run(tmp_path / "r").table(schema.NOISE_PROBE, columns=["step"])["step"]
    assert sorted(steps.unique()) == [0, 7, 14]


def test_arguments_are_checked_and_named(tmp_path):
    data = _noise_batches()
    with pytest.raises(TypeError, match="one-shot iterator"):
        gp.NoiseProbe(_greedy_loss, iter(data))
    with pytest.raises(ValueError, match="batch_sizes and per_sample"):
        gp.NoiseProbe(_greedy_loss, data, batch_sizes=(4,), per_sample=True)
    with pytest.raises(ValueError, match="unknown keys"):
        gp.NoiseProbe(_greedy_loss, data, curvature={"topp": 2})
    with pytest.raises(TypeError, match=r"noise must be a goup_probe\.NoiseProbe"):
        gp.attach(_model(), run_dir=tmp_path / "r", noise=object())


def test_per_sample_and_a_callable_data_source(tmp_path):
    seen = []

    def data(step):
        seen.append(step)
        return _noise_batches()[:1]

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, run = _train(tmp_path / "r", noise=gp.NoiseProbe(_greedy_loss, data, every=15, per_sample=True))
    rows = run.table(schema.NOISE_PROBE)
    assert seen == [0, 15]
    assert set(rows["method"]) == {"vmap"} and set(rows["unit_size"]) == {1} and set(rows["n_units"]) == {16}
