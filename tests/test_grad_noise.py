"""In-run micro-batch gradient noise: quantity grad_noise, its noise table, report section and CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.cli import main
from goup_probe.noise.inrun import noise_layers

K = 4
MICRO = 16


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 24), nn.Tanh(), nn.Linear(24, 3))


def _batches(step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1000 + step)
    return [
        (torch.randn(MICRO, 10, generator=g), torch.randint(0, 3, (MICRO,), generator=g)) for _ in range(K)
    ]


def _train(run_dir, quantities, steps=3, k=K, reference=None):
    """Train the MLP with accumulation k; ``reference(step, model)`` is called before each step's passes."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = gp.attach(model, opt, run_dir=run_dir, every=1, quantities=quantities, tracers=0)
    for step in range(steps):
        opt.zero_grad()
        if reference is not None:
            reference(step, model)
        for x, y in _batches(step)[:k]:
            (nn.functional.cross_entropy(model(x), y) / k).backward()
        opt.step()
    note = probe._dispatchers[0].micro.noise_note if probe._dispatchers[0].micro else None
    probe.detach()
    return gp.load_run(run_dir), note


def test_moments_match_each_micro_batch_backward_run_separately(tmp_path):
    expected = []

    def reference(step, model):  # each micro-batch's own gradient, on a copy of the model
        copy = _mlp()
        copy.load_state_dict(model.state_dict())
        grads = []
        for x, y in _batches(step):
            loss = nn.functional.cross_entropy(copy(x), y)
            grads.append(
                [g.detach().double().reshape(-1) for g in torch.autograd.grad(loss, list(copy.parameters()))]
            )
        for t, (name, _) in enumerate(copy.named_parameters()):
            g = torch.stack([gr[t] for gr in grads])
            xi = (g - g.mean(0)).numpy()
            for i in range(K):
                v = xi[i]
                z = (v - v.mean()) / v.std()
                expected.append(
                    {
                        "step": step,
                        "param": name,
                        "micro_batch": i,
                        "e_mean": v.mean(),
                        "e_std": v.std(),
                        "e_skew": (z**3).mean(),
                        "e_kurt": (z**4).mean() - 3,
                    }
                )

    run, _ = _train(tmp_path / "r", [schema.THETA_MINUS_GRAD, schema.GRAD_NOISE], reference=reference)
    rows = run.stats[run.stats.quantity == schema.GRAD_NOISE]
    assert len(rows) == 3 * 4 * K
    both = rows.merge(pd.DataFrame(expected), on=["step", "param", "micro_batch"], validate="one_to_one")
    assert len(both) == len(rows)
    assert (np.abs(both["mean"] - both["e_mean"]) / both["e_std"]).max() <= 1e-5
    assert (np.abs(both["std"] / both["e_std"] - 1)).max() <= 1e-5
    assert np.allclose(both["skew"], both["e_skew"], atol=1e-4)
    assert np.allclose(both["excess_kurtosis"], both["e_kurt"], atol=1e-4)
    assert both["verdict"].notna().all()  # the battery ran on every micro-batch row
    noise = run.table(schema.NOISE)
    assert len(noise) == 3 * 4 and (noise["n_micro"] == K).all()


def test_trace_sigma_of_linear_regression_within_ten_percent(tmp_path):
    # y = w*·x + ε with x ~ N(0, I_d), ε ~ N(0, s²); at w = w* the per-sample gradient of ½(w·x − y)²
    # is −ε x: mean 0, covariance s² I_d, so tr Σ = s² d. One micro-batch of B samples: tr Σ / B.
    d, b, s, steps = 50, 8, 0.5, 60
    torch.manual_seed(3)
    w_star = torch.randn(1, d)
    model = nn.Linear(d, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w_star)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # θ stays at w*
    probe = gp.attach(
        model, opt, run_dir=tmp_path / "lr", every=1, quantities=["grad", "grad_noise"], tracers=0
    )
    for _ in range(steps):
        opt.zero_grad()
        for _ in range(K):
            x = torch.randn(b, d)
            y = x @ w_star.T + s * torch.randn(b, 1)
            (0.5 * ((model(x) - y) ** 2).mean() / K).backward()
        opt.step()
    probe.detach()
    noise = gp.load_run(tmp_path / "lr").table(schema.NOISE)
    assert len(noise) == steps  # 60 replications of k = 4 micro-batches
    per_sample = noise["trace_sigma"].mean() * b
    assert abs(per_sample / (s**2 * d) - 1) < 0.10
    assert np.isclose(noise["noise_var"].mean() * d, noise["trace_sigma"].mean())


def test_no_noise_rows_with_a_single_micro_batch(tmp_path, capsys):
    run, note = _train(tmp_path / "one", [schema.THETA_MINUS_GRAD, schema.GRAD_NOISE], k=1)
    assert (run.stats.quantity != schema.GRAD_NOISE).all()
    assert schema.NOISE not in run.tables
    assert note is not None and "1 micro-batch" in note
    assert run.meta["capture"]["grad_noise"] == note  # the reason reaches run.json
    assert main(["noise", str(tmp_path / "one")]) == 1
    err = capsys.readouterr().err
    assert "no captured step accumulated >= 2 micro-batches" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match="micro-batches"):
        noise_layers(run)


def test_off_by_default_and_other_rows_unchanged(tmp_path):
    plain, _ = _train(tmp_path / "plain", list(schema.QUANTITIES))
    noisy, _ = _train(tmp_path / "noisy", [*schema.QUANTITIES, schema.GRAD_NOISE])
    default, _ = _train(tmp_path / "default", schema.QUANTITIES)
    assert schema.GRAD_NOISE not in set(default.stats.quantity)
    assert schema.NOISE not in default.tables
    keys = ["step", "param", "quantity"]
    drop = ["global_step"]
    a = plain.stats.drop(columns=drop).sort_values(keys).reset_index(drop=True)
    b = noisy.stats[noisy.stats.quantity != schema.GRAD_NOISE].drop(columns=drop)
    pd.testing.assert_frame_equal(a, b.sort_values(keys).reset_index(drop=True))
    pd.testing.assert_frame_equal(
        a, default.stats.drop(columns=drop).sort_values(keys).reset_index(drop=True)
    )


def test_cli_and_report_section(tmp_path, capsys):
    run, _ = _train(tmp_path / "r", [schema.THETA_MINUS_GRAD, schema.GRAD_NOISE])
    assert main(["noise", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert name in out
    assert "B_simple" in out
    table = noise_layers(run)
    assert list(table["param"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    verdicts = table[
        [
            schema.VERDICT_GAUSSIAN,
            schema.VERDICT_CLOSE,
            schema.VERDICT_NON_GAUSSIAN,
            schema.VERDICT_INCONCLUSIVE,
        ]
    ].sum(axis=1)
    assert (verdicts <= 3 * K).all()
    noise = run.table(schema.NOISE)
    w = noise[noise.param == "0.weight"]
    assert np.isclose(table.loc[0, "b_simple"], w["trace_sigma"].sum() / w["grad_sq_norm"].sum())
    result = gp.report(tmp_path / "r", tmp_path / "rep", ou=False)
    html = result.index.read_text()
    assert "Gradient noise" in html and "B_simple over training" in html and "α 95% CI (last)" in html
    _train(tmp_path / "none", [schema.THETA_MINUS_GRAD])
    html = gp.report(tmp_path / "none", tmp_path / "rep2", ou=False).index.read_text()
    assert "quantities=[..., &#x27;grad_noise&#x27;]" in html or "quantities=[..., 'grad_noise']" in html
