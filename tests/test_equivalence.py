"""L-moments, the W1 bound and the verdict rule's pieces, against scipy and seeded simulations."""

import math

import numpy as np
import pytest
from scipy import stats

import goup_probe as gp
from goup_probe import schema
from goup_probe.stats.equivalence import (
    DEFAULT_THRESHOLDS,
    VerdictThresholds,
    closeness,
    distinct_share,
    verdict_and_shape,
    w1_null_mean,
    w1_standard_error,
    w1_upper_bound,
)
from goup_probe.stats.lmoments import TAU4_NORMAL, l_moment_ratios
from goup_probe.stats.normal_tests import standardise, wasserstein1_to_normal


def _sorted_standardised(x):
    return np.sort(standardise(np.atleast_2d(x)), axis=1)


def test_l_moment_ratios_equal_scipys():
    rng = np.random.default_rng(0)
    rows = np.stack([rng.gamma(2.0, size=777), rng.standard_t(4, size=777), rng.uniform(size=777)])
    r = l_moment_ratios(np.sort(rows, axis=1))
    for i, row in enumerate(rows):
        tau3, tau4 = stats.lmoment(row, order=[3, 4], standardize=True)
        assert r.l_skew[i] == pytest.approx(tau3, rel=1e-10, abs=1e-14)
        assert r.l_kurt[i] == pytest.approx(tau4, rel=1e-10)


def test_tau4_of_the_normal_is_hoskings_constant():
    assert abs(TAU4_NORMAL - 0.122602) < 1e-6
    big = l_moment_ratios(_sorted_standardised(np.random.default_rng(1).standard_normal(400_000)))
    assert big.l_kurt[0] == pytest.approx(TAU4_NORMAL, abs=4 * big.l_kurt_se[0])


@pytest.mark.parametrize("dist", ["standard_normal", "laplace", "uniform"])
@pytest.mark.parametrize("n", [60, 600])
def test_l_moment_ses_match_the_monte_carlo_spread(dist, n):
    reps = 600  # the SD of 600 estimates is known to about 1/sqrt(2 * 600) = 3% of itself
    x = getattr(np.random.default_rng(n), dist)(size=(reps, n))
    r = l_moment_ratios(np.sort(x, axis=1))
    for estimate, se in ((r.l_skew, r.l_skew_se), (r.l_kurt, r.l_kurt_se)):
        ratio = math.sqrt(np.mean(se**2)) / estimate.std(ddof=1)
        assert 0.85 < ratio < 1.15, f"{dist}, n = {n}: RMS SE / SD = {ratio:.3f}"


@pytest.mark.parametrize("n", [30, 300, 3000])
def test_w1_null_mean_matches_simulation(n):
    reps = 4000 if n < 3000 else 1000
    x = np.random.default_rng(n).standard_normal((reps, n))
    w = wasserstein1_to_normal(np.sort(standardise(x), axis=1))
    mc_se = w.std(ddof=1) / math.sqrt(reps)
    assert abs(w.mean() - w1_null_mean(n)) < 3 * mc_se + 0.005 * w.mean()


@pytest.mark.parametrize(
    "draw",
    [
        lambda g, s: g.laplace(size=s),
        lambda g, s: g.uniform(size=s),
        lambda g, s: g.logistic(size=s),
        lambda g, s: g.standard_t(12, size=s),
    ],
    ids=["laplace", "uniform", "logistic", "t12"],
)
def test_w1_upper_bound_covers_the_population_distance(draw):
    rng = np.random.default_rng(8)
    truth = wasserstein1_to_normal(_sorted_standardised(draw(rng, 2_000_000)))[0]
    reps, n = 300, 1000
    ordered = np.sort(standardise(draw(rng, (reps, n))), axis=1)
    w1, se = wasserstein1_to_normal(ordered), w1_standard_error(ordered)
    covered = np.mean([w1_upper_bound(w, s, n, 0.05) >= truth for w, s in zip(w1, se, strict=True)])
    assert covered >= 0.95 - 2 * math.sqrt(0.95 * 0.05 / reps) - 0.02, f"coverage {covered:.3f}"


def test_w1_upper_bound_removes_the_null_floor():
    n = 2000
    assert w1_upper_bound(w1_null_mean(n), 0.0, n, 0.05) == 0.0
    assert w1_upper_bound(0.1, 0.01, n, 0.05) == pytest.approx(
        math.sqrt((0.1 + 1.6448536 * 0.01) ** 2 - w1_null_mean(n) ** 2), rel=1e-6
    )
    assert math.isnan(w1_upper_bound(float("nan"), 0.01, n, 0.05))


def test_distinct_share_counts_ties():
    ordered = np.array([[1.0, 1.0, 2.0, 3.0, 3.0, 3.0, 4.0, 5.0]])
    assert distinct_share(ordered)[0] == pytest.approx(5 / 8)


def test_new_columns_are_scale_and_shift_invariant():
    x = np.random.default_rng(4).gamma(2.0, size=3000)
    a, b = gp.normality(x), gp.normality(1e-9 * x + 5.0)
    for name in ("w1_se", "l_skew", "l_skew_se", "l_kurt", "l_kurt_se"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-6), name
    assert (a.verdict, a.shape) == (b.verdict, b.shape)


def _row(**changes):
    row = gp.normality(np.random.default_rng(9).standard_normal(5000)).to_dict()
    row.update(changes)
    return row


def test_rule_on_hand_made_rows():
    assert verdict_and_shape(_row(), DEFAULT_THRESHOLDS) == (schema.VERDICT_GAUSSIAN, "")
    assert verdict_and_shape(_row(shapiro_p=0.001), DEFAULT_THRESHOLDS) == (schema.VERDICT_CLOSE, "other")
    assert verdict_and_shape(_row(w1_se=float("nan")), DEFAULT_THRESHOLDS) == (
        schema.VERDICT_INCONCLUSIVE,
        schema.SHAPE_NONE,
    )
    heavy = _row(l_kurt=TAU4_NORMAL + 0.1)
    assert verdict_and_shape(heavy, DEFAULT_THRESHOLDS) == (schema.VERDICT_NON_GAUSSIAN, "heavy-tailed")
    light_skewed = _row(l_kurt=TAU4_NORMAL - 0.02, l_skew=0.03, distinct_share=0.05)
    assert verdict_and_shape(light_skewed, DEFAULT_THRESHOLDS) == (
        schema.VERDICT_CLOSE,
        "light-tailed, skewed, discrete",
    )
    assert verdict_and_shape(_row(status=schema.STATUS_CONSTANT), DEFAULT_THRESHOLDS) == (
        schema.VERDICT_NOT_TESTED,
        "",
    )
    strict = VerdictThresholds(max_w1_sigma=0.001)
    assert not closeness(_row(), strict).shown
    assert verdict_and_shape(_row(), strict)[0] == schema.VERDICT_INCONCLUSIVE


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"shape_z": 0.0}, ValueError),
        ({"max_distinct_share": 1.5}, ValueError),
        ({"max_l_kurt_dev": -0.1}, ValueError),
        ({"max_abs_l_skew": float("nan")}, ValueError),
        ({"alpha": 1.0}, ValueError),
        ({"shape_z": "3"}, TypeError),
    ],
)
def test_thresholds_are_validated_naming_the_field(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        VerdictThresholds(**kwargs)
