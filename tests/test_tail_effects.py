"""Tail-aware effect sizes: exceedance ratios, Hill's index, fitted t / Laplace / generalised normal.

Checked against independent computations (numpy counts, scipy's binomial interval and
maximum-likelihood fits, the hand formula of Hill's estimator) and calibrated on seeded
simulations whose replication counts and binomial tolerances are named in each test.
"""

import math

import numpy as np
import pytest
from scipy import stats

from goup_probe.noise.tails import hill
from goup_probe.stats import tail_effects as te
from goup_probe.stats.normal_tests import standardise

N = 5000


def _rows(draw, rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    z = standardise(draw(np.random.default_rng(seed), (rows, N)))
    return z, np.sort(z, axis=1)


def test_exceedance_ratio_is_a_count_over_the_normal_share_with_the_exact_binomial_interval():
    rng = np.random.default_rng(0)
    x = rng.standard_t(4, (5, 3000))
    z = standardise(x)
    for threshold in (3.0, 4.0):
        got = te.exceedance_ratio(z, threshold)
        for i, row in enumerate(x):
            dev = np.abs(row - row.mean()) / row.std()
            count = int(np.sum(dev > threshold))
            share = 2 * stats.norm.sf(threshold)
            ci = stats.binomtest(count, row.size).proportion_ci(0.95, method="exact")
            assert got.count[i] == count
            assert got.ratio[i] == pytest.approx(count / row.size / share, rel=1e-12)
            assert got.low[i] == pytest.approx(ci.low / share, rel=1e-9, abs=1e-12)
            assert got.high[i] == pytest.approx(ci.high / share, rel=1e-9)


def test_exceedance_ratio_of_normal_rows_is_one_on_average():
    """200 normal rows of 5000: the mean ratio at 3σ is 1 within 4 SE of the binomial mean."""
    z, _ = _rows(lambda r, s: r.standard_normal(s), 200, 1)
    got = te.exceedance_ratio(z, 3.0)
    share = 2 * stats.norm.sf(3.0)
    se = math.sqrt(share * (1 - share) / (N * 200)) / share
    assert abs(got.ratio.mean() - 1.0) < 4 * se
    assert np.mean((got.low <= 1) & (got.high >= 1)) >= 0.95 - 3 * math.sqrt(0.05 * 0.95 / 200)


def test_hill_rows_equal_the_hand_formula_and_the_one_series_estimator():
    _, ordered = _rows(lambda r, s: r.standard_t(3, s), 4, 2)
    got = te.hill_rows(ordered)
    k = math.isqrt(N)
    assert got.k == k
    for i, row in enumerate(ordered):
        mags = np.sort(np.abs(row))[::-1]
        h = np.mean(np.log(mags[:k])) - math.log(mags[k])
        assert got.alpha[i] == pytest.approx(1 / h, rel=1e-12)
        assert got.low[i] == pytest.approx(stats.gamma.ppf(0.025, k) / (k * h), rel=1e-9)
        assert got.high[i] == pytest.approx(stats.gamma.ppf(0.975, k) / (k * h), rel=1e-9)
        one = hill(row, k=k)
        assert (one.alpha, one.ci_low, one.ci_high) == pytest.approx(
            (got.alpha[i], got.low[i], got.high[i]), rel=1e-12
        )


def test_hill_interval_covers_the_index_of_student_t3():
    """100 rows of t(3): coverage of ν = 3 by the 95% interval at k = √n is ≥ 0.95 − 4 SE (measured 0.94)."""
    _, ordered = _rows(lambda r, s: r.standard_t(3, s), 100, 3)
    got = te.hill_rows(ordered)
    assert np.mean((got.low < 3) & (got.high > 3)) >= 0.95 - 4 * math.sqrt(0.05 * 0.95 / 100)


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("t3", lambda r, s: r.standard_t(3, s)),
        ("t5", lambda r, s: r.standard_t(5, s)),
        ("laplace", lambda r, s: r.laplace(size=s)),
        ("t20", lambda r, s: r.standard_t(20, s)),
    ],
)
def test_student_t_fit_is_scipys_maximum_likelihood(name, draw):
    """ν within 0.1% of scipy.stats.t.fit and the log-likelihood at least scipy's − 1e-6 (3 rows each)."""
    z, ordered = _rows(draw, 3, 4)
    got = te.fit_student_t(z, ordered)
    for i, row in enumerate(z):
        df, loc, scale = stats.t.fit(row)
        theirs = stats.t.logpdf(row, df, loc, scale).sum()
        mine = stats.t.logpdf(row, got.nu[i], got.loc[i], got.scale[i]).sum()
        assert got.loglik[i] == pytest.approx(mine, rel=1e-10)
        assert mine >= theirs - 1e-6
        assert got.nu[i] == pytest.approx(df, rel=1e-3)


def test_student_t_fit_of_uniform_rows_is_the_normal():
    z, ordered = _rows(lambda r, s: r.uniform(size=s), 3, 5)
    got = te.fit_student_t(z, ordered)
    assert np.all(np.isinf(got.nu))
    assert got.loglik == pytest.approx(te.normal_loglik(N, 3))


@pytest.mark.parametrize(
    ("name", "draw"),
    [
        ("t3", lambda r, s: r.standard_t(3, s)),
        ("laplace", lambda r, s: r.laplace(size=s)),
        ("normal", lambda r, s: r.standard_normal(s)),
        ("triangular", lambda r, s: r.triangular(-1, 0, 1, s)),
    ],
)
def test_gennorm_fit_is_scipys_maximum_likelihood_at_its_location(name, draw):
    """At the t fit's location: log-likelihood ≥ scipy.stats.gennorm.fit(floc=)'s − 1e-5; with scipy's own
    location too, β within 2% and the log-likelihood within 2 (the location's inefficiency)."""
    z, ordered = _rows(draw, 3, 6)
    loc = te.fit_student_t(z, ordered).loc
    got = te.fit_gennorm(z, loc)
    for i, row in enumerate(z):
        mine = stats.gennorm.logpdf(row, got.beta[i], loc[i], got.scale[i]).sum()
        assert got.loglik[i] == pytest.approx(mine, rel=1e-10)
        beta_f, _, scale_f = stats.gennorm.fit(row, floc=loc[i])
        assert mine >= stats.gennorm.logpdf(row, beta_f, loc[i], scale_f).sum() - 1e-5
        beta, loc_s, scale = stats.gennorm.fit(row)
        assert got.beta[i] == pytest.approx(beta, rel=0.02)
        assert mine >= stats.gennorm.logpdf(row, beta, loc_s, scale).sum() - 2.0


def test_laplace_fit_is_scipys():
    z, ordered = _rows(lambda r, s: r.laplace(size=s), 3, 7)
    loc, scale, loglik = te.laplace_loglik(ordered)
    for i, row in enumerate(z):
        their_loc, their_scale = stats.laplace.fit(row)
        assert loc[i] == pytest.approx(their_loc, abs=1e-12)
        assert scale[i] == pytest.approx(their_scale, rel=1e-10)
        assert loglik[i] == pytest.approx(stats.laplace.logpdf(row, loc[i], scale[i]).sum(), rel=1e-10)


def test_normal_loglik_is_scipys():
    z, _ = _rows(lambda r, s: r.standard_normal(s), 2, 8)
    for i, row in enumerate(z):
        assert te.normal_loglik(N, 2)[i] == pytest.approx(stats.norm.logpdf(row, *stats.norm.fit(row)).sum())


@pytest.mark.parametrize(("nu", "tolerance"), [(3, 0.15), (5, 0.20)])
def test_student_t_calibration(nu, tolerance):
    """100 rows of t(ν), n = 5000. The SD of ν̂ is 4.5% (ν = 3) and 7.5% (ν = 5) (400 rows): the
    tolerance is 3.3 and 2.7 SD, so ≥ 95% of rows lie within it; the mean within 4 SE of ν;
    best_fit "t" in ≥ 80% (measured 400/400)."""
    z, ordered = _rows(lambda r, s: r.standard_t(nu, s), 100, 10 + nu)
    got = te.compare_fits(z, ordered)
    rel = got.t.nu / nu - 1
    assert np.mean(np.abs(rel) <= tolerance) >= 0.95
    assert abs(rel.mean()) < 4 * rel.std() / math.sqrt(100)
    assert np.mean(got.best_fit == "t") >= 0.80


def test_laplace_calibration():
    """100 Laplace rows: best_fit laplace or gennorm in every row, β within 0.1 of 1 (SD 0.027, 400 rows)."""
    z, ordered = _rows(lambda r, s: r.laplace(size=s), 100, 20)
    got = te.compare_fits(z, ordered)
    assert set(got.best_fit) <= {"laplace", "gennorm"}
    assert np.mean(got.best_fit == "laplace") >= 0.5
    assert np.all(np.abs(got.gennorm.beta - 1) < 0.1)


def test_normal_calibration():
    """300 normal rows: best_fit normal in a share consistent with AIC's penalty (measured 0.815 in 400 rows;
    one extra shape parameter wins whenever its likelihood-ratio statistic exceeds 2, P(χ²₁ > 2) = 0.157 for
    β alone), so ≥ 0.815 − 3 SE; aic_gain is 0 there and ν̂ mostly above 30."""
    z, ordered = _rows(lambda r, s: r.standard_normal(s), 300, 30)
    got = te.compare_fits(z, ordered)
    normal = got.best_fit == "normal"
    assert normal.mean() >= 0.815 - 3 * math.sqrt(0.815 * 0.185 / 300)
    assert np.all(got.aic_gain[normal] == 0) and np.all(got.aic_gain >= 0)
    assert np.mean(got.t.nu > 30) >= 0.8


def test_aic_choice_is_the_least_aic():
    z, ordered = _rows(lambda r, s: r.standard_t(8, s), 20, 40)
    got = te.compare_fits(z, ordered)
    logliks = np.stack([got.normal_loglik, got.t.loglik, got.laplace_loglik, got.gennorm.loglik], axis=1)
    aic = 2 * np.array([2, 3, 2, 3]) - 2 * logliks
    assert list(got.best_fit) == [te.FIT_FAMILIES[j] for j in np.argmin(aic, axis=1)]
    assert got.aic_gain == pytest.approx(aic[:, 0] - aic.min(axis=1))


def test_the_battery_reports_the_tail_effects_of_a_sample():
    """Through gp.normality: the declared columns, best_fit a string column of the stats schema."""
    import goup_probe as gp
    from goup_probe import schema
    from goup_probe.stats import battery

    x = np.random.default_rng(50).standard_t(3, N)
    result = gp.normality(x)
    z = standardise(x[None, :])
    fits = te.compare_fits(z)
    assert result.best_fit == "t" == fits.best_fit[0]
    assert result.t_nu == pytest.approx(fits.t.nu[0], rel=1e-12)
    assert result.exceed3_ratio == pytest.approx(te.exceedance_ratio(z, 3.0).ratio[0])
    assert result.hill_alpha == pytest.approx(te.hill_rows(np.sort(z, axis=1)).alpha[0])
    assert str(schema.stats_schema().field("best_fit").type) == "string"
    assert str(schema.stats_schema().field("t_nu").type) == "double"
    assert set(battery.TEXT_COLUMNS) == {"best_fit"}
    untested = gp.normality(np.arange(5.0))
    assert untested.best_fit == "" and math.isnan(untested.t_nu)


def test_battery_fits_shapes_only_on_samples_of_at_least_100_values() -> None:
    from goup_probe.stats import battery

    rng = np.random.default_rng(7)
    small = battery.run_battery(standardise(rng.standard_t(3, (4, battery.MIN_FIT_VALUES - 1))))
    assert np.isnan(small["t_nu"]).all() and np.isnan(small["gennorm_beta"]).all()
    assert np.isnan(small["aic_gain"]).all() and list(small["best_fit"]) == [""] * 4
    assert np.isfinite(small["hill_alpha"]).all()  # the other tail effects still run
    large = battery.run_battery(standardise(rng.standard_t(3, (4, battery.MIN_FIT_VALUES))))
    assert np.isfinite(large["gennorm_beta"]).all() and all(large["best_fit"])


def test_fits_of_several_sizes_in_one_call_equal_each_block_alone():
    rng = np.random.default_rng(11)
    blocks = [
        standardise(rng.standard_t(3, (3, 5000))),
        standardise(rng.standard_normal((2, 1024))),
        standardise(rng.standard_cauchy((1, 100))),
        standardise(rng.uniform(size=(2, 432))),
    ]
    together = te.compare_fits_blocks([(z, None) for z in blocks])
    assert len(together) == len(blocks)
    for z, got in zip(blocks, together, strict=True):
        alone = te.compare_fits(z)
        for a, b in (
            (got.t.nu, alone.t.nu),
            (got.t.loglik, alone.t.loglik),
            (got.gennorm.beta, alone.gennorm.beta),
            (got.gennorm.loglik, alone.gennorm.loglik),
            (got.laplace_loglik, alone.laplace_loglik),
            (got.aic_gain, alone.aic_gain),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert list(got.best_fit) == list(alone.best_fit)
    assert te.compare_fits_blocks([]) == []


def test_packed_rows_sum_and_spread_per_row():
    from goup_probe.stats.packed import PackedRows, split_rows

    rows = PackedRows.from_blocks([np.ones((2, 3)), np.arange(4.0)[None, :]])
    np.testing.assert_array_equal(rows.counts, [3, 3, 4])
    np.testing.assert_array_equal(rows.row_sums(rows.values), [3.0, 3.0, 6.0])
    np.testing.assert_array_equal(rows.row_max(rows.values), [1.0, 1.0, 3.0])
    np.testing.assert_array_equal(rows.spread(np.array([1.0, 2.0, 3.0])), [1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    assert [list(p) for p in split_rows(np.arange(3), [2, 1])] == [[0, 1], [2]]
    with pytest.raises(ValueError, match="at least one value"):
        PackedRows(np.ones(3), np.array([3, 0]))
