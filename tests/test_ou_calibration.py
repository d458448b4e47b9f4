"""Calibration of the OU statistics (issue 14, defects 5, 6 and the fit_ou items of 9).

Rates are checked against three binomial standard errors √(p(1 − p)/R) of their
target for R seeded replications; each test names R. The full tables (k up to
T = 20000) come from ``benchmarks/ou_calibration.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import lfilter

import goup_probe as gp
from goup_probe.stats import ou

LEVEL = 0.95


def simulate(k: float, steps: int, series: int, rng: np.random.Generator) -> np.ndarray:
    """(steps + 1, series) stationary OU paths x_{t+1} = (1 − k) x_t + e_t, e_t ~ N(0, 1)."""
    phi = 1.0 - k
    x0 = rng.standard_normal((1, series)) / math.sqrt(1.0 - phi * phi)
    path = lfilter([1.0], [1.0, -phi], rng.standard_normal((steps, series)), axis=0, zi=phi * x0)[0]
    return np.vstack([x0, path])


def tolerance(p: float, reps: int) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / reps)


# ----------------------------------------------------------------------------- pooled k (defect 5)


@pytest.mark.parametrize(("k", "steps"), [(0.2, 500), (0.05, 1000), (0.01, 1000)])
def test_pooled_interval_covers_after_the_nickell_correction(k, steps):
    """N = 256 tracers, 200 replications: the 95% interval covers k within 3 binomial SEs."""
    reps, series = 200, 256
    rng = np.random.default_rng([14, steps, int(k * 1000)])
    hits = raw_hits = 0
    for _ in range(reps):
        x = simulate(k, steps, series, rng)
        fit = ou.pooled_ar1(x[:-1], x[1:], conf_level=LEVEL)
        hits += fit.k_ci[0] <= k <= fit.k_ci[1]
        raw_hits += abs(fit.k_raw - k) <= (fit.k_ci[1] - fit.k_ci[0]) / 2
        assert fit.bias == pytest.approx(fit.k_raw - fit.k)
    assert abs(hits / reps - LEVEL) <= tolerance(LEVEL, reps), hits / reps
    assert raw_hits / reps < 0.85  # the uncorrected interval under-covered (issue 14, defect 5)


def test_nickell_correct_inverts_the_bias_and_carries_the_se():
    for steps in (50, 1000, 20000):
        for k in (0.001, 0.01, 0.2, 1.0, 1.5):
            corrected, slope = ou.nickell_correct(k + ou.nickell_bias(k, steps), steps)
            assert corrected == pytest.approx(k, rel=1e-9)
            assert 1.0 <= slope < 1.5  # b' < 0: the SE grows a little (most near T·k ≈ 1)
    # At and below a unit root the bias is held at its limit 3/(T + 1).
    low, slope = ou.nickell_correct(0.0, 1000)
    assert low == pytest.approx(-3.0 / 1001, rel=1e-3) and slope == 1.0
    assert math.isnan(ou.nickell_correct(float("nan"), 1000)[0])


def test_pooled_verdict_bounds_k_for_random_walks():
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal((1001, 256)), axis=0)
    fit = ou.pooled_ar1(walk[:-1], walk[1:])
    assert fit.verdict.startswith(ou.VERDICT_NO_MEAN_REVERSION + " (k < ")
    assert fit.k_ci[0] < 0 < fit.k_upper
    x = simulate(0.05, 1000, 256, rng)
    assert ou.pooled_ar1(x[:-1], x[1:]).verdict == ou.VERDICT_MEAN_REVERSION


# ----------------------------------------------------------------------------- fit_ou (defect 6)


def test_random_walk_gets_an_upper_bound_not_insufficient_data():
    """20 random walks of 2000 steps: ADF at 5% keeps the unit root in >= 17 (expected 19)."""
    rng = np.random.default_rng(8)
    fits = [gp.fit_ou(np.cumsum(rng.standard_normal(2001))) for _ in range(20)]
    none = [f for f in fits if f.verdict.startswith(ou.VERDICT_NO_MEAN_REVERSION)]
    assert len(none) >= 17
    for fit in none:
        assert fit.verdict == f"{ou.VERDICT_NO_MEAN_REVERSION} (k < {fit.k_upper:.3g})"
        assert fit.k_upper > 0 and not fit.k_reliable


def test_upper_bound_covers_small_k():
    """T·k = 5, 4000 series: the one-sided 95% bound is above k in >= 95% − 3 SE."""
    reps, steps, k = 4000, 1000, 0.005
    x = simulate(k, steps, reps, np.random.default_rng(9))
    fit = ou.ar1_batch(x[:-1], x[1:])
    one = gp.fit_ou(x[:, 0])
    q_one = 1.6448536269514722
    assert one.k_upper == pytest.approx(fit.k[0] + q_one * fit.k_se[0], rel=1e-9)
    assert np.mean(k <= fit.k + q_one * fit.k_se) >= LEVEL - tolerance(LEVEL, reps)


def test_small_steps_x_k_is_flagged_and_large_is_not():
    rng = np.random.default_rng(10)
    slow = gp.fit_ou(simulate(0.005, 1000, 1, rng)[:, 0])
    assert not slow.k_reliable and slow.steps_x_k < ou.MIN_STEPS_X_K
    assert slow.verdict.startswith((ou.VERDICT_NO_MEAN_REVERSION, ou.VERDICT_UNRELIABLE))
    fast = gp.fit_ou(simulate(0.1, 2000, 1, rng)[:, 0])
    assert fast.k_reliable and fast.verdict == ou.VERDICT_MEAN_REVERSION


def test_state_dependent_innovation_variance_is_detected():
    steps, rng = 3000, np.random.default_rng(11)
    x = np.zeros(steps + 1)
    e = rng.standard_normal(steps)
    for t in range(steps):  # innovation sd grows with |x|: multiplicative noise
        x[t + 1] = 0.9 * x[t] + math.sqrt(0.2 + x[t] * x[t]) * e[t]
    fit = gp.fit_ou(x)
    assert fit.state_var_p < 1e-6 and fit.state_var_corr > 0.1
    plain = gp.fit_ou(simulate(0.1, steps, 1, rng)[:, 0])
    assert plain.state_var_p > 1e-3


def test_state_variance_and_mcleod_li_have_size_near_alpha():
    """2000 OU series of 500 steps: rejection rates at 5% within 3 binomial SEs."""
    reps = 2000
    x = simulate(0.2, 500, reps, np.random.default_rng(12))
    fit = ou.ar1_batch(x[:-1], x[1:])
    _, p_sv, _ = ou.state_variance_batch(fit.resid, x[:-1])
    _, p_ml = ou.ljung_box_batch(fit.resid**2, 10)
    for p in (p_sv, p_ml):
        assert abs(ou.rejection_fraction(p) - 0.05) <= tolerance(0.05, reps)


def test_ljung_box_size_near_a_unit_root():
    """k = 0.001, T = 5000, 2000 series: model_df = 1 − φ^{2m} keeps the size at 5%."""
    reps, steps, lags = 2000, 5000, 10
    x = simulate(0.001, steps, reps, np.random.default_rng(13))
    fit = ou.ar1_batch(x[:-1], x[1:])
    _, p_new = ou.ljung_box_batch(fit.resid, lags, model_df=ou.ar1_lb_model_df(fit.phi, lags))
    _, p_old = ou.ljung_box_batch(fit.resid, lags, model_df=1)
    assert abs(ou.rejection_fraction(p_new) - 0.05) <= tolerance(0.05, reps)
    assert ou.rejection_fraction(p_old) > 0.05 + tolerance(0.05, reps)  # the defect
    one = gp.fit_ou(x[:, 0])
    assert one.ljung_box_df == pytest.approx(lags - 1 + one.phi ** (2 * lags))
    assert ou.ar1_lb_model_df(0.0, lags) == 1.0 and ou.ar1_lb_model_df(1.0, lags) == 0.0


# ----------------------------------------------------------------------------- fit_ou (defect 9)


def test_fit_ou_handles_a_million_points():
    """Linear-time autocorrelation and ADF normal equations: n = 10⁶ completes (timed in the benchmark)."""
    x = simulate(0.05, 10**6 - 1, 1, np.random.default_rng(14))[:, 0]
    fit = gp.fit_ou(x)
    assert fit.status == "ok" and fit.n == 10**6 - 1 and fit.adf_lags == 99
    assert abs(fit.k - 0.05) < 4 * fit.k_se and fit.verdict == ou.VERDICT_MEAN_REVERSION


def test_fft_autocorrelation_equals_the_direct_sum():
    e = np.random.default_rng(15).standard_normal((700, 3))
    c = e - e.mean(axis=0)
    direct = np.stack([(c[j:] * c[:-j]).sum(0) / (c * c).sum(0) for j in range(1, 41)])
    np.testing.assert_allclose(ou.acf_batch(e, 40), direct, atol=1e-13)


@pytest.mark.parametrize("factor", [1e200, 1e300, 1e-200, 1e-300, 2.0**-1000, 3.7])
def test_fit_ou_is_scale_invariant_across_the_float64_range(factor):
    x = simulate(0.1, 500, 1, np.random.default_rng(16))[:, 0]
    a, b = gp.fit_ou(x), gp.fit_ou(factor * x)
    assert b.status == "ok" and b.verdict == a.verdict
    for name in ("k", "k_se", "k_upper", "ljung_box_p", "resid_normality_p", "adf_p", "state_var_p"):
        assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-9), name
    assert b.sigma == pytest.approx(factor * a.sigma, rel=1e-9)
    assert b.loglik == pytest.approx(a.loglik - b.n * math.log(factor), rel=1e-9)


def test_complex_input_is_refused_naming_the_argument():
    z = np.exp(1j * np.linspace(0, 10, 100))
    with pytest.raises(TypeError, match="series must be real"):
        gp.fit_ou(z)
    with pytest.raises(TypeError, match="x must be real"):
        ou.pooled_ar1(np.c_[z, z], np.c_[z, z].real)
    with pytest.raises(TypeError, match="e must be real"):
        ou.acf_batch(z, 3)
