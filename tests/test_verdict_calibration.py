"""Calibration of the verdict rule by seeded simulation: "Gaussian" needs evidence of closeness.

Each test names its replication count; a share is compared with its target
through the binomial standard error √(p(1 − p)/reps) at the target p (two SEs
of slack). The samples are seeded, so every run sees the same numbers.
"""

import math

import numpy as np
import pytest
from scipy import stats

import goup_probe as gp
from goup_probe import schema
from goup_probe.stats.normality import assess_sample, assess_samples, moments


def _results(draw, n, reps, seed):
    """Results of ``reps`` seeded samples of size ``n`` (the whole tensor is the tested sample)."""
    x = draw(np.random.default_rng(seed), (reps, n))
    return assess_samples([moments(row) for row in x], x)


def _share(results, predicate):
    return sum(map(predicate, results)) / len(results)


def _slack(p, reps):
    return 2.0 * math.sqrt(p * (1.0 - p) / reps)


def _is_gaussian(r):
    return r.verdict == schema.VERDICT_GAUSSIAN


def test_normal_samples_of_5000_are_gaussian_at_least_90_percent():
    reps = 500
    results = _results(lambda g, s: g.standard_normal(s), 5000, reps, seed=1)
    share = _share(results, _is_gaussian)
    assert share >= 0.90 - _slack(0.90, reps), f"Gaussian share {share:.3f} of N(0, 1) at n = 5000"
    assert all(r.shape == "" for r in results if _is_gaussian(r))


def test_student_t5_of_50_is_rarely_gaussian():
    reps = 400
    results = _results(lambda g, s: g.standard_t(5, size=s), 50, reps, seed=2)
    share = _share(results, _is_gaussian)
    assert share <= 0.05 + _slack(0.05, reps), f"Gaussian share {share:.3f} of t(5) at n = 50"


def _truncated(g, s):
    return stats.truncnorm.rvs(-2.5, 2.5, size=s, random_state=g)


def _rounded(g, s):
    return np.round(g.standard_normal(s) * 10.0) / 10.0


@pytest.mark.parametrize(
    ("draw", "shape"),
    [
        (lambda g, s: g.standard_t(12, size=s), schema.SHAPE_HEAVY_TAILED),
        (_truncated, schema.SHAPE_LIGHT_TAILED),
        (_rounded, schema.SHAPE_DISCRETE),
    ],
    ids=["t12", "truncated_2.5sigma", "rounded_0.1sigma"],
)
def test_near_normal_alternatives_at_5000_are_never_gaussian_and_named(draw, shape):
    reps = 250
    results = _results(draw, 5000, reps, seed=3)
    assert not any(map(_is_gaussian, results)), "a near-normal alternative was called Gaussian"
    named = _share(results, lambda r: shape in r.shape.split(", "))
    assert named >= 0.80 - _slack(0.80, reps), f"shape {shape!r} named in {named:.3f}"
    assert all(r.verdict in (schema.VERDICT_CLOSE, schema.VERDICT_NON_GAUSSIAN) for r in results)


@pytest.mark.parametrize("n", [50, 200])
@pytest.mark.parametrize(
    "draw",
    [lambda g, s: g.laplace(size=s), lambda g, s: g.uniform(size=s)],
    ids=["laplace", "uniform"],
)
def test_laplace_and_uniform_on_few_values_are_rarely_gaussian(draw, n):
    reps = 300
    share = _share(_results(draw, n, reps, seed=4), _is_gaussian)
    assert share <= 0.05 + _slack(0.05, reps), f"Gaussian share {share:.3f} at n = {n}"


def test_no_cliff_at_50_values_normal_samples_are_inconclusive_not_gaussian():
    reps = 200
    for n in (49, 50):
        results = _results(lambda g, s: g.standard_normal(s), n, reps, seed=5)
        assert not any(map(_is_gaussian, results)), f"n = {n}: closeness cannot be shown on {n} values"
        inconclusive = _share(results, lambda r: r.verdict == schema.VERDICT_INCONCLUSIVE)
        assert inconclusive >= 0.85 - _slack(0.85, reps)


def test_one_value_at_100_sigma_in_a_million_is_not_gaussian():
    x = np.random.default_rng(6).standard_normal(1_000_000)
    x[123_456] = 100.0
    r = gp.normality(x)
    assert r.excess_kurtosis > 90  # the whole tensor sees the outlier ...
    assert r.shapiro_p >= 0.05 and r.w1_sigma < 0.05  # ... the 5000-value subsample does not
    assert r.verdict == schema.VERDICT_NON_GAUSSIAN
    assert schema.SHAPE_HEAVY_TAILED in r.shape.split(", ")
    # the probe's path: moments of the whole tensor beside the tested subsample
    sample = np.delete(x, 123_456)[:5000]
    assert assess_sample(moments(x), sample).verdict == schema.VERDICT_NON_GAUSSIAN
    assert assess_sample(moments(sample), sample).verdict != schema.VERDICT_NON_GAUSSIAN


def test_shape_lists_every_significant_deviation_and_discreteness_alone_is_no_rejection():
    rng = np.random.default_rng(7)
    skewed_heavy = rng.lognormal(sigma=0.6, size=5000)
    r = gp.normality(skewed_heavy)
    assert r.verdict == schema.VERDICT_NON_GAUSSIAN
    assert set(r.shape.split(", ")) >= {schema.SHAPE_HEAVY_TAILED, schema.SHAPE_SKEWED}
    # a normal sample on a bf16-like grid (8 significant bits) keeps n/3 distinct values: not discrete
    g = rng.standard_normal(5000)
    exponent = np.floor(np.log2(np.abs(g)))
    bf16_like = np.round(g / 2.0 ** (exponent - 7)) * 2.0 ** (exponent - 7)
    r = gp.normality(bf16_like)
    assert 0.2 < r.distinct_share < 0.5
    assert schema.SHAPE_DISCRETE not in r.shape
