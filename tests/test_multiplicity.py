"""Multiplicity and dependence: BH q-values per step, FDR under a global null, resampled subsamples.

Statistical tests name their replication count and take their tolerance from the binomial SE.
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import schema
from goup_probe.capture.config import ProbeConfig
from goup_probe.capture.plan import stable_seed, step_subsample_indices
from goup_probe.stats import normal_tests
from goup_probe.stats.multiplicity import add_q_values, bh_q_values, step_rejections
from goup_probe.summary import layer_summary


def _hand_bh(p):
    """Benjamini-Hochberg by its definition: q_i = min over p_j >= p_i of m p_j / rank(p_j), capped at 1."""
    m = len(p)
    ranks = {i: sum(pj < p[i] or (pj == p[i] and j <= i) for j, pj in enumerate(p)) for i in range(m)}
    return [min(1.0, min(m * p[j] / ranks[j] for j in range(m) if p[j] >= p[i])) for i in range(m)]


def test_bh_q_values_equal_statsmodels_and_a_hand_computation():
    p = np.random.default_rng(3).uniform(size=60) ** 3
    p[[4, 9]] = p[2]  # ties
    q = bh_q_values(p)
    np.testing.assert_allclose(q, _hand_bh(list(p)), rtol=1e-12)
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    np.testing.assert_allclose(q, multitest.multipletests(p, method="fdr_bh")[1], rtol=1e-12)


def test_bh_leaves_nan_out_of_the_family_and_refuses_p_outside_0_1():
    q = bh_q_values([0.01, np.nan, 0.04])
    np.testing.assert_allclose(q[[0, 2]], [0.02, 0.04])
    assert math.isnan(q[1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        bh_q_values([0.5, 1.5])


def _stats_rows(step, ps, quantity=schema.THETA_MINUS_GRAD, status="ok"):
    return pd.DataFrame(
        {
            "step": step,
            "param": [f"layer{i}.weight" for i in range(len(ps))],
            "quantity": quantity,
            "axis": schema.AXIS_POOLED,
            "micro_batch": pd.array([None] * len(ps), dtype="Int64"),
            "status": status,
            "shapiro_p": ps,
        }
    )


def test_add_q_values_corrects_each_step_and_quantity_separately_and_skips_untested_rows():
    a = _stats_rows(0, [0.01, 0.04, 0.3, 0.6])
    b = _stats_rows(1, [0.01, 0.02, 0.03, 0.04])
    c = _stats_rows(0, [0.001, 0.9, 0.5, 0.2], quantity=schema.THETA)
    d = _stats_rows(1, [np.nan, 0.0], status=schema.STATUS_CONSTANT)  # untested: no q, not in the family
    stats = pd.concat([b, c, d, a], ignore_index=True)
    out = add_q_values(stats)
    assert list(out.index) == list(stats.index) and "q_value" not in stats.columns
    for frame in (a, b, c):
        rows = out[(out["step"] == frame["step"][0]) & (out["quantity"] == frame["quantity"][0])]
        rows = rows[rows["status"] == "ok"]
        np.testing.assert_allclose(rows["q_value"], _hand_bh(list(frame["shapiro_p"])), rtol=1e-12)
    assert out[out["status"] == schema.STATUS_CONSTANT]["q_value"].isna().all()
    counts = step_rejections(out, 0.05)
    assert counts.to_dict("list") == {
        "step": [0, 1],
        "tested": [4, 4],
        "rejected": [2, 4],  # p < 0.05
        "rejected_fdr": [1, 4],  # q < 0.05: step 0's q are 0.04, 0.08, 0.4, 0.6
    }


def test_layer_summary_counts_rejections_at_fdr_alpha():
    stats = pd.concat([_stats_rows(0, [0.01, 0.04, 0.3, 0.6]), _stats_rows(1, [0.01, 0.02, 0.03, 0.04])])
    stats = stats.assign(
        numel=100,
        n_tested=100,
        verdict=np.where(stats["shapiro_p"] < 0.05, schema.VERDICT_NON_GAUSSIAN, schema.VERDICT_GAUSSIAN),
        excess_kurtosis=0.0,
        skew=0.0,
        w1_sigma=0.01,
        grad_to_param=0.1,
    )
    summary = layer_summary(stats).set_index("param")
    # layer1: rejected at p = 0.04 and 0.02, but at FDR 5% only at step 1 (q = 0.08 at step 0)
    assert summary["rejected_fdr_share"].to_dict() == {
        "layer0.weight": 1.0,
        "layer1.weight": 0.5,
        "layer2.weight": 0.5,
        "layer3.weight": 0.5,
    }
    strict = layer_summary(stats, meta={"capture": {"thresholds": {"alpha": 0.01}}}).set_index("param")
    assert strict["rejected_fdr_share"].to_dict()["layer0.weight"] == 0.0  # q = 0.04 at both steps


def test_fdr_under_a_global_null_with_200_tensors_is_controlled():
    """400 steps of 200 normal tensors (n = 64 each): FDR = P(any rejection) <= 0.05 + 3 SE."""
    reps, tensors, n = 400, 200, 64
    rng = np.random.default_rng(20240614)
    frames, raw_any = [], 0
    for step in range(reps):
        z = normal_tests.standardise(rng.standard_normal((tensors, n)))
        p = normal_tests.shapiro_wilk(z, np.sort(z, axis=1))[1]  # the verdict's test, as the battery runs it
        raw_any += bool((p < 0.05).any())
        frames.append(_stats_rows(step, p))
    counts = step_rejections(add_q_values(pd.concat(frames, ignore_index=True)), 0.05)
    fdr = float((counts["rejected_fdr"] > 0).mean())  # under the global null every rejection is false
    se = math.sqrt(0.05 * 0.95 / reps)
    assert fdr <= 0.05 + 3 * se
    assert raw_any / reps > 0.99  # uncorrected: nearly every step flags some normal tensor


@pytest.mark.parametrize("n", [20, 50])
def test_lilliefors_size_at_5_percent_is_calibrated_at_small_n(n):
    """40000 normal samples per n; tolerance 3 SE, SE from the replications and the null's own draws."""
    reps = 40_000
    x = np.random.default_rng(777 + n).standard_normal((reps, n))
    d = normal_tests.lilliefors_statistic(np.sort(x, axis=1))
    size = float((normal_tests.lilliefors_p(d, n) <= 0.05).mean())
    draws = normal_tests.lilliefors_null_draws(n)
    assert draws >= 20_000
    se = math.sqrt(0.05 * 0.95 / reps + 0.05 * 0.95 / draws)
    assert abs(size - 0.05) <= 3 * se


def test_lilliefors_beyond_the_simulated_range_is_dallal_wilkinson_below_the_floor():
    x = np.random.default_rng(5).laplace(size=5000)
    ordered = np.sort((x - x.mean()) / x.std())[None, :]
    d = normal_tests.lilliefors_statistic(ordered)
    p, floor = normal_tests.lilliefors_p_and_floor(d, 5000)
    assert floor == 1 / (normal_tests.lilliefors_null(5000).size + 1)
    assert d[0] > normal_tests.lilliefors_null(5000)[-1]  # no null draw is as extreme
    diagnostic = pytest.importorskip("statsmodels.stats.diagnostic")
    _, approx = diagnostic.lilliefors(x, dist="norm", pvalmethod="approx")
    assert p[0] == pytest.approx(approx, rel=1e-6) and p[0] < 1e-8 < floor
    result = gp.normality(x)
    assert result.lilliefors_p == pytest.approx(approx, rel=1e-6)
    assert result.lilliefors_p_floor == pytest.approx(floor)


def test_step_subsample_indices_differ_per_step_and_repeat_for_the_same_seed_and_step():
    a = step_subsample_indices(3, "fc.weight", 10_000, 500, 7)
    assert np.array_equal(a, step_subsample_indices(3, "fc.weight", 10_000, 500, 7))
    assert len(np.unique(a)) == 500 and np.all(np.diff(a) > 0)
    for other in (
        step_subsample_indices(3, "fc.weight", 10_000, 500, 8),
        step_subsample_indices(4, "fc.weight", 10_000, 500, 7),
    ):
        assert len(np.intersect1d(a, other)) < 100  # about 500 * 500 / 10000 = 25 in common by chance
    assert np.array_equal(step_subsample_indices(3, "b", 300, 500, 9), np.arange(300))


def _run(tmp_path, name, resample, steps=3, seed=0):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 80), nn.ReLU(), nn.Linear(80, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    thetas = []
    with gp.attach(
        model,
        opt,
        run_dir=tmp_path / name,
        every=1,
        layers="0.weight",
        sample_size=500,
        keep_samples=500,
        keep_sample_steps=None,
        tracers=0,
        seed=seed,
        resample=resample,
    ):
        for _ in range(steps):
            thetas.append(model[0].weight.detach().flatten().numpy().copy())
            model(torch.randn(4, 100)).sum().backward()
            opt.step()
            opt.zero_grad()
    return gp.load_run(tmp_path / name), thetas


def test_resample_step_tests_fresh_indices_per_step_seeded_by_seed_tensor_step(tmp_path):
    run, thetas = _run(tmp_path, "step", "step")
    for step, theta in enumerate(thetas):
        index = step_subsample_indices(0, "0.weight", 8000, 500, step)
        np.testing.assert_array_equal(
            run.sample(step, "0.weight", schema.THETA), theta[index].astype(np.float32)
        )
    again, _ = _run(tmp_path, "again", "step")
    for step in range(3):
        np.testing.assert_array_equal(
            again.sample(step, "0.weight", schema.THETA), run.sample(step, "0.weight", schema.THETA)
        )
    assert again.meta["capture"]["resample"] == "step"


def test_resample_fixed_is_the_default_and_tests_the_same_indices_at_every_step(tmp_path):
    run, thetas = _run(tmp_path, "fixed", "fixed")
    rng = np.random.default_rng(stable_seed(0, "0.weight"))
    index = np.sort(rng.choice(8000, size=500, replace=False))
    for step, theta in enumerate(thetas):
        np.testing.assert_array_equal(
            run.sample(step, "0.weight", schema.THETA), theta[index].astype(np.float32)
        )
    assert ProbeConfig.from_options().resample == "fixed"
    with pytest.raises(ValueError, match="resample must be one of"):
        ProbeConfig.from_options(resample="always")


def test_report_findings_state_raw_and_fdr_rejection_counts_of_the_last_step(tmp_path):
    """The findings' counts at the last step equal a hand count of p < α and of BH (q < α) on that step."""
    from goup_probe.report.findings import compute_findings
    from tests.report_synth import synthetic_run

    run = gp.load_run(synthetic_run(tmp_path / "run", n_params=12, steps=[0, 10, 20], full_tests=True))
    stats = run.stats
    last = stats[(stats["step"] == 20) & (stats["quantity"] == "theta_minus_grad")]
    p = np.sort(last.loc[last["status"].isin(["ok", "nonfinite_excluded"]), "shapiro_p"].dropna().to_numpy())
    m = len(p)
    below = np.nonzero(p <= 0.05 * np.arange(1, m + 1) / m)[0]  # BH step-up: the largest such rank
    fdr = 0 if below.size == 0 else int(below[-1]) + 1
    sentence = [s for s in compute_findings(stats, run.meta).sentences if "false discovery rate" in s]
    assert sentence == [
        f"At step 20, normality is rejected for {int((p < 0.05).sum())} of {m} tested tensors at level "
        f"α = 0.05 one by one, and for {fdr} of {m} with the false discovery rate held at 0.05 across the "
        "step's tensors (Benjamini–Hochberg q-values, column q_value). Each tensor's subsample is the same "
        "at every step (resample='fixed'), so the steps repeat one test of it rather than adding "
        "independent evidence."
    ]
    assert 0 < fdr <= int((p < 0.05).sum()) < m  # the synthetic run has rejections, and BH drops some
