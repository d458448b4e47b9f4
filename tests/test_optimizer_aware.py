"""OU and shadow analyses that know the optimizer: per-step lr, no k = α reasoning for Adam (issue 14, 8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.cli import main
from goup_probe.report.data import OptionalTable
from goup_probe.report.sections.summary import analysis_sentences
from goup_probe.update_rule import ADAPTIVE, PLAIN, ou_rule, update_rule

STEPS = 300
EVERY = 25
"""Statistics capture of the SGD run: 12 captured steps, each at its own scheduled lr."""
TRACERS = 32


def _train(tmp_path, make_opt, make_sched, every):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 12, generator=g), torch.randint(0, 3, (128,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 3))
    opt = make_opt(model.parameters())
    sched = make_sched(opt)
    lrs = []
    with gp.attach(model, opt, run_dir=tmp_path, every=every, tracers=TRACERS, keep_samples=0):
        for _ in range(STEPS):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
    return gp.load_run(tmp_path), np.asarray(lrs)


def _no_fidelity():
    empty = OptionalTable(None, "none")
    return {"curves": empty, "layers": empty, "summary": empty}


@pytest.fixture(scope="module")
def adamw_onecycle(tmp_path_factory):
    return _train(
        tmp_path_factory.mktemp("adamw"),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=1e-2, total_steps=STEPS),
        every=STEPS,  # the OU analysis needs the tracers (every step), not the statistics
    )


def test_adamw_onecycle_findings_carry_the_caveat_and_the_effective_step(adamw_onecycle, capsys):
    run, lrs = adamw_onecycle
    assert lrs.max() / lrs.min() > 20  # the schedule spans more than 20×
    ou = gp.validate_ou(run)
    rule = ou_rule(run.meta, ou)
    assert rule.kind == ADAPTIVE and rule.optimizer == "AdamW"
    (line,) = [s for s in analysis_sentences(OptionalTable(ou, ""), _no_fidelity(), run.meta) if "OU" in s]
    assert "does not apply" in line and "effective step size ‖Δθ‖/‖g‖" in line
    assert "the seed's derivation assumes 1" not in line
    # the effective step, independently: median over steps of ‖Δθ‖/‖g‖ on the tracer coordinates
    traj = run.table("trajectories").sort_values("step")
    for param, rows in traj.groupby("param"):
        theta, grad, nxt = (
            np.stack(rows[c].to_numpy()).astype(np.float64) for c in ("theta", "grad", "theta_next")
        )
        ratio = np.linalg.norm(nxt - theta, axis=1) / np.linalg.norm(grad, axis=1)
        row = ou.set_index("param").loc[param]
        assert row["eff_step"] == pytest.approx(np.median(ratio), rel=1e-6)
        assert row["eff_step_over_lr"] == pytest.approx(np.median(ratio / rows["lr"].to_numpy()), rel=1e-6)
        assert row["k_over_eff_step"] == pytest.approx(row["k_pooled"] / np.median(ratio), rel=1e-9)
    effective = f"{np.median(ou['eff_step']):.3g}"
    assert effective in line
    assert main(["ou", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "does not apply" in out and effective in out and "assumes 1" not in out


def test_an_sgd_step_schedule_uses_each_steps_lr(tmp_path):
    run, lrs = _train(
        tmp_path,
        lambda p: torch.optim.SGD(p, lr=0.2),
        lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=100, gamma=0.2),
        every=EVERY,
    )
    assert sorted(set(np.round(lrs, 12))) == [0.008, 0.04, 0.2]
    upd = run.stats[run.stats["quantity"] == schema.UPDATE]
    for _, rows in upd.groupby("param"):
        rows = rows.sort_values("step")
        assert np.allclose(rows["lr"].to_numpy(), lrs[rows["step"].to_numpy()])
    assert np.allclose(upd["goup_cosine"], 1.0, atol=1e-5)  # Δ = −α_t g at every step
    traj = run.table("trajectories").sort_values("step")
    ou = gp.validate_ou(run).set_index("param")
    assert update_rule(run.meta).kind == PLAIN
    for param, rows in traj.groupby("param"):
        assert np.allclose(rows["lr"].to_numpy(), lrs)
        theta = np.stack(rows["theta"].to_numpy()).astype(np.float64)
        weights = ((theta - theta.mean(axis=0)) ** 2).sum(axis=1)
        row = ou.loc[param]
        # α as the pooled fit weighs each step's own lr (independently; not the schedule's median 0.04)
        assert row["lr"] == pytest.approx(float((lrs * weights).sum() / weights.sum()), rel=1e-6)
        assert (row["lr_min"], row["lr_max"]) == pytest.approx((0.008, 0.2))
        assert row["k_over_lr"] == pytest.approx(row["k_pooled"] / row["lr"], rel=1e-9)
        assert row["eff_step_over_lr"] == pytest.approx(1.0, rel=1e-4)
        assert row["sgd_identity_err"] < 1e-4  # per-step lr: Δθ = −α_t g exactly
    (line,) = [
        s
        for s in analysis_sentences(OptionalTable(ou.reset_index(), ""), _no_fidelity(), run.meta)
        if "OU" in s
    ]
    assert "the seed's derivation assumes 1" in line and "does not apply" not in line


def test_update_rule_from_the_class_or_the_measurement():
    def meta(name, **group):
        return {"optimizer": {"class": name, "param_groups": [group]}}

    assert update_rule(meta("Adam")).adaptive and update_rule(meta("RMSprop")).adaptive
    assert update_rule(meta("SGD", momentum=0.9)).adaptive
    assert not update_rule(meta("SGD", momentum=0.0)).adaptive and not update_rule(meta("GOUP")).adaptive
    assert update_rule(meta("MyOpt"), effective_over_lr=3.0).adaptive
    assert not update_rule(meta("MyOpt"), effective_over_lr=1.01).adaptive
    assert update_rule(None, cosine=0.3).adaptive and update_rule(None).kind == "unknown"


def test_the_report_says_what_alpha_means_in_the_ou_and_shadow_sections(adamw_onecycle, tmp_path):
    from goup_probe.report import report

    run, _ = adamw_onecycle
    html = report(run, tmp_path / "report", per_side=1, dpi=40).index.read_text()
    ou_part = html[html.index("Ornstein–Uhlenbeck model") :]
    shadow_part = html[html.index("One-step (shadow) fidelity") :]
    assert "k = α derivation does not apply" in ou_part and "effective step size" in ou_part
    assert "AdamW&#x27;s update is not −αg" in shadow_part or "AdamW's update is not −αg" in shadow_part
    assert (
        "the seed&#x27;s derivation assumes 1" not in html and "the seed's derivation assumes 1" not in html
    )
