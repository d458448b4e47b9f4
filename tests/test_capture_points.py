"""Extension points of the capture core: user quantities, capture points (closure, begin/end, backward).

Every expected value is computed here from the model's own tensors (numpy/scipy),
not by the probe's reduction code.
"""

import copy

import numpy as np
import pytest
import torch
from scipy import stats as sps
from torch import nn

import goup_probe as gp
from tests.helpers import TinyNet, batches

EPS = 1e-3


def sign_grad():
    return gp.Quantity("sign_grad", lambda i: torch.sign(i.grad), description="sign(g)")


def relative_grad():
    return gp.Quantity("relative_grad", lambda i: i.grad / (i.theta.abs() + EPS), tested=True)


def relative_update():
    return gp.Quantity(
        "relative_update", lambda i: (i.theta - i.theta_before) / (i.theta_before.abs() + EPS), phase="after"
    )


def beyond_two_sd():
    """Share of values more than 2 standard deviations from the mean (vectorised over rows)."""

    def share(x):
        centred = np.abs(x - x.mean(axis=1, keepdims=True))
        return {"beyond_2sd": np.mean(centred > 2 * x.std(axis=1, keepdims=True), axis=1)}

    return gp.Statistic("beyond_2sd", {"beyond_2sd": "share of values beyond 2 std of the mean"}, share)


def expected_beyond_two_sd(values):
    values = np.asarray(values, dtype=np.float64).ravel()
    return float(np.mean(np.abs(values - values.mean()) > 2 * values.std()))


class Stack(nn.Module):
    """Four same-size layers: their weights and their biases form two groups (the grouped strategy)."""

    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x[:, :3]


def stack_batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(n)]


def assert_moments(row, values, mean_tol=1e-7):
    """Moments of a row against scipy's; the mean within ``mean_tol`` standard deviations."""
    values = np.asarray(values, dtype=np.float64).ravel()
    assert row["numel"] == values.size
    assert row["mean"] == pytest.approx(values.mean(), rel=1e-5, abs=mean_tol * (values.std() + 1e-30))
    assert row["std"] == pytest.approx(values.std(), rel=1e-5)
    if values.std() > 0:
        assert row["skew"] == pytest.approx(sps.skew(values), abs=1e-4)
        assert row["excess_kurtosis"] == pytest.approx(sps.kurtosis(values), abs=1e-3)


def record_reference(model, opt, data):
    """θ_t, g_t and θ_{t+1} of every step, from an independent copy of the training."""
    model, opt_state = copy.deepcopy(model), copy.deepcopy(opt.state_dict())
    opt = type(opt)(model.parameters(), **opt.defaults)
    opt.load_state_dict(opt_state)
    out = []
    for x, y in data:
        nn.functional.cross_entropy(model(x), y).backward()
        before = {
            n: (p.detach().double().clone(), p.grad.double().clone()) for n, p in model.named_parameters()
        }
        opt.step()
        after = {n: p.detach().double().clone() for n, p in model.named_parameters()}
        out.append({n: (*before[n], after[n]) for n in before})
        opt.zero_grad()
    return out


@pytest.mark.parametrize(
    "make_model,make_data", [(TinyNet, lambda: batches(3)), (Stack, lambda: stack_batches(3))]
)
def test_user_quantities_equal_an_independent_computation(tmp_path, make_model, make_data):
    torch.manual_seed(0)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = make_data()
    reference = record_reference(model, opt, data)
    quantities = ["theta_minus_grad", "update", sign_grad(), relative_grad(), relative_update()]
    options = {"quantities": quantities, "statistics": [beyond_two_sd()]}
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, **options) as probe:
        grouped = bool(probe._groups)
        for x, y in data:
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    if make_model is Stack:
        assert grouped, "the Stack model must exercise the grouped strategy"
    run = gp.load_run(tmp_path / "r")
    assert not probe.errors
    stats = run.stats
    assert set(stats["quantity"]) == {
        "theta_minus_grad",
        "update",
        "sign_grad",
        "relative_grad",
        "relative_update",
    }
    for step, tensors in enumerate(reference):
        for name, (theta, grad, theta_next) in tensors.items():
            rows = stats[(stats["step"] == step) & (stats["param"] == name)].set_index("quantity")
            assert_moments(rows.loc["sign_grad"], torch.sign(grad).numpy())
            assert_moments(rows.loc["relative_grad"], (grad / (theta.abs() + EPS)).numpy())
            assert_moments(rows.loc["relative_update"], ((theta_next - theta) / (theta.abs() + EPS)).numpy())
            if theta.numel() >= 20:  # tested=True: the battery and the user statistic ran
                assert np.isfinite(rows.loc["relative_grad", "shapiro_p"])
                relative = (grad / (theta.abs() + EPS)).numpy()
                assert rows.loc["relative_grad", "beyond_2sd"] == pytest.approx(
                    expected_beyond_two_sd(relative)
                )
                x = (theta - grad).numpy()
                assert rows.loc["theta_minus_grad", "beyond_2sd"] == pytest.approx(expected_beyond_two_sd(x))
            assert np.isnan(rows.loc["sign_grad", "beyond_2sd"])  # not tested: no statistics
            assert rows.loc["sign_grad", "verdict"] == "not tested"
            sample = run.sample(step, name, "sign_grad")
            assert set(np.unique(sample)) <= {-1.0, 0.0, 1.0}
    assert run.meta["capture"]["quantities"][-3:] == ["sign_grad", "relative_grad", "relative_update"]
    assert run.meta["capture"]["statistics"] == ["beyond_2sd"]


def test_a_quantity_with_its_own_schedule_and_a_failing_one(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sparse = gp.Quantity("theta_sq", lambda i: i.theta**2, needs_grad=False, schedule=gp.explicit([1]))
    broken = gp.Quantity("broken", lambda i: i.theta[:2])  # wrong size: recorded, training continues
    with pytest.warns(RuntimeWarning, match="broken"):
        with gp.attach(
            model, opt, run_dir=tmp_path / "r", every=2, quantities=["grad", sparse, broken]
        ) as probe:
            for x, y in batches(4):
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
    stats = gp.load_run(tmp_path / "r").stats
    assert sorted(stats[stats["quantity"] == "theta_sq"]["step"].unique()) == [1]
    assert sorted(stats[stats["quantity"] == "grad"]["step"].unique()) == [0, 2]
    assert "broken" not in set(stats["quantity"])
    assert any("returned 2 values" in e["error"] for e in probe.errors)


def test_bad_quantities_are_refused_naming_them(tmp_path):
    with pytest.raises(ValueError, match="built-in"):
        gp.attach(TinyNet(), run_dir=tmp_path / "a", quantities=[gp.Quantity("grad", lambda i: i.grad)])
    with pytest.raises(ValueError, match="phase"):
        gp.Quantity("q", lambda i: i.grad, phase="sideways")
    with pytest.raises(ValueError, match="twice"):
        gp.attach(TinyNet(), run_dir=tmp_path / "b", quantities=["grad", "grad"])


def test_backward_quantity_sees_each_micro_batch(tmp_path):
    model = TinyNet()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    micro = batches(6, batch=8)
    contributions = []  # per step, per micro-batch: the gradient of that micro-batch alone
    for k in range(2):
        per_micro = []
        for x, y in micro[3 * k : 3 * k + 3]:
            reference.zero_grad()
            nn.functional.cross_entropy(reference(x), y).backward()
            per_micro.append({n: p.grad.double().clone() for n, p in reference.named_parameters()})
        contributions.append(per_micro)
        with torch.no_grad():  # the same SGD step the probed model takes
            for n, p in reference.named_parameters():
                p -= 0.1 * sum(c[n] for c in per_micro).float()
    micro_grad = gp.Quantity("micro_grad", lambda i: i.grad, phase="backward")
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, quantities=["grad", micro_grad]):
        for k in range(2):
            for x, y in micro[3 * k : 3 * k + 3]:
                nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    stats = gp.load_run(tmp_path / "r").stats
    rows = stats[stats["quantity"] == "micro_grad"]
    assert len(rows) == 2 * 3 * 4
    for k, per_micro in enumerate(contributions):
        for m, grads in enumerate(per_micro):
            for name, grad in grads.items():
                row = rows[(rows["step"] == k) & (rows["param"] == name) & (rows["micro_batch"] == m)]
                assert len(row) == 1  # the contribution is a float32 difference of running sums
                assert_moments(row.iloc[0], grad.numpy(), mean_tol=1e-5)
        total = stats[(stats["quantity"] == "grad") & (stats["step"] == k) & (stats["param"] == "fc1.weight")]
        assert_moments(total.iloc[0], sum(g["fc1.weight"] for g in per_micro).numpy())


def _train_with_hooks(model, opt, data, run_dir, **options):
    with gp.attach(model, opt, run_dir=run_dir, every=1, **options):
        for x, y in data:
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()


def test_begin_and_end_step_give_the_rows_of_the_hooks(tmp_path):
    torch.manual_seed(1)
    model = TinyNet()
    twin = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05)
    data = batches(3)
    _train_with_hooks(model, opt, data, tmp_path / "hooks", tracers=8)
    with gp.attach(twin, twin_opt, run_dir=tmp_path / "manual", every=1, tracers=8, hooks=False) as probe:
        for step, (x, y) in enumerate(data):
            nn.functional.cross_entropy(twin(x), y).backward()
            probe.begin_step(global_step=100 + step)
            twin_opt.step()
            probe.end_step()
            twin_opt.zero_grad()
        with pytest.raises(gp.ProbeError, match="without begin_step"):
            probe.end_step()
    hooks, manual = gp.load_run(tmp_path / "hooks"), gp.load_run(tmp_path / "manual")
    key = ["step", "param", "quantity"]
    a = hooks.stats.sort_values(key).reset_index(drop=True)
    b = manual.stats.sort_values(key).reset_index(drop=True)
    numeric = [c for c in a.columns if a[c].dtype.kind == "f" and c != "global_step"]
    assert (b["global_step"] == 100 + b["step"]).all() and a["global_step"].isna().all()
    np.testing.assert_allclose(a[numeric].to_numpy(), b[numeric].to_numpy(), rtol=0, atol=0, equal_nan=True)
    assert (a[key] == b[key]).all().all()
    assert len(manual.trajectories) == len(hooks.trajectories)
    assert manual.meta["capture"]["mode"] == "manual"


def test_closure_optimizer_captures_the_gradient_at_theta_t(tmp_path):
    model = TinyNet()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    x, y = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    expected = []
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1) as probe:
        for _ in range(3):
            reference = copy.deepcopy(model)
            nn.functional.cross_entropy(reference(x), y).backward()
            expected.append(reference.fc1.weight.grad.double().numpy())
            opt.step(closure)
    assert probe.step == 3 and not probe.errors
    stats = gp.load_run(tmp_path / "r").stats
    rows = stats[(stats["quantity"] == "grad") & (stats["param"] == "fc1.weight")].sort_values("step")
    assert list(rows["step"]) == [0, 1, 2]
    for (_, row), grad in zip(rows.iterrows(), expected, strict=True):
        assert_moments(row, grad)


def test_fused_adam_under_grad_scaler_records_the_unscaled_gradient_and_skips_inf_steps(tmp_path):
    model = TinyNet()
    reference = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-3, fused=True)
    scaler, ref_scaler = (
        torch.amp.GradScaler("cpu", init_scale=2.0**16),
        torch.amp.GradScaler("cpu", init_scale=2.0**16),
    )
    data = batches(4)
    expected = []  # the true (unscaled) gradient of every step the optimizer takes
    for i, (x, y) in enumerate(data):
        loss = nn.functional.cross_entropy(reference(x), y) * (float("inf") if i == 1 else 1.0)
        ref_scaler.scale(loss).backward()
        if i != 1:
            expected.append(reference.fc1.weight.grad.double().numpy() / ref_scaler.get_scale())
        ref_scaler.step(ref_opt)
        ref_scaler.update()
        ref_opt.zero_grad()
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1) as probe:
        for i, (x, y) in enumerate(data):
            loss = nn.functional.cross_entropy(model(x), y) * (float("inf") if i == 1 else 1.0)
            scaler.scale(loss).backward()
            scaler.step(opt)  # fused: the scaler hands grad_scale/found_inf to the optimizer
            scaler.update()
            opt.zero_grad()
    assert probe.step == 3  # the skipped step is neither captured nor counted
    run = gp.load_run(tmp_path / "r")
    assert run.meta["scaler_skipped_steps"] == 1
    rows = run.stats[(run.stats["quantity"] == "grad") & (run.stats["param"] == "fc1.weight")].sort_values(
        "step"
    )
    assert list(rows["step"]) == [0, 1, 2]
    for (_, row), grad in zip(rows.iterrows(), expected, strict=True):
        assert_moments(row, grad, mean_tol=1e-5)


def test_framework_step_is_recorded_on_every_row(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, hooks=False) as probe:
        for i, (x, y) in enumerate(batches(3)):
            nn.functional.cross_entropy(model(x), y).backward()
            probe.begin_step(global_step=1000 + 2 * i)
            opt.step()
            probe.end_step()
            opt.zero_grad()
    stats = gp.load_run(tmp_path / "r").stats
    assert (stats["global_step"] == 1000 + 2 * stats["step"]).all()


@pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"
)  # torch's own
def test_compiled_optimizer_step_never_traces_the_probe(tmp_path):
    torch.manual_seed(2)
    model = TinyNet()
    twin = copy.deepcopy(model)
    opt, twin_opt = (torch.optim.Adam(m.parameters(), lr=1e-3) for m in (model, twin))
    data = batches(3)
    _train_with_hooks(twin, twin_opt, data, tmp_path / "eager")
    compiled_step = torch.compile(opt.step, backend="eager")  # Dynamo traces the step and its hooks
    with gp.attach(model, opt, run_dir=tmp_path / "compiled", every=1) as probe:
        for x, y in data:
            nn.functional.cross_entropy(model(x), y).backward()
            compiled_step()
            opt.zero_grad()
    assert not probe.errors
    key = ["step", "param", "quantity"]
    a = gp.load_run(tmp_path / "eager").stats.sort_values(key).reset_index(drop=True)
    b = gp.load_run(tmp_path / "compiled").stats.sort_values(key).reset_index(drop=True)
    assert len(b) == 3 * 4 * 4 and (a[key] == b[key]).all().all()
    same_inputs = (b["quantity"] != "update") & (b["step"] == 0)  # θ, g, X at step 0: the same tensors
    np.testing.assert_allclose(b["std"][same_inputs], a["std"][same_inputs], rtol=1e-9)
    np.testing.assert_allclose(
        b["std"], a["std"], rtol=1e-4
    )  # the compiled Adam rounds its update differently


class WrappedOptimizer(torch.optim.Optimizer):
    """Shaped like accelerate's AcceleratedOptimizer: an Optimizer subclass that skips Optimizer.__init__."""

    def __init__(self, optimizer):
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def step(self, closure=None):
        return self.optimizer.step(closure)

    def zero_grad(self, set_to_none=True):
        self.optimizer.zero_grad(set_to_none)


def test_optimizer_wrappers_are_unwrapped_and_recorded(tmp_path):
    model = TinyNet()
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapped = WrappedOptimizer(inner)
    with gp.attach(model, wrapped, run_dir=tmp_path / "r", every=1) as probe:
        for x, y in batches(2):
            nn.functional.cross_entropy(model(x), y).backward()
            wrapped.step()
            wrapped.zero_grad()
    assert probe.step == 2 and probe.optimizer is inner
    run = gp.load_run(tmp_path / "r")
    assert run.meta["capture"]["optimizer_wrappers"] == ["WrappedOptimizer"]
    assert sorted(run.stats["step"].unique()) == [0, 1]


class TwoPart(nn.Module):
    """A generator/discriminator-like pair trained by two optimizers."""

    def __init__(self):
        super().__init__()
        self.gen = nn.Linear(6, 8)
        self.disc = nn.Linear(8, 3)

    def forward(self, x):
        return self.disc(torch.tanh(self.gen(x)))


def test_several_optimizers_each_capture_their_own_tensors(tmp_path):
    torch.manual_seed(3)
    model = TwoPart()
    reference = copy.deepcopy(model)
    opt_g, opt_d = (
        torch.optim.Adam(model.gen.parameters(), lr=1e-3),
        torch.optim.SGD(model.disc.parameters(), lr=0.1),
    )
    ref_g, ref_d = (
        torch.optim.Adam(reference.gen.parameters(), lr=1e-3),
        torch.optim.SGD(reference.disc.parameters(), lr=0.1),
    )
    data = batches(3, d_in=6)
    expected = []
    for x, y in data:
        nn.functional.cross_entropy(reference(x), y).backward()
        expected.append({n: p.grad.double().clone() for n, p in reference.named_parameters()})
        ref_d.step()
        ref_g.step()
        ref_g.zero_grad()
        ref_d.zero_grad()
    with gp.attach(model, [opt_g, opt_d], run_dir=tmp_path / "r", every=1) as probe:
        for x, y in data:
            nn.functional.cross_entropy(model(x), y).backward()
            opt_d.step()  # each optimizer's step captures its own tensors, under its own step count
            opt_g.step()
            opt_g.zero_grad()
            opt_d.zero_grad()
    assert probe.step == 3 and not probe.errors
    run = gp.load_run(tmp_path / "r")
    assert run.meta["capture"]["optimizer_of"] == {
        "gen.weight": 0,
        "gen.bias": 0,
        "disc.weight": 1,
        "disc.bias": 1,
    }
    assert [o["class"] for o in run.meta["optimizers"]] == ["Adam", "SGD"]
    grads = run.stats[run.stats["quantity"] == "grad"]
    assert len(grads) == 3 * 4
    for step, tensors in enumerate(expected):
        for name, grad in tensors.items():
            row = grads[(grads["step"] == step) & (grads["param"] == name)].iloc[0]
            assert_moments(row, grad.numpy())
            assert row["lr"] == pytest.approx(1e-3 if name.startswith("gen") else 0.1)
