"""goup_fit_p: the realised update tested against GO-UP's N(−αg, α²σ²I) (issue 14, item 7)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.capture.shadow import Snapshot, chi2_two_sided_p, goup_fit
from goup_probe.fidelity.shadow import shadow_summary
from goup_probe.report.sections.fidelity import fit_sentence, shadow_metrics

STEPS = 200
"""Captured steps per run; × 4 tensors = 800 tests (the replication count of the size check)."""
LR = 0.05


def _run(tmp_path, make_opt, steps=STEPS, keep=False):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 20, generator=g), torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.Tanh(), nn.Linear(16, 4))
    opt = make_opt(model.parameters())
    records = []
    with gp.attach(model, opt, run_dir=tmp_path, every=1, tracers=0, keep_samples=0):
        for _ in range(steps):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            before = {n: (p.detach().clone(), p.grad.detach().clone()) for n, p in model.named_parameters()}
            opt.step()
            if keep:
                now = dict(model.named_parameters())
                records.append({n: (*v, now[n].detach().clone()) for n, v in before.items()})
    return gp.load_run(tmp_path), records


def _updates(run):
    return run.stats[run.stats["quantity"] == schema.UPDATE]


def test_size_is_five_percent_when_the_optimizer_is_goup_itself(tmp_path):
    run, _ = _run(tmp_path, lambda p: gp.GOUP(p, lr=LR, generator=torch.Generator().manual_seed(3)))
    p = _updates(run)["goup_fit_p"].to_numpy(dtype=np.float64)
    assert p.size == 4 * STEPS and np.isfinite(p).all()
    size, se = float((p < 0.05).mean()), math.sqrt(0.05 * 0.95 / p.size)
    assert abs(size - 0.05) < 3 * se, (size, se)
    # at every level a: Bonferroni of two independent exact tests rejects with probability 1 − (1 − a/2)²
    for level in (0.01, 0.2, 0.5):
        expected = 1 - (1 - level / 2) ** 2
        share = float((p < level).mean())
        assert abs(share - expected) < 3 * math.sqrt(expected * (1 - expected) / p.size), (level, share)
    summary = shadow_summary(run)
    assert np.allclose(summary["goup_fit_rejected"].mean(), size)


@pytest.mark.parametrize(
    "make_opt",
    [lambda p: torch.optim.SGD(p, lr=LR), lambda p: torch.optim.Adam(p, lr=1e-3)],
    ids=["sgd", "adam"],
)
def test_power_is_one_under_sgd_and_adam(tmp_path, make_opt):
    run, _ = _run(tmp_path, make_opt, steps=50)
    p = _updates(run)["goup_fit_p"].to_numpy(dtype=np.float64)
    assert p.size == 4 * 50
    assert (p < 0.05).mean() == 1.0


def test_goup_fit_p_equals_an_independent_chi2_and_shapiro_computation(tmp_path):
    run, records = _run(
        tmp_path, lambda p: gp.GOUP(p, lr=LR, generator=torch.Generator().manual_seed(5)), 6, True
    )
    upd = _updates(run).set_index(["step", "param"])
    for step, rec in enumerate(records):
        for name, (theta, grad, theta_next) in rec.items():
            t, g, t1 = (v.double().flatten().numpy() for v in (theta, grad, theta_next))
            sigma = np.std(t - g, ddof=1)
            r = (t1 - t) + LR * g
            q = float(r @ r) / (LR * sigma) ** 2
            chi2_p = min(1.0, 2 * min(stats.chi2.cdf(q, t.size), stats.chi2.sf(q, t.size)))
            sw_p = stats.shapiro(r / (LR * sigma)).pvalue  # the subsample is the whole (small) tensor
            expected = min(1.0, 2 * min(chi2_p, sw_p))
            assert upd.loc[(step, name), "goup_fit_p"] == pytest.approx(expected, rel=1e-3, abs=1e-9)


def test_chi2_part_against_scipy_on_a_known_answer():
    rng = np.random.default_rng(0)
    n, alpha, sigma = 10_000, 0.1, 0.3
    g = rng.normal(size=n)
    delta = -alpha * g + alpha * sigma * rng.normal(size=n)
    x_std = sigma * math.sqrt((n - 1) / n)  # the population std the probe records
    snap = Snapshot(torch.zeros(1), alpha, float(np.linalg.norm(g)), 1.0, x_std, n, grad_sample=g[:500])
    fit = goup_fit(float(delta @ g), snap, float(np.linalg.norm(delta)), delta[:500])
    q = float(np.sum((delta + alpha * g) ** 2)) / (alpha * sigma) ** 2
    assert fit.chi2 == pytest.approx(q, rel=1e-9)
    assert fit.chi2_p == pytest.approx(2 * min(stats.chi2.cdf(q, n), stats.chi2.sf(q, n)), rel=1e-9)
    assert fit.coord_p == pytest.approx(stats.shapiro((delta + alpha * g)[:500] / (alpha * sigma)).pvalue)
    # Wilson–Hilferty: 14 standard errors out on either side; the median is p = 1
    assert chi2_two_sided_p(n * 1.2, n) < 1e-30 and chi2_two_sided_p(n * 0.8, n) < 1e-30
    assert chi2_two_sided_p(n * (1 - 2 / (9 * n)) ** 3, n) == pytest.approx(1.0, abs=1e-3)
    # plain SGD: the residual is zero, far in the lower tail
    sgd = goup_fit(float(-alpha * g @ g), snap, alpha * float(np.linalg.norm(g)), -alpha * g[:500])
    assert sgd.p < 1e-100


def test_an_old_run_with_goup_w2_rel_still_loads_and_reads_goup_fit_p_as_nan(tmp_path):
    _run(tmp_path, lambda p: torch.optim.SGD(p, lr=LR), steps=3)
    for part in sorted((tmp_path / "stats").glob("part-*.parquet")):
        table = pq.read_table(part)
        table = table.drop(["goup_fit_p"]).append_column("goup_w2_rel", table.column("noise_to_signal"))
        pq.write_table(table, part)
    old = gp.load_run(tmp_path)
    upd = _updates(old)
    assert len(upd) == 12 and upd["goup_fit_p"].isna().all() and upd["goup_w2_rel"].notna().all()
    assert [m for m, _ in shadow_metrics(upd)] == ["noise_to_signal", "goup_cosine"]
    assert fit_sentence(upd) == ""
    assert shadow_summary(old)["goup_fit_rejected"].isna().all()
    assert "goup_fit_p" in set(gp.load_run(tmp_path).table("stats", columns=["step", "goup_fit_p"]).columns)
