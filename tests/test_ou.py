"""OU fits, their diagnostics, and the per-layer OU validation of a probed run.

Tolerances come from the estimators' sampling distributions:

* one series of T transitions, φ = 1 − k: sd(k̂) ≈ √((1 − φ²)/T) = √((2k − k²)/T)
  and E[k̂] − k ≈ (1 + 3φ)/T (Kendall 1954);
* C independent series pooled: sd ≈ √((1 − φ²)/(T·C)), bias ≈ Nickell's (≈ 2/T);
* a rejection rate estimated from m independent tests at level a: sd √(a(1 − a)/m).
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from statsmodels.stats.diagnostic import acorr_ljungbox
from statsmodels.tsa.adfvalues import mackinnonp
from statsmodels.tsa.ar_model import AutoReg
from statsmodels.tsa.stattools import acf as sm_acf
from statsmodels.tsa.stattools import adfuller
from torch import nn

import goup_probe as gp
from goup_probe import ou as gou
from goup_probe import threads, tracks
from goup_probe.cli import main
from goup_probe.stats import ou

ALPHA = 0.05


def simulate_ou(k: float, steps: int, series: int, *, sigma: float = 1.0, mean: float = 0.0, seed: int = 0):
    """(steps + 1, series) stationary discrete OU paths x_{t+1} = μ + (1 − k)(x_t − μ) + σ e_t."""
    rng = np.random.default_rng(seed)
    phi = 1.0 - k
    x = np.empty((steps + 1, series))
    x[0] = mean + sigma * rng.standard_normal(series) / math.sqrt(1.0 - phi * phi)
    noise = sigma * rng.standard_normal((steps, series))
    for t in range(steps):
        x[t + 1] = mean + phi * (x[t] - mean) + noise[t]
    return x


def simulate_ar2(steps: int, series: int, phi1: float = 0.5, phi2: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.zeros((steps + 200, series))
    e = rng.standard_normal(x.shape)
    for t in range(2, x.shape[0]):
        x[t] = phi1 * x[t - 1] + phi2 * x[t - 2] + e[t]
    return x[200:]


def rate_tolerance(m: int, level: float = ALPHA) -> float:
    """Three binomial standard errors of a rejection rate from m independent tests."""
    return 3.0 * math.sqrt(level * (1.0 - level) / m)


def trajectories_frame(theta: np.ndarray, grad: np.ndarray, lr: float, param: str = "w") -> pd.DataFrame:
    """A 'trajectories' table from a (T + 1, C) path θ and (T, C) gradients."""
    return pd.DataFrame(
        {
            "step": np.arange(theta.shape[0] - 1),
            "param": param,
            "lr": lr,
            "theta": list(theta[:-1]),
            "grad": list(grad),
            "theta_next": list(theta[1:]),
        }
    )


# ----------------------------------------------------------------------------- equal to statsmodels / scipy


def test_ar1_batch_equals_autoreg():
    x = simulate_ou(0.1, 400, 1, sigma=0.3, mean=2.0, seed=1)[:, 0]
    ref = AutoReg(x, lags=1, trend="c").fit()
    fit = ou.ar1_batch(x[:-1], x[1:])
    np.testing.assert_allclose(fit.intercept[0], ref.params[0], rtol=1e-9)
    np.testing.assert_allclose(fit.phi[0], ref.params[1], rtol=1e-12)
    np.testing.assert_allclose(fit.phi_se[0], ref.bse[1], rtol=1e-9)
    np.testing.assert_allclose(fit.sigma2[0], ref.sigma2, rtol=1e-9)
    np.testing.assert_allclose(fit.loglik[0], ref.llf, rtol=1e-9)
    np.testing.assert_allclose(fit.resid[:, 0], ref.resid, atol=1e-9)
    one = gp.fit_ou(x)
    np.testing.assert_allclose(one.k, 1 - ref.params[1], rtol=1e-9)
    np.testing.assert_allclose(one.k_se, ref.bse[1], rtol=1e-9)
    np.testing.assert_allclose(one.loglik, ref.llf, rtol=1e-9)
    np.testing.assert_allclose(one.k_ci, 1 - ref.conf_int()[1][::-1], rtol=1e-9)


def test_batch_tests_equal_statsmodels_and_scipy():
    rng = np.random.default_rng(2)
    e = rng.standard_normal((300, 3)) * [1.0, 5.0, 0.01]
    e[:, 2] = np.cumsum(e[:, 2])
    q, p = ou.ljung_box_batch(e, 8, model_df=1)
    stat, adf_p = ou.adf_batch(e, 4)
    f, bf_p, _ = ou.brown_forsythe_batch(e, 4)
    skew, kurt, norm_p = ou.normality_batch(e)
    for j in range(3):
        lb = acorr_ljungbox(e[:, j], lags=[8], model_df=1)
        assert q[j] == pytest.approx(lb["lb_stat"].iloc[0], rel=1e-10)
        assert p[j] == pytest.approx(lb["lb_pvalue"].iloc[0], rel=1e-8, abs=1e-300)
        ref = adfuller(e[:, j], maxlag=4, autolag=None, regression="c", **_result_object())
        ref_stat, ref_p = (ref.statistic, ref.pvalue) if hasattr(ref, "statistic") else ref[:2]
        assert stat[j] == pytest.approx(ref_stat, rel=1e-9)
        assert adf_p[j] == pytest.approx(ref_p, rel=1e-8, abs=1e-300)
        lev = stats.levene(*np.array_split(e[:, j], 4), center="median")
        assert f[j] == pytest.approx(lev.statistic, rel=1e-9)
        assert bf_p[j] == pytest.approx(lev.pvalue, rel=1e-8, abs=1e-300)
        assert norm_p[j] == pytest.approx(stats.normaltest(e[:, j]).pvalue, rel=1e-8, abs=1e-300)
        assert skew[j] == pytest.approx(stats.skew(e[:, j]), rel=1e-9)
        assert kurt[j] == pytest.approx(stats.kurtosis(e[:, j]), rel=1e-9)


@pytest.mark.parametrize("nlags", [1, 10, ou.DIRECT_ACF_MAX_LAGS, ou.DIRECT_ACF_MAX_LAGS + 1, 60])
def test_acf_batch_equals_statsmodels_on_both_sides_of_the_direct_fft_switch(nlags):
    rng = np.random.default_rng(5)
    e = np.cumsum(rng.standard_normal((400, 3)), axis=0) * [1.0, 1e-6, 1e6]
    got = ou.acf_batch(e, nlags)
    for j in range(3):
        np.testing.assert_allclose(got[:, j], sm_acf(e[:, j], nlags=nlags, fft=False)[1:], atol=1e-12)


def test_ljung_box_from_acf_equals_acorr_ljungbox():
    rng = np.random.default_rng(6)
    e = rng.standard_normal((250, 2))
    q, p = ou.ljung_box_from_acf(ou.acf_batch(e, 6), 250, model_df=np.array([1.0, 0.5]))
    for j, df in enumerate([1.0, 0.5]):
        lb = acorr_ljungbox(e[:, j], lags=[6], model_df=0)
        assert q[j] == pytest.approx(lb["lb_stat"].iloc[0], rel=1e-10)
        assert p[j] == pytest.approx(stats.chi2.sf(lb["lb_stat"].iloc[0], 6 - df), rel=1e-8)
    with pytest.raises(ValueError, match="must exceed model_df"):
        ou.ljung_box_from_acf(ou.acf_batch(e, 1), 250, model_df=1)


def test_mackinnon_p_equals_statsmodels_across_and_beyond_its_table():
    grid = np.concatenate([np.linspace(-25.0, 5.0, 3001), [-18.83, -1.61, 2.74]])
    expected = [mackinnonp(float(s), regression="c", N=1) for s in grid]
    np.testing.assert_allclose(ou.mackinnon_p(grid), expected, rtol=1e-13, atol=0)
    assert np.isnan(ou.mackinnon_p(np.array([np.nan, np.inf, -np.inf]))).all()


def _result_object() -> dict:
    return {"result_object": True} if "result_object" in inspect.signature(adfuller).parameters else {}


# ----------------------------------------------------------------------------- recovery of k


def test_fit_ou_recovers_k_within_its_standard_error():
    k, steps = 0.05, 4000
    x = simulate_ou(k, steps, 1, sigma=0.2, mean=3.0, seed=3)[:, 0]
    fit = gp.fit_ou(x)
    se = math.sqrt((2 * k - k * k) / steps)
    assert fit.status == "ok" and fit.axis == "time" and fit.n == steps
    assert fit.k_se == pytest.approx(se, rel=0.1)
    assert abs(fit.k - k - ou.kendall_bias(k, steps)) < 4 * se
    assert fit.k_ci[0] < k < fit.k_ci[1]
    assert fit.sigma == pytest.approx(0.2, abs=4 * 0.2 / math.sqrt(2 * steps))
    assert fit.mean == pytest.approx(3.0, abs=4 * fit.stationary_std * math.sqrt(2 / (k * steps)))
    assert fit.half_life == pytest.approx(math.log(2) / fit.k)
    assert fit.ljung_box_p > 0.001 and fit.adf_p < 0.01


def test_k_sampling_distribution_bias_sd_and_coverage():
    """Over 400 replicates: mean k̂ = k + Kendall bias, sd(k̂) = √((2k − k²)/T), 95% CIs cover."""
    k, steps, reps = 0.05, 2000, 400
    x = simulate_ou(k, steps, reps, seed=4)
    fit = ou.ar1_batch(x[:-1], x[1:])
    sd = math.sqrt((2 * k - k * k) / steps)
    assert abs(fit.k.mean() - k - ou.kendall_bias(k, steps)) < 4 * sd / math.sqrt(reps)
    assert fit.k.std() == pytest.approx(sd, rel=0.15)
    covered = np.mean(np.abs(fit.k - k) <= 1.96 * fit.k_se)
    assert abs(covered - 0.95) < rate_tolerance(reps, 0.95)


def test_pooled_fit_in_blocks_of_steps_equals_the_formulas_on_the_whole_matrix(monkeypatch):
    from goup_probe.stats import ou_pooled

    x = simulate_ou(0.05, 3000, 24, mean=np.linspace(-2.0, 2.0, 24), seed=11)
    x[:, 5] = 3.0  # a constant series: dropped
    mask = np.ones(24, dtype=bool)
    mask[[2, 17]] = False
    # the within estimator written out on whole matrices of the fitted (varying, selected) columns
    cols = mask.copy()
    cols[5] = False
    xc, yc = x[:-1, cols] - x[:-1, cols].mean(0), x[1:, cols] - x[1:, cols].mean(0)
    phi = float((xc * yc).sum() / (xc * xc).sum())
    e = yc - phi * xc
    steps, n = xc.shape
    se_ols = math.sqrt(float((e * e).sum()) / (steps * n - n - 1) / float((xc * xc).sum()))
    score = (xc * e).sum(axis=1)
    se_raw = math.sqrt(steps / (steps - 1) * float(score @ score)) / float((xc * xc).sum())
    for block in (7, 1000, 10_000):  # blocks that do not divide T, and one block
        monkeypatch.setattr(ou_pooled, "STEP_BLOCK", block)
        fit = ou.pooled_ar1(x[:-1], x[1:], series=mask)
        assert fit.n_series == n == 21
        assert fit.k_raw == pytest.approx(1 - phi, rel=1e-12)
        assert fit.k_se_ols == pytest.approx(se_ols, rel=1e-10)
        _, slope = ou.nickell_correct(fit.k_raw, steps)
        assert fit.k_se == pytest.approx(se_raw * slope, rel=1e-9)
        copied = ou.pooled_ar1(x[:-1, mask], x[1:, mask])
        assert (copied.k, copied.k_se) == pytest.approx((fit.k, fit.k_se), rel=1e-12)
    with pytest.raises(ValueError, match="boolean mask of the 24 columns"):
        ou.pooled_ar1(x[:-1], x[1:], series=mask[:5])


def test_pooled_k_recovers_k_and_clustered_se_handles_common_shocks():
    k, steps, series = 0.1, 1500, 256
    x = simulate_ou(k, steps, series, mean=np.linspace(-5.0, 5.0, series), seed=5)  # one mean each
    pooled = ou.pooled_ar1(x[:-1], x[1:])
    se = math.sqrt((2 * k - k * k) / (steps * series))
    assert pooled.k_se == pytest.approx(se, rel=0.1)
    # k is Nickell-corrected (issue 14, defect 5); k_raw keeps the biased within estimate.
    assert abs(pooled.k - k) < 4 * se
    assert abs(pooled.k_raw - k - ou.nickell_bias(k, steps)) < 4 * se
    # Rescaling all series leaves the estimate unchanged.
    assert ou.pooled_ar1(7 * x[:-1] - 1, 7 * x[1:] - 1).k == pytest.approx(pooled.k, rel=1e-10)
    for scale in (2.0**-700, 2.0**-350, 2.0**350, 2.0**700):  # rescaled inside; 2^±700 squares would not fit
        scaled = ou.pooled_ar1(scale * x[:-1], scale * x[1:])
        assert (scaled.k, scaled.k_se, scaled.k_se_ols) == (pooled.k, pooled.k_se, pooled.k_se_ols)

    # Half of every shock common to all series: the OLS se is too small, the clustered one is right.
    reps, steps, series, phi = 150, 400, 40, 1 - k
    rng = np.random.default_rng(6)
    ks, se_cl, se_ols = [], [], []
    for _ in range(reps):
        shocks = math.sqrt(0.5) * (rng.standard_normal((steps, series)) + rng.standard_normal((steps, 1)))
        path = np.empty((steps + 1, series))
        path[0] = rng.standard_normal(series) / math.sqrt(1 - phi * phi)
        for t in range(steps):
            path[t + 1] = phi * path[t] + shocks[t]
        fit = ou.pooled_ar1(path[:-1], path[1:])
        ks.append(fit.k)
        se_cl.append(fit.k_se)
        se_ols.append(fit.k_se_ols)
    empirical = float(np.std(ks))
    assert np.mean(se_cl) == pytest.approx(empirical, rel=0.2)
    assert np.mean(se_ols) < 0.7 * empirical


# ----------------------------------------------------------------------------- misspecification


def test_ar2_series_flagged_by_residual_whiteness():
    x = simulate_ar2(2000, 1, seed=7)[:, 0]
    fit = gp.fit_ou(x)
    assert fit.ljung_box_p < 1e-6
    assert abs(fit.resid_acf1) > 0.1
    # A true AR(1) of the same length passes.
    assert gp.fit_ou(simulate_ou(0.3, 2000, 1, seed=7)[:, 0]).ljung_box_p > 0.01


def test_random_walk_reported_non_stationary():
    rng = np.random.default_rng(8)
    walk = np.cumsum(rng.standard_normal(2000))
    fit = gp.fit_ou(walk)
    assert fit.adf_p > 0.1
    assert fit.k_ci[0] < 0.002  # no identifiable mean reversion
    stationary = gp.fit_ou(simulate_ou(0.05, 2000, 1, seed=8)[:, 0])
    assert stationary.adf_p < 0.01


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("ljung-box, white noise", lambda e: ou.ljung_box_batch(e, 10)[1]),
        ("ljung-box, AR(1) residuals", None),
        ("d'agostino", lambda e: ou.normality_batch(e)[2]),
        ("brown-forsythe", lambda e: ou.brown_forsythe_batch(e, 4)[1]),
        ("adf, random walks", lambda e: ou.adf_batch(np.cumsum(e, axis=0))[1]),
    ],
)
def test_rejection_rates_under_the_null_are_near_alpha(name, make):
    series = 2000
    if make is None:
        x = simulate_ou(0.2, 500, series, seed=9)
        resid = ou.ar1_batch(x[:-1], x[1:]).resid
        pvalues = ou.ljung_box_batch(resid, 10, model_df=1)[1]
    else:
        pvalues = make(np.random.default_rng(10).standard_normal((500, series)))
    rate = ou.rejection_fraction(pvalues, ALPHA)
    assert abs(rate - ALPHA) < rate_tolerance(series), name


def test_fit_ou_is_scale_invariant():
    x = simulate_ou(0.1, 500, 1, seed=11)[:, 0]
    a, b = gp.fit_ou(x), gp.fit_ou(1e-4 * x + 50.0)
    for name in ("k", "k_se", "ljung_box_p", "resid_normality_p", "adf_p", "var_stability_p", "resid_acf1"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-6), name
    assert b.sigma == pytest.approx(1e-4 * a.sigma, rel=1e-9)
    assert b.mean == pytest.approx(1e-4 * a.mean + 50.0, rel=1e-9)


def test_fit_ou_guards_short_constant_and_invalid_series():
    short = gp.fit_ou(np.arange(10.0))
    assert short.status == "too_few" and math.isnan(short.k)
    flat = gp.fit_ou(np.full(100, 3.0))
    assert flat.status == "constant" and math.isnan(flat.k)
    with pytest.raises(ValueError, match="NaN"):
        gp.fit_ou(np.array([1.0, np.nan] * 20))
    with pytest.raises(ValueError, match="1-D"):
        gp.fit_ou(np.zeros((30, 2)))
    as_dict = gp.fit_ou(simulate_ou(0.2, 100, 1)[:, 0]).to_dict()
    assert as_dict["k_ci_low"] < as_dict["k"] < as_dict["k_ci_high"]


# ----------------------------------------------------------------------------- validate_ou


def test_validate_ou_true_innovations_hold():
    """θ follows an OU process and η = α(θ − g) is its i.i.d. Gaussian innovation."""
    k, lr, steps = 0.2, 0.1, 1000
    rng = np.random.default_rng(12)
    theta = np.empty((steps + 1, 64))
    theta[0] = rng.standard_normal(64)
    eta = rng.standard_normal((steps, 64))
    for t in range(steps):
        theta[t + 1] = (1 - k) * theta[t] + eta[t]
    grad = theta[:-1] - eta / lr
    row = gp.validate_ou(trajectories_frame(theta, grad, lr)).iloc[0]
    assert row["verdict"] == gou.VERDICT_OU_HOLDS, row["reason"]
    assert row["k_pooled_ci_low"] < k < row["k_pooled_ci_high"]  # Nickell-corrected (issue 14)
    assert row["k_over_lr"] == pytest.approx(k / lr, rel=0.1)
    assert abs(row["innovation_acf1"]) < 0.1 and abs(row["innovation_state_corr"]) < 0.1


def test_validate_ou_in_threads_equals_one_thread_in_the_tensors_order():
    rng = np.random.default_rng(13)
    frames = []
    for i, k in enumerate([0.05, 0.2, 0.5, 0.9, 0.3]):
        theta = np.empty((301, 16))
        theta[0] = rng.standard_normal(16)
        eta = rng.standard_normal((300, 16))
        for t in range(300):
            theta[t + 1] = (1 - k) * theta[t] + eta[t]
        frames.append(trajectories_frame(theta, theta[:-1] - eta / 0.1, 0.1, param=f"t{i}"))
    table = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0)  # rows shuffled
    serial = gp.validate_ou(table, workers=1)
    assert list(serial["param"]) == sorted(serial["param"], key=list(table["param"].unique()).index)
    pd.testing.assert_frame_equal(gp.validate_ou(table, workers=3), serial)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        gp.validate_ou(table, workers=0)


def test_blocks_of_coordinates_and_steps_give_the_whole_matrix_analysis(monkeypatch):
    """Each test depends on its coordinate (or step) alone: blocks change rounding only, never a verdict."""
    from goup_probe import ou_tensor

    rng = np.random.default_rng(21)
    frames = []
    for i, k in enumerate([0.02, 0.3]):
        theta = np.empty((401, 45))
        theta[0] = rng.standard_normal(45)
        eta = rng.standard_t(4, size=(400, 45))
        for t in range(400):
            theta[t + 1] = (1 - k) * theta[t] + eta[t]
        grad = theta[:-1] - eta / 0.1
        if i == 1:
            theta[:, 3] = 2.0  # a constant coordinate, dropped
            grad[7, 11] = np.nan  # a non-finite one, dropped
        frames.append(trajectories_frame(theta, grad, 0.1, param=f"t{i}"))
    table = pd.concat(frames, ignore_index=True)
    monkeypatch.setattr(ou_tensor, "COORDINATE_BLOCK", 10**6)
    monkeypatch.setattr(ou_tensor, "STEP_BLOCK", 10**6)
    whole = gp.validate_ou(table, workers=1)
    assert list(whole["n_coords"]) == [45, 43]
    monkeypatch.setattr(ou_tensor, "COORDINATE_BLOCK", 7)  # blocks of 7 (the last of 3), steps in 64s
    monkeypatch.setattr(ou_tensor, "STEP_BLOCK", 64)
    blocked = gp.validate_ou(table, workers=1)
    pd.testing.assert_frame_equal(blocked, whole, rtol=1e-10)
    assert list(blocked["verdict"]) == list(whole["verdict"])
    assert list(blocked["reason"]) == list(whole["reason"])


def test_default_workers_run_one_fit_at_a_time_when_two_would_exceed_the_memory_budget(monkeypatch):
    monkeypatch.setattr(gou, "usable_cpus", lambda: 8)
    per_fit = gou.FIT_BYTES_PER_VALUE
    assert gou.default_workers(0) == gou.MAX_DEFAULT_WORKERS
    assert gou.default_workers(gou.PARALLEL_FIT_BUDGET // (3 * per_fit)) == 3
    assert gou.default_workers(gou.PARALLEL_FIT_BUDGET // per_fit + 1) == 1  # one fit over the budget
    assert gou.default_workers(5000 * 256) == 4  # 82 MB a fit
    assert gou.default_workers(20_000 * 256) == 1  # a 20 000-step soak: 328 MB a fit
    monkeypatch.setattr(gou, "usable_cpus", lambda: 1)
    assert gou.default_workers(0) == 1


def test_threaded_map_draws_at_most_workers_items_ahead():
    drawn = []

    def items():
        for i in range(10):
            drawn.append(i)
            yield i

    results = threads.map_in_order(lambda i: i * i, items(), 3)
    assert next(results) == 0 and len(drawn) <= 4  # the first result after at most 3 + 1 draws
    assert list(results) == [i * i for i in range(1, 10)]


def test_trajectories_of_unequal_length_name_the_tensor():
    import pyarrow as pa

    column = pa.chunked_array([pa.array([[1.0, 2.0], [3.0]], type=pa.list_(pa.float32()))])
    with pytest.raises(ValueError, match=r"'enc\.w'.*theta tracer rows differ in length"):
        tracks._list_matrix("enc.w", "theta", column)
    kind = pa.list_(pa.float32())
    square = pa.chunked_array([pa.array([[1.0, 2.0]], type=kind), pa.array([[3.0, None]], type=kind)])
    np.testing.assert_array_equal(tracks._list_matrix("w", "grad", square), [[1.0, 2.0], [3.0, np.nan]])


def test_validate_ou_flags_ar2_and_reports_axes():
    x = simulate_ar2(1500, 32, seed=13)
    table = gp.validate_ou(trajectories_frame(x, np.zeros((1500 - 1, 32)), 0.1))
    row = table.iloc[0]
    assert row["verdict"] == gou.VERDICT_OU_REJECTED
    assert "residuals autocorrelated" in row["reason"]
    assert row["resid_lb_reject"] > 0.9
    assert table.attrs["axes"]["k_pooled"] == "panel"
    assert table.attrs["axes"]["innovation_lb_reject"] == "time"
    assert table.attrs["axes"]["innovation_normality_reject_pooled"] == "pooled"
    assert list(table.columns) == list(gou.OU_COLUMNS)


def test_validate_ou_random_walk_has_no_mean_reversion_and_is_non_stationary():
    rng = np.random.default_rng(14)
    walk = np.cumsum(rng.standard_normal((801, 32)), axis=0)
    row = gp.validate_ou(trajectories_frame(walk, np.zeros((800, 32)), 0.1)).iloc[0]
    # The Nickell-corrected pooled interval includes 0: an upper bound on k, not "insufficient data".
    bound = f"(k < {row['k_pooled_upper']:.3g})"
    assert row["verdict"] == f"{gou.VERDICT_NO_MEAN_REVERSION} {bound}", row["reason"]
    assert row["k_pooled_ci_low"] <= 0 and row["k_pooled_upper"] < 0.01
    assert row["k_pooled_bias"] == pytest.approx(row["k_pooled_raw"] - row["k_pooled"])
    assert row["k_pooled_bias"] == pytest.approx(3 / 801, rel=0.05)  # Nickell's bias at a unit root
    assert "non-stationary" in row["reason"]
    assert row["adf_stationary"] < 0.2
    assert row["steps_x_k"] < 100
    assert gou.verdict_kind(row["verdict"]) == f"{gou.VERDICT_NO_MEAN_REVERSION} (k < bound)"


class NoiseModel(nn.Module):
    """Parameters whose loss gradient is seeded N(0, 1) noise, independent of θ."""

    def __init__(self, numel: int, small: int, sd: float) -> None:
        super().__init__()
        self.w = nn.Parameter(sd * torch.randn(numel, dtype=torch.float64))
        self.b = nn.Parameter(sd * torch.randn(small, dtype=torch.float64))

    def forward(self, gen: torch.Generator) -> torch.Tensor:
        noise_w = torch.randn(self.w.shape, generator=gen, dtype=torch.float64)
        noise_b = torch.randn(self.b.shape, generator=gen, dtype=torch.float64)
        return (self.w * noise_w).sum() + (self.b * noise_b).sum()


def probed_noise_run(run_dir, steps: int, lr: float, weight_decay: float):
    """SGD with weight decay λ on pure-noise gradients: θ_{t+1} = (1 − αλ)θ_t − α ε_t."""
    k = lr * weight_decay
    model = NoiseModel(256, 8, sd=lr / math.sqrt(1 - (1 - k) ** 2))  # stationary from step 0
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(0)
    with gp.attach(model, optimizer, run_dir=run_dir, every=10_000, quantities=("theta_minus_grad",)):
        for _ in range(steps):
            model(gen).backward()
            optimizer.step()
            optimizer.zero_grad()
    return gp.load_run(run_dir)


@pytest.fixture(scope="module")
def noise_run(tmp_path_factory):
    return probed_noise_run(tmp_path_factory.mktemp("ou") / "run", steps=1500, lr=0.05, weight_decay=2.0)


def test_probed_sgd_with_weight_decay_recovers_alpha_lambda(noise_run):
    lr, weight_decay, steps, coords = 0.05, 2.0, 1500, 256
    k = lr * weight_decay  # 0.1, while the seed's k = α would be 0.05
    table = gp.validate_ou(noise_run)
    row = table.set_index("param").loc["w"]
    assert row["steps"] == steps and row["n_coords"] == coords and row["lr"] == lr
    se = math.sqrt((2 * k - k * k) / (steps * coords))
    assert abs(row["k_pooled"] - k) < 4 * se  # Nickell-corrected (issue 14)
    assert row["k_over_lr"] == pytest.approx(weight_decay, abs=4 * se / lr + 2.5 / steps / lr)
    assert row["half_life_steps"] == pytest.approx(math.log(2) / k, rel=0.05)
    # The fitted OU is right: white, Gaussian, stationary residuals of constant variance.
    tol = 0.05 + 0.1  # rate under the null plus slack for 256 correlated-free coordinates
    assert row["resid_lb_reject"] < tol and row["resid_normality_reject"] < tol
    assert row["var_unstable"] < tol and row["adf_stationary"] > 0.9
    assert row["verdict"] in (gou.VERDICT_OU_HOLDS, gou.VERDICT_OU_NOT_SEED), row["reason"]
    # Weight decay is not in g: the step is not θ − αg, and the seed's η carries −αθ.
    assert row["sgd_identity_err"] > 0.05
    small = table.set_index("param").loc["b"]
    assert small["n_coords"] == 8 and math.isnan(small["innovation_normality_reject_pooled"])


def test_validate_ou_on_a_too_short_run_says_insufficient_data(tmp_path):
    run = probed_noise_run(tmp_path / "short", steps=12, lr=0.05, weight_decay=2.0)
    table = gp.validate_ou(run)
    assert (table["verdict"] == gou.VERDICT_INSUFFICIENT).all()
    assert table["k_pooled"].isna().all() and table["half_life_steps"].isna().all()
    assert table["reason"].str.contains("only 12 steps").all()


def test_validate_ou_writes_and_replaces_the_ou_table(noise_run):
    for _ in range(2):
        gp.validate_ou(noise_run, write=True)
    stored = gp.load_run(noise_run.path).table("ou")
    assert len(stored) == 2 and set(stored["param"]) == {"w", "b"}
    with pytest.raises(ValueError, match="no trajectories"):
        gp.validate_ou(noise_run, params=["missing"])
    with pytest.raises(ValueError, match="write=True"):
        gp.validate_ou(noise_run.trajectories, write=True)


def test_cli_ou_prints_the_per_layer_table(noise_run, capsys):
    assert main(["ou", str(noise_run.path), "--from-step", "100"]) == 0
    out = capsys.readouterr().out
    assert "k_pooled" in out and "k_hat" not in out and "verdict" in out and "Reasons:" in out
    assert any(line.startswith("w ") for line in out.splitlines())


def test_sgd_identity_error_is_zero_for_plain_sgd_and_not_with_weight_decay():
    lr, steps = 0.1, 200
    rng = np.random.default_rng(15)
    grad = rng.standard_normal((steps, 16))
    theta = np.vstack([np.ones((1, 16)), 1.0 - lr * np.cumsum(grad, axis=0)])
    plain = gp.validate_ou(trajectories_frame(theta, grad, lr)).iloc[0]
    assert plain["sgd_identity_err"] < 1e-12
    decayed = theta.copy()
    for t in range(steps):
        decayed[t + 1] = decayed[t] - lr * (grad[t] + 0.5 * decayed[t])
    assert gp.validate_ou(trajectories_frame(decayed, grad, lr)).iloc[0]["sgd_identity_err"] > 0.01
