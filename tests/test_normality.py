"""Calibration, power, scale invariance and edge cases of gp.normality."""

import math

import numpy as np
import pytest
from scipy import stats

import goup_probe as gp
from goup_probe import schema
from goup_probe.stats.normality import (
    Moments,
    assess_sample,
    assess_samples,
    lilliefors_statistic,
    moments,
    qq_r_critical,
    wasserstein1_to_normal,
)

ALPHA = 0.05
P_VALUES = ("shapiro_p", "lilliefors_p", "anderson_p", "dagostino_p", "jarque_bera_p", "shapiro_francia_p")


def _rejection_rates(draw, reps, rng):
    counts = dict.fromkeys((*P_VALUES, "qq_r"), 0)
    for _ in range(reps):
        r = gp.normality(draw(rng))
        for name in P_VALUES:
            counts[name] += getattr(r, name) < ALPHA
        counts["qq_r"] += r.qq_r < r.qq_r_crit05
    return {k: v / reps for k, v in counts.items()}


def test_rejection_rate_of_true_gaussians_is_alpha():
    reps = 800
    rng = np.random.default_rng(2024)
    rates = _rejection_rates(lambda g: g.normal(3.0, 7.0, size=400), reps, rng)
    se = math.sqrt(ALPHA * (1 - ALPHA) / reps)
    for name, rate in rates.items():
        assert abs(rate - ALPHA) < 3.5 * se, f"{name}: rejection rate {rate:.3f} not near {ALPHA}"


def test_power_against_student_t3():
    rng = np.random.default_rng(11)
    rates = _rejection_rates(lambda g: g.standard_t(3, size=400), 100, rng)
    for name, rate in rates.items():
        assert rate > 0.9, f"{name}: power {rate:.2f} against t(3) too low"


def test_uniform_is_non_gaussian_with_uniform_moments():
    r = gp.normality(np.random.default_rng(0).uniform(size=20000))
    assert r.verdict == schema.VERDICT_NON_GAUSSIAN
    assert r.excess_kurtosis == pytest.approx(-1.2, abs=0.05)
    assert r.qq_r == pytest.approx(0.977, abs=0.003)
    assert r.n_tested == 5000 and r.numel == 20000


def test_small_deviation_at_large_n_is_close_to_gaussian():
    r = gp.normality(np.random.default_rng(3).standard_t(20, size=200_000))
    assert r.verdict == schema.VERDICT_CLOSE
    assert r.shape == schema.SHAPE_HEAVY_TAILED  # the whole tensor's kurtosis 0.375 is significant


def test_gaussian_verdict():
    r = gp.normality(np.random.default_rng(1).normal(size=3000))
    assert r.verdict == schema.VERDICT_GAUSSIAN and r.status == schema.STATUS_OK
    assert r.axis == schema.AXIS_POOLED


def test_statistics_are_scale_and_shift_invariant():
    x = np.random.default_rng(4).gamma(2.0, size=3000)
    a, b = gp.normality(x), gp.normality(1e-9 * x + 5.0)
    for name in ("skew", "excess_kurtosis", "ks_d", "shapiro_w", "anderson_a2", "qq_r", "w1_sigma"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-6), name
    assert a.verdict == b.verdict


def test_moments_match_scipy_and_skew_kurtosis_se():
    x = np.random.default_rng(5).lognormal(size=1000)
    m = moments(x)
    assert m.skew == pytest.approx(stats.skew(x), rel=1e-10)
    assert m.excess_kurtosis == pytest.approx(stats.kurtosis(x), rel=1e-10)
    r = gp.normality(x)
    assert r.skew_se_null == pytest.approx(math.sqrt(6 / 1000))
    assert r.kurtosis_se_null == pytest.approx(math.sqrt(24 / 1000))


def test_lilliefors_statistic_matches_statsmodels():
    from statsmodels.stats.diagnostic import lilliefors

    x = np.sort(np.random.default_rng(6).normal(size=321))
    assert lilliefors_statistic(x[None, :])[0] == pytest.approx(lilliefors(x, dist="norm")[0], rel=1e-12)


def test_w1_matches_scipy_on_a_fine_normal_grid():
    z = np.sort(np.random.default_rng(7).normal(size=200))
    z = (z - z.mean()) / z.std()
    grid = stats.norm.ppf((np.arange(400_000) + 0.5) / 400_000)
    assert wasserstein1_to_normal(z) == pytest.approx(stats.wasserstein_distance(z, grid), abs=2e-4)


def test_qq_critical_value_is_calibrated_by_simulation():
    rng = np.random.default_rng(8)
    n, reps = 200, 4000
    m = stats.norm.ppf((np.arange(1, n + 1) - 0.375) / (n + 0.25))
    x = np.sort(rng.normal(size=(reps, n)), axis=1)
    xc = x - x.mean(axis=1, keepdims=True)
    r = (xc @ m) / np.sqrt((xc**2).sum(axis=1) * (m @ m))
    rate = np.mean(r < qq_r_critical(n))
    assert abs(rate - ALPHA) < 3.5 * math.sqrt(ALPHA * (1 - ALPHA) / reps)


def test_nonfinite_values_are_counted_and_excluded():
    x = np.random.default_rng(9).normal(size=500)
    x[:7] = np.nan
    x[7] = np.inf
    r = gp.normality(x)
    assert r.nonfinite == 8 and r.status == schema.STATUS_NONFINITE_EXCLUDED
    assert np.isfinite(r.shapiro_p)


@pytest.mark.parametrize(
    ("values", "status"),
    [
        (np.full(100, 2.5), schema.STATUS_CONSTANT),
        (np.array([1.0, 2.0, 3.0]), schema.STATUS_TOO_FEW),
        (np.array([np.nan, np.inf]), schema.STATUS_ALL_NONFINITE),
        (np.array([]), schema.STATUS_TOO_FEW),
    ],
)
def test_degenerate_inputs_get_a_status_not_a_number(values, status):
    r = gp.normality(values)
    assert r.status == status
    assert r.verdict == schema.VERDICT_NOT_TESTED
    assert math.isnan(r.shapiro_p) and math.isnan(r.ks_d)


def test_moments_only_mode():
    full = Moments(10, 0, 0.0, 1.0, 0.0, 0.0, -1.0, 1.0)
    r = assess_sample(full, np.random.default_rng(0).normal(size=10), tested=False)
    assert r.status == schema.STATUS_OK and r.verdict == schema.VERDICT_NOT_TESTED
    assert math.isnan(r.shapiro_p)


def test_result_fields_match_stats_columns():
    fields = set(gp.normality(np.arange(50.0)).to_dict())
    assert fields <= set(schema.STATS_COLUMNS)
    required = {
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
        "skew",
        "excess_kurtosis",
        "numel",
        "n_tested",
    }
    assert required <= fields


def test_bad_thresholds_rejected():
    with pytest.raises(ValueError, match="alpha"):
        gp.VerdictThresholds(alpha=1.5)


@pytest.mark.parametrize("n", [20, 57, 400, 5000])
def test_closed_form_dagostino_and_jarque_bera_match_scipy(n):
    from goup_probe.stats.normality import dagostino_pearson_p, jarque_bera_p

    x = np.random.default_rng(n).gamma(3.0, size=n)
    g1, g2 = stats.skew(x), stats.kurtosis(x)
    assert dagostino_pearson_p(g1, g2, n) == pytest.approx(stats.normaltest(x).pvalue, rel=1e-9, abs=1e-300)
    assert jarque_bera_p(g1, g2, n) == pytest.approx(stats.jarque_bera(x).pvalue, rel=1e-9, abs=1e-300)


def test_huge_values_do_not_overflow():
    r = gp.normality(np.random.default_rng(0).normal(size=100) * 1e200)
    assert r.status == "ok" and np.isfinite(r.shapiro_w)


def test_shapiro_runs_on_at_most_5000_values_even_when_more_are_tested():
    r = gp.normality(np.random.default_rng(0).standard_normal(20000), max_tested=20000)
    assert r.n_tested == 20000 and np.isfinite(r.shapiro_p)


@pytest.mark.parametrize("n", [8, 50, 700, 5000])
@pytest.mark.parametrize("dist", ["normal", "uniform", "laplace"])
def test_anderson_darling_matches_statsmodels(n, dist):
    from statsmodels.stats.diagnostic import normal_ad

    from goup_probe.stats.normality import anderson_darling

    x = getattr(np.random.default_rng(n), dist)(size=n)
    a2, p = anderson_darling(np.sort(x))
    ref_a2, ref_p = normal_ad(x)
    assert a2 == pytest.approx(ref_a2, rel=1e-8)
    assert p == pytest.approx(ref_p, rel=1e-8, abs=1e-300)


def test_unwrapped_shapiro_equals_scipys_public_function():
    from goup_probe.stats.battery import _shapiro

    x = np.random.default_rng(12).gamma(2.0, size=1234)
    assert tuple(_shapiro(x)) == tuple(stats.shapiro(x))


def test_not_rejected_on_few_values_is_inconclusive_not_gaussian():
    rng = np.random.default_rng(5)
    verdicts = [gp.normality(rng.uniform(size=16)).verdict for _ in range(50)]
    assert set(verdicts) <= {schema.VERDICT_INCONCLUSIVE, schema.VERDICT_NON_GAUSSIAN}
    assert verdicts.count(schema.VERDICT_INCONCLUSIVE) > 25  # the test has little power at n = 16
    # no cliff at 50 values: closeness cannot be shown on 60 either (W1's bound alone is about 0.1 σ)
    assert gp.normality(rng.normal(size=60)).verdict in (
        schema.VERDICT_INCONCLUSIVE,
        schema.VERDICT_NON_GAUSSIAN,
    )
    lenient = gp.VerdictThresholds(
        max_w1_sigma=1.0,
        max_abs_l_skew=1.0,
        max_l_kurt_dev=1.0,
        max_abs_skew=10.0,
        max_abs_excess_kurtosis=10.0,
    )
    assert gp.normality(rng.normal(size=16), thresholds=lenient).verdict != schema.VERDICT_INCONCLUSIVE


@pytest.mark.parametrize("n", [16, 64, 2304, 5000])
def test_assess_samples_equals_assess_sample_row_by_row(n):
    rng = np.random.default_rng(n)
    rows = np.stack(
        [
            rng.standard_normal(n),
            rng.uniform(size=n) * 1e-7 + 3.0,  # offset, tiny spread
            rng.standard_t(3, size=n) * 1e5,
            np.full(n, 2.5),  # constant
            rng.exponential(size=n),
        ]
    )
    fulls = [moments(r) for r in rows]
    together = assess_samples(fulls, rows)
    untested = assess_samples(fulls, rows, tested=False)
    for full, row, got, moments_only in zip(fulls, rows, together, untested, strict=True):
        alone = assess_sample(full, row)
        for name, value in alone.to_dict().items():
            if isinstance(value, float):
                assert getattr(got, name) == pytest.approx(value, rel=1e-10, abs=1e-15, nan_ok=True), name
            else:
                assert getattr(got, name) == value, name
        expected = assess_sample(full, row, tested=False)
        assert (moments_only.status, moments_only.verdict) == (expected.status, expected.verdict)
        assert np.isnan(moments_only.shapiro_p) and moments_only.std == expected.std
    assert together[3].status == schema.STATUS_CONSTANT
    with pytest.raises(ValueError, match="finite"):
        assess_samples(fulls[:1], np.array([[1.0, np.nan] * 8]))


def test_anderson_darling_p_value_pieces_and_their_boundaries():
    from goup_probe.stats.battery import anderson_darling_p

    def reference(m):  # D'Agostino & Stephens (1986), as statsmodels' normal_ad
        if m < 0.2:
            return 1 - math.exp(-13.436 + 101.14 * m - 223.73 * m * m)
        if m < 0.34:
            return 1 - math.exp(-8.318 + 42.796 * m - 59.938 * m * m)
        if m < 0.6:
            return math.exp(0.9177 - 4.279 * m - 1.38 * m * m)
        if m <= 13:
            return math.exp(1.2937 - 5.709 * m + 0.0186 * m * m)
        return 0.0

    ms = np.array([0.0, 0.05, 0.2, 0.3, 0.34, 0.5, 0.6, 5.0, 13.0, np.nextafter(13.0, 14.0), 40.0])
    np.testing.assert_allclose(anderson_darling_p(ms), [reference(m) for m in ms], rtol=1e-12, atol=1e-300)
