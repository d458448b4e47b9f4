"""Capture through optimizer hooks: what the optimizer uses is what the probe sees."""

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.stats.normality import moments
from tests.helpers import TinyNet, batches, train, uncompacted

REQUIRED_COLUMNS = (
    "step",
    "param",
    "quantity",
    "axis",
    "lr",
    "status",
    "numel",
    "n_tested",
    "mean",
    "std",
    "skew",
    "excess_kurtosis",
    "nonfinite",
    "param_norm",
    "grad_norm",
    "grad_to_param",
    "ks_d",
    "lilliefors_p",
    "shapiro_w",
    "shapiro_p",
    "anderson_a2",
    "anderson_p",
    "qq_r",
    "qq_r_crit05",
    "w1_sigma",
    "verdict",
)


def _rows(run, quantity, param=None):
    s = run.stats
    s = s[s["quantity"] == quantity]
    return s if param is None else s[s["param"] == param].sort_values("step")


def test_round_trip_has_contract_columns_and_one_row_per_step_param_quantity(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=2) as probe:
        train(model, opt, batches(5))
    assert probe.step == 5
    run = gp.load_run(tmp_path / "run")
    assert set(REQUIRED_COLUMNS) <= set(run.stats.columns)
    assert run.status == "completed" and run.meta["steps"] == 5 and run.meta["captured_steps"] == 3
    assert sorted(run.stats["step"].unique()) == [0, 2, 4]
    assert set(run.stats["quantity"]) == set(schema.QUANTITIES)
    assert not run.stats.duplicated(["step", "param", "quantity"]).any()
    assert len(run.stats) == 3 * 4 * 4
    assert (run.stats["axis"] == "pooled").all()
    assert run.stats["step"].dtype == np.int64
    sample = run.sample(0, "fc1.weight")
    assert sample.dtype == np.float64 and sample.size == 6 * 16


def test_captured_statistics_equal_direct_computation(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(model(x), y).backward()
    expected_x = (model.fc1.weight.detach().double() - model.fc1.weight.grad.double()).numpy()
    expected_theta = model.fc1.weight.detach().double().numpy()
    expected_grad = model.fc1.weight.grad.double().numpy()
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        opt.step()
    run = gp.load_run(tmp_path / "r")
    row = _rows(run, "theta_minus_grad", "fc1.weight").iloc[0]
    direct = gp.normality(expected_x)
    for name in (
        "mean",
        "std",
        "skew",
        "excess_kurtosis",
        "min",
        "max",
        "shapiro_w",
        "ks_d",
        "qq_r",
        "w1_sigma",
    ):
        assert row[name] == pytest.approx(getattr(direct, name), rel=1e-9, abs=1e-12), name
    assert row["param_norm"] == pytest.approx(np.linalg.norm(expected_theta), rel=1e-9)
    assert row["grad_norm"] == pytest.approx(np.linalg.norm(expected_grad), rel=1e-9)
    assert row["grad_to_param"] == pytest.approx(
        np.linalg.norm(expected_grad) / np.linalg.norm(expected_theta)
    )
    assert row["lr"] == 0.05


def test_gradient_accumulation_captures_the_accumulated_gradient(tmp_path):
    model = TinyNet()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    micro = batches(3, batch=8)
    for x, y in micro:
        nn.functional.cross_entropy(reference(x), y).backward()
    accumulated = reference.fc2.weight.grad.double().numpy()
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        for x, y in micro:
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    row = _rows(gp.load_run(tmp_path / "r"), "grad", "fc2.weight").iloc[0]
    m = moments(accumulated)
    assert row["std"] == pytest.approx(m.std, rel=1e-9)
    assert row["mean"] == pytest.approx(m.mean, rel=1e-9, abs=1e-15)
    single = copy.deepcopy(reference)
    single.zero_grad()
    nn.functional.cross_entropy(single(micro[0][0]), micro[0][1]).backward()
    assert row["std"] != pytest.approx(single.fc2.weight.grad.double().std(unbiased=False).item(), rel=1e-3)


def test_grad_scaler_gradients_are_unscaled_and_skipped_steps_not_captured(tmp_path):
    model = TinyNet()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    x, y = batches(1)[0]
    nn.functional.cross_entropy(reference(x), y).backward()
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1) as probe:
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        # an overflowing step: the scaler skips optimizer.step, so nothing is captured
        scaler.scale(nn.functional.cross_entropy(model(x), y) * float("inf")).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        assert probe.step == 1
    run = gp.load_run(tmp_path / "r")
    row = _rows(run, "grad", "fc1.weight").iloc[0]
    assert row["grad_norm"] == pytest.approx(reference.fc1.weight.grad.norm().item(), rel=1e-5)
    assert list(run.stats["step"].unique()) == [0]
    assert run.meta["steps"] == 1


def test_gradient_clipping_is_seen(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(1)[0]
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        nn.functional.cross_entropy(model(x), y).backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-3)
        opt.step()
    grads = _rows(gp.load_run(tmp_path / "r"), "grad")
    total = math.sqrt(float((grads["grad_norm"] ** 2).sum()))
    assert total == pytest.approx(1e-3, rel=1e-4)


def test_each_param_group_records_its_own_lr_and_scheduler_changes(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(
        [{"params": model.fc1.parameters(), "lr": 0.1}, {"params": model.fc2.parameters(), "lr": 0.01}]
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        for x, y in batches(3):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            sched.step()
    s = gp.load_run(tmp_path / "r").stats
    lrs = s[s["quantity"] == "theta"].groupby(["param", "step"])["lr"].first()
    assert lrs[("fc1.weight", 0)] == 0.1 and lrs[("fc2.bias", 0)] == 0.01
    assert lrs[("fc1.weight", 2)] == pytest.approx(0.025)


def test_update_row_is_the_applied_update_and_shadow_fidelity_for_sgd(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        train(model, opt, batches(1))
    s = gp.load_run(tmp_path / "r").stats
    upd = s[(s["quantity"] == "update") & (s["param"] == "fc1.weight")].iloc[0]
    grad = s[(s["quantity"] == "grad") & (s["param"] == "fc1.weight")].iloc[0]
    x = s[(s["quantity"] == "theta_minus_grad") & (s["param"] == "fc1.weight")].iloc[0]
    assert upd["std"] == pytest.approx(0.2 * grad["std"], rel=1e-5)
    assert upd["skew"] == pytest.approx(-grad["skew"], rel=1e-4, abs=1e-6)
    assert upd["goup_cosine"] == pytest.approx(1.0, abs=1e-6)
    n = x["numel"]
    expected_nsr = x["std"] * math.sqrt(n / (n - 1)) * math.sqrt(n) / grad["grad_norm"]
    assert upd["noise_to_signal"] == pytest.approx(expected_nsr, rel=1e-6)
    # plain SGD: the update is GO-UP's mean with no noise at all, which GO-UP's fit test rejects
    assert upd["goup_fit_p"] < 1e-6


def test_frozen_unused_and_tied_parameters(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(4, 4)
            self.dec = nn.Linear(4, 4)
            self.dec.weight = self.enc.weight  # tied
            self.frozen = nn.Linear(4, 4)
            self.frozen.requires_grad_(False)
            self.unused = nn.Linear(4, 4)

        def forward(self, x):
            return self.dec(torch.relu(self.enc(x))) + self.frozen(x)

    model = Net()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
    s = gp.load_run(tmp_path / "r").stats
    x = s[s["quantity"] == "theta_minus_grad"].set_index("param")
    assert "dec.weight" not in x.index  # tied: captured once, under its first name
    assert x.loc["enc.weight", "status"] == "ok"
    assert x.loc["frozen.weight", "status"] == schema.STATUS_FROZEN
    assert x.loc["unused.weight", "status"] == schema.STATUS_NO_GRAD
    theta_unused = s[(s["quantity"] == "theta") & (s["param"] == "unused.weight")]
    assert theta_unused["status"].iloc[0] == "ok"


def test_hooks_removed_and_status_failed_after_exception(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="boom"), gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        train(model, opt, batches(2))
        raise RuntimeError("boom")
    assert len(opt._optimizer_step_pre_hooks) == 0 and len(opt._optimizer_step_post_hooks) == 0
    run = gp.load_run(tmp_path / "r")
    assert run.status == "failed" and "boom" in run.meta["status_reason"]
    assert sorted(run.stats["step"].unique()) == [0, 1]
    # the model can be probed again
    with gp.attach(model, opt, run_dir=tmp_path / "r2", every=1):
        pass


def test_keyboard_interrupt_is_recorded_as_interrupted(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(KeyboardInterrupt), gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        train(model, opt, batches(1))
        raise KeyboardInterrupt
    run = gp.load_run(tmp_path / "r")
    assert run.status == "interrupted" and len(run.stats) > 0


def test_manual_capture_without_optimizer(tmp_path):
    model = TinyNet()
    lr = 0.05
    with gp.attach(model, run_dir=tmp_path / "r", every=1) as probe:
        for x, y in batches(3):
            nn.functional.cross_entropy(model(x), y).backward()
            probe.capture(lr=lr)
            with torch.no_grad():
                for p in model.parameters():  # the seed's hand-written update
                    p.data = p - lr * p.grad
                    p.grad = None
    run = gp.load_run(tmp_path / "r")
    assert run.meta["capture"]["mode"] == "manual" and run.meta["steps"] == 3
    s = run.stats
    upd = s[(s["quantity"] == "update") & (s["param"] == "fc2.weight")].sort_values("step")
    grad = s[(s["quantity"] == "grad") & (s["param"] == "fc2.weight")].sort_values("step")
    assert len(upd) == 3
    np.testing.assert_allclose(upd["std"].to_numpy(), lr * grad["std"].to_numpy(), rtol=1e-5)
    traj = run.trajectories
    assert len(traj[traj["param"] == "fc2.weight"]) == 3


def test_trajectories_recorded_every_step_with_next_theta(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=100, tracers=10):
        train(model, opt, batches(4))
    run = gp.load_run(tmp_path / "r")
    t = run.trajectories
    w = t[t["param"] == "fc1.weight"].sort_values("step")
    assert list(w["step"]) == [0, 1, 2, 3]
    theta, grad, nxt = (np.stack(w[c].to_numpy()) for c in ("theta", "grad", "theta_next"))
    assert theta.shape == (4, 10)
    np.testing.assert_allclose(nxt, theta - 0.1 * grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(nxt[:-1], theta[1:])
    coords = run.table("tracers").set_index("param").loc["fc1.weight", "coord"]
    assert len(coords) == 10 and len(set(coords)) == 10
    flat = model.fc1.weight.detach().reshape(-1)[list(coords)].double().numpy()
    np.testing.assert_allclose(flat, nxt[-1], rtol=1e-6)


def test_layers_selects_by_glob_and_subsample_is_bounded(tmp_path):
    model = nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(
        model, opt, run_dir=tmp_path / "r", every=1, layers="0.*", sample_size=1000, keep_samples=50
    ):
        model(torch.randn(4, 100)).sum().backward()
        opt.step()
    run = gp.load_run(tmp_path / "r")
    assert set(run.stats["param"]) == {"0.weight", "0.bias"}
    w = run.stats[run.stats["param"] == "0.weight"]
    assert (w["n_tested"] == 1000).all() and (w["numel"] == 8000).all()
    assert len(run.sample(0, "0.weight")) == 50


def test_schedule_and_meta(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", schedule=gp.explicit([1, 3]), metadata={"note": "x"}):
        train(model, opt, batches(4))
    run = gp.load_run(tmp_path / "r")
    assert sorted(run.stats["step"].unique()) == [1, 3]
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    assert meta["capture"]["schedule"] == "explicit([1, 3])"
    assert meta["optimizer"]["class"] == "SGD" and meta["model"]["class"] == "TinyNet"
    assert meta["versions"]["torch"] == torch.__version__ and meta["user"] == {"note": "x"}
    assert meta["ended_at"] is not None


def test_probe_time_counts_its_own_seconds_by_kind_of_step(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", schedule=gp.explicit([1, 3])) as probe:
        train(model, opt, batches(5))
    spent = probe.time
    assert (spent.captured_steps, spent.other_steps) == (2, 3)
    assert spent.captured_seconds > 0 and spent.other_seconds > 0 and spent.close_seconds > 0
    assert spent.per_captured_step == spent.captured_seconds / 2
    stored = gp.load_run(tmp_path / "r").meta["probe_time"]
    assert stored == pytest.approx(spent.to_dict())


def test_fast_and_float64_precision_agree_on_a_large_layer(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 4))  # 131072 weights: fast path
    twin = copy.deepcopy(model)
    x, y = torch.randn(64, 512), torch.randint(0, 4, (64,))
    frames = {}
    for precision, m in (("fast", model), ("float64", twin)):
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        with gp.attach(m, opt, run_dir=tmp_path / precision, every=1, precision=precision):
            for _ in range(2):
                opt.zero_grad()
                nn.functional.cross_entropy(m(x), y).backward()
                opt.step()
        run = gp.load_run(tmp_path / precision)
        assert run.meta["capture"]["precision"] == precision
        frames[precision] = run.stats.set_index(["step", "param", "quantity"]).sort_index()
    fast, exact = frames["fast"], frames["float64"]
    assert fast.index.equals(exact.index)
    np.testing.assert_allclose(fast["std"], exact["std"], rtol=1e-6)
    np.testing.assert_allclose(fast["excess_kurtosis"], exact["excess_kurtosis"], atol=1e-5)
    np.testing.assert_allclose(fast["skew"], exact["skew"], atol=1e-5)
    np.testing.assert_array_equal(fast["shapiro_p"], exact["shapiro_p"])  # tests: same float64 subsample
    with pytest.raises(ValueError, match="precision"):
        gp.attach(model, run_dir=tmp_path / "bad", precision="half")


def test_default_init_weights_are_uniform_like_at_step_zero(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        model(torch.randn(16, 200)).pow(2).mean().backward()
        opt.step()
    row = _rows(gp.load_run(tmp_path / "r"), "theta_minus_grad", "0.weight").iloc[0]
    assert row["verdict"] == schema.VERDICT_NON_GAUSSIAN
    assert row["excess_kurtosis"] == pytest.approx(-1.2, abs=0.05)


def test_trajectories_are_identical_whatever_the_flush_size(tmp_path):
    frames = []
    for flush_rows in (3, 10_000):
        torch.manual_seed(3)
        model = TinyNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with (
            uncompacted(),
            gp.attach(  # keep the parts the flushes wrote
                model, opt, run_dir=tmp_path / f"r{flush_rows}", every=100, tracers=7, flush_rows=flush_rows
            ),
        ):
            train(model, opt, batches(5))
        t = gp.load_run(tmp_path / f"r{flush_rows}").trajectories.sort_values(["step", "param"])
        frames.append(t.reset_index(drop=True))
    assert len(list((tmp_path / "r3" / "trajectories").iterdir())) > 1
    assert len(frames[0]) == 5 * 4
    for col in ("step", "param", "lr"):
        assert frames[0][col].tolist() == frames[1][col].tolist()
    for col in ("theta", "grad", "theta_next"):
        for left, right in zip(frames[0][col], frames[1][col], strict=True):
            np.testing.assert_array_equal(left, right)


def test_tracers_follow_a_parameter_whose_storage_is_replaced(tmp_path):
    """The seed's update ``p.data = p - lr * g`` gives θ new storage each step: θ_{t+1} is its new values."""
    model, lr = TinyNet(), 0.05
    with gp.attach(model, run_dir=tmp_path / "r", every=100, tracers=8) as probe:
        for x, y in batches(4):
            nn.functional.cross_entropy(model(x), y).backward()
            probe.capture(lr=lr)
            with torch.no_grad():
                for p in model.parameters():
                    p.data = p - lr * p.grad
                    p.grad = None
    run = gp.load_run(tmp_path / "r")
    t = run.trajectories
    w = t[t["param"] == "fc1.weight"].sort_values("step")
    theta, grad, nxt = (np.stack(w[c].to_numpy()).astype(np.float64) for c in ("theta", "grad", "theta_next"))
    assert theta.shape == (4, 8)
    np.testing.assert_allclose(nxt, theta - lr * grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(nxt[:-1], theta[1:])
    coords = list(run.table("tracers").set_index("param").loc["fc1.weight", "coord"])
    np.testing.assert_array_equal(nxt[-1], model.fc1.weight.detach().reshape(-1)[coords].double().numpy())
