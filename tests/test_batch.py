"""Grouped reductions of same-size tensors equal the per-tensor path."""

import numpy as np
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe.capture import batch, sums
from goup_probe.capture import emit as emit_module
from goup_probe.capture import grouped as grouped_module
from goup_probe.capture import plan as plan_module
from goup_probe.capture import reduce as red

FIELDS = ("mean", "std", "skew", "excess_kurtosis", "min", "max")


def _assert_same(got, expected):
    np.testing.assert_array_equal(got.sample, expected.sample)
    assert got.sums.count == expected.sums.count
    for name in FIELDS:
        assert getattr(got.moments, name) == pytest.approx(getattr(expected.moments, name), rel=1e-12), name
    assert got.norm == pytest.approx(expected.norm, rel=1e-12, nan_ok=True)


def _members(n=4, numel=300, seed=0):
    gen = torch.Generator().manual_seed(seed)
    thetas = [torch.randn(numel, generator=gen) * 0.1 + i for i in range(n)]  # offsets: shifts matter
    grads = [torch.randn(numel, generator=gen).exp() * 1e-3 for _ in range(n)]  # skewed
    rng = np.random.default_rng(seed)
    index = torch.from_numpy(np.stack([np.sort(rng.choice(numel, 50, replace=False)) for _ in range(n)]))
    return thetas, grads, index


def test_group_components_and_update_equal_the_per_tensor_path():
    thetas, grads, index = _members()
    components, state = batch.reduce_group_components(thetas, grads, index)
    news = [t - 0.1 * g for t, g in zip(thetas, grads, strict=True)]
    updates = batch.reduce_group_update(news, state, index)
    for i, (t, g) in enumerate(zip(thetas, grads, strict=True)):
        alone = red.reduce_components(t, g, index[i])
        for got, expected in zip(
            (components[i].theta, components[i].grad, components[i].x),
            (alone.theta, alone.grad, alone.x),
            strict=True,
        ):
            _assert_same(got, expected)
        upd, dot = red.reduce_update(news[i], t, g, index[i])
        _assert_same(updates[i][0], upd)
        assert updates[i][1] == pytest.approx(dot, rel=1e-12)


@pytest.mark.parametrize("precision", ["fast", "float64"])
def test_float32_groups_agree_with_the_per_tensor_path(precision):
    thetas, grads, index = _members(n=3, numel=2 * sums.FAST_MIN_NUMEL, seed=1)
    components, state = batch.reduce_group_components(thetas, grads, index, precision=precision)
    assert state.theta.dtype == (torch.float32 if precision == "fast" else torch.float64)
    news = [t - 0.1 * g for t, g in zip(thetas, grads, strict=True)]
    updates = batch.reduce_group_update(news, state, index)
    rel = 1e-6 if precision == "fast" else 1e-12
    for i, (t, g) in enumerate(zip(thetas, grads, strict=True)):
        alone = red.reduce_components(t, g, index[i], precision=precision)
        upd, dot = red.reduce_update(news[i], t, g, index[i], precision=precision)
        pairs = zip(
            (components[i].theta, components[i].grad, components[i].x, updates[i][0]),
            (alone.theta, alone.grad, alone.x, upd),
            strict=True,
        )
        for got, expected in pairs:
            np.testing.assert_array_equal(got.sample, expected.sample)
            for name in FIELDS:
                # skewness and kurtosis are unitless: float32 sums keep them within 1e-5 (README)
                unitless = name in ("skew", "excess_kurtosis")
                abs_tol = (
                    (10 * rel if precision == "fast" else rel) if unitless else rel * expected.moments.std
                )
                assert getattr(got.moments, name) == pytest.approx(
                    getattr(expected.moments, name), rel=rel, abs=abs_tol
                ), name
        assert updates[i][1] == pytest.approx(dot, rel=rel)


def test_group_masks_nonfinite_values_outside_the_subsample_and_declines_inside_it():
    thetas, grads, index = _members()
    outside = next(j for j in range(300) if j not in set(index[1].tolist()))
    grads[1][outside] = float("nan")
    components, _ = batch.reduce_group_components(thetas, grads, index)
    assert components[1].grad.moments.nonfinite == 1
    _assert_same(components[1].grad, red.reduce_components(thetas[1], grads[1], index[1]).grad)
    grads[2][index[2][0]] = float("inf")
    assert batch.reduce_group_components(thetas, grads, index) is None


def test_group_key_excludes_large_sparse_single_and_integer_tensors():
    assert batch.group_key(torch.zeros(10)) == batch.group_key(torch.ones(10))
    assert batch.group_key(torch.zeros(10)) != batch.group_key(torch.zeros(10, dtype=torch.float64))
    assert batch.group_key(torch.zeros(batch.MAX_GROUP_NUMEL)) is not None
    assert batch.group_key(torch.zeros(batch.MAX_GROUP_NUMEL + 1)) is None
    assert batch.group_key(torch.zeros(1)) is None
    assert batch.group_key(torch.zeros(10, dtype=torch.int64)) is None


def test_groups_are_split_to_bound_their_temporaries():
    parts = batch.split_group(list(range(1000)), 1000)
    assert [len(p) for p in parts] == [262, 262, 262, 214]
    assert max(len(p) for p in parts) * 1000 <= batch.MAX_GROUP_ELEMENTS
    assert batch.split_group(["a", "b"], batch.MAX_GROUP_ELEMENTS * 2) == [["a"], ["b"]]


class Repeated(nn.Module):
    """Linear + BatchNorm blocks: 2 weights of 64, 6 vectors of 8 values, and one odd-sized head."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU()
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.body(x))


def _run(tmp_path, name, steps=3):
    torch.manual_seed(0)
    model = Repeated()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    with gp.attach(model, opt, run_dir=tmp_path / name, every=1) as probe:
        group_sizes = sorted(len(g.members) for g in probe._groups)
        for _ in range(steps):
            x, y = torch.randn(32, 8, generator=gen), torch.randint(0, 3, (32,), generator=gen)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    stats = gp.load_run(tmp_path / name).stats
    return group_sizes, stats.set_index(["step", "param", "quantity"]).sort_index()


def test_probe_rows_are_the_same_with_and_without_groups(tmp_path, monkeypatch):
    group_sizes, grouped = _run(tmp_path, "grouped")
    assert group_sizes == [2, 6]
    monkeypatch.setattr(plan_module, "MIN_GROUP", 10**9)
    group_sizes, alone = _run(tmp_path, "alone")
    assert group_sizes == []
    assert grouped.index.equals(alone.index)
    numeric = [c for c in grouped.columns if grouped[c].dtype.kind == "f"]
    np.testing.assert_allclose(grouped[numeric], alone[numeric], rtol=1e-9, atol=1e-12)
    assert (grouped["verdict"] == alone["verdict"]).all()


def test_a_failing_group_falls_back_to_each_member_and_is_recorded(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated grouped failure")

    monkeypatch.setattr(grouped_module, "reduce_group_components", broken)
    with pytest.warns(RuntimeWarning, match="grouped reduction"):
        _, stats = _run(tmp_path, "fallback", steps=2)
    monkeypatch.undo()
    _, reference = _run(tmp_path, "reference", steps=2)
    assert stats.index.equals(reference.index)  # every member still has all its rows
    np.testing.assert_allclose(stats["std"], reference["std"], rtol=1e-9)
    errors = gp.load_run(tmp_path / "fallback").meta["errors"]
    assert all(e["where"].startswith("grouped reduction (") and e["param"] is None for e in errors)
    assert {e["where"] for e in errors} == {
        "grouped reduction (body.0.weight, body.3.weight)",
        "grouped reduction (body.0.bias, body.1.weight, body.1.bias and 3 more)",
    }
    assert all("simulated grouped failure" in e["error"] for e in errors)


def test_a_failing_group_reraises_in_strict_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(grouped_module, "reduce_group_components", _raise)
    model = Repeated()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with (
        pytest.raises(RuntimeError, match="simulated"),
        gp.attach(model, opt, run_dir=tmp_path / "r", every=1, strict=True),
    ):
        nn.functional.cross_entropy(model(torch.randn(8, 8)), torch.randint(0, 3, (8,))).backward()
        opt.step()
    assert gp.load_run(tmp_path / "r").status == "failed"


def test_an_error_after_the_grouped_update_is_recorded_and_training_goes_on(tmp_path, monkeypatch):
    real = emit_module.shadow_from_dot
    calls = []

    def flaky(dot, snap, norm, *rest):
        calls.append(snap.numel)
        if snap.numel == 8:
            raise OverflowError("simulated shadow failure")
        return real(dot, snap, norm, *rest)

    monkeypatch.setattr(emit_module, "shadow_from_dot", flaky)
    with pytest.warns(RuntimeWarning, match="simulated shadow failure"):
        _, stats = _run(tmp_path, "shadow", steps=2)
    assert gp.load_run(tmp_path / "shadow").meta["steps"] == 2 and calls
    updates = stats.xs("update", level="quantity")
    assert set(updates.index.get_level_values("param")) == {
        "body.0.weight",
        "body.3.weight",
        "head.weight",
        "head.bias",
    }
    errors = gp.load_run(tmp_path / "shadow").meta["errors"]
    assert {e["where"] for e in errors} == {"after step"} and len(errors) == 2 * 6


def _raise(*args, **kwargs):
    raise RuntimeError("simulated grouped failure")
