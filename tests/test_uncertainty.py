"""Standard errors valid for the data, overflow-safe moments, refused complex input.

Statistical tests name their replication count; tolerances come from the Monte Carlo error.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

import goup_probe as gp
from goup_probe import schema
from goup_probe.capture.sums import power_sums
from goup_probe.stats.moments import moment_standard_errors
from goup_probe.stats.normality import assess_sample, assess_samples, moments

REPS, N = 400, 2000


def _replicates(draw):
    """REPS samples of size N through the battery (vectorised), with their whole-sample moments."""
    x = draw(np.random.default_rng(20240614), (REPS, N))
    return assess_samples([moments(row) for row in x], x)


@pytest.mark.parametrize(
    "name, draw",
    [
        ("laplace", lambda rng, shape: rng.laplace(size=shape)),
        ("t10", lambda rng, shape: rng.standard_t(10, size=shape)),
    ],
)
def test_data_valid_kurtosis_and_skewness_se_match_the_monte_carlo_sd(name, draw):
    """400 replications at n = 2000: the RMS of the SEs is within 20% of the SD of the estimates.

    The SD of 400 estimates is itself uncertain by about 5-10% for these tails; the null-only
    SE sqrt(24/n) is 6x (Laplace) and 4x (t10) too small.
    """
    results = _replicates(draw)
    kurt = np.array([r.excess_kurtosis for r in results])
    skew = np.array([r.skew for r in results])
    kurt_se = np.sqrt(np.mean([r.kurtosis_se**2 for r in results]))
    skew_se = np.sqrt(np.mean([r.skew_se**2 for r in results]))
    assert kurt_se == pytest.approx(kurt.std(ddof=1), rel=0.2)
    assert skew_se == pytest.approx(skew.std(ddof=1), rel=0.2)
    null = results[0].kurtosis_se_null
    assert null == pytest.approx(math.sqrt(24 / N)) and null < kurt.std(ddof=1) / 3
    assert results[0].skew_se_null == pytest.approx(math.sqrt(6 / N))


def test_data_valid_se_reduces_to_the_null_se_for_normal_data():
    """400 normal samples of 2000: the data-valid SEs agree with sqrt(6/n), sqrt(24/n) within 10%."""
    results = _replicates(lambda rng, shape: rng.standard_normal(shape))
    assert np.sqrt(np.mean([r.kurtosis_se**2 for r in results])) == pytest.approx(math.sqrt(24 / N), rel=0.1)
    assert np.sqrt(np.mean([r.skew_se**2 for r in results])) == pytest.approx(math.sqrt(6 / N), rel=0.1)


def test_moment_standard_errors_equal_the_delta_method_in_central_moments():
    """Against the delta-method variances written in central moments m2..m8 (Var g1: to m6, g2: to m8).

    Var g1 = [Var(c³ − 3m2c) − 3(m3/m2) Cov(c³ − 3m2c, c²) + 9/4 (m3/m2)² Var(c²)] / (n m2³);
    Var g2 = [Var(c⁴ − 4m3c) − 4(m4/m2) Cov(c⁴ − 4m3c, c²) + 4 (m4/m2)² Var(c²)] / (n m2⁴).
    """
    x = np.random.default_rng(1).gamma(2.0, size=3000)
    c = x - x.mean()
    m = {k: np.mean(c**k) for k in range(2, 9)}
    var_skew = (
        m[6] - 6 * m[4] * m[2] + 9 * m[2] ** 3 - m[3] ** 2
        - 3 * m[3] / m[2] * (m[5] - 4 * m[3] * m[2])
        + 9 / 4 * m[3] ** 2 / m[2] ** 2 * (m[4] - m[2] ** 2)
    ) / m[2] ** 3  # fmt: skip
    var_kurt = (
        m[8]
        - m[4] ** 2
        - 8 * m[5] * m[3]
        + 16 * m[3] ** 2 * m[2]
        - 4 * m[4] / m[2] * (m[6] - m[4] * m[2] - 4 * m[3] ** 2)
        + 4 * m[4] ** 2 / m[2] ** 2 * (m[4] - m[2] ** 2)
    ) / m[2] ** 4  # fmt: skip
    z = (c / c.std())[None, :]
    se_skew, se_kurt = moment_standard_errors(z, 3000.0)
    assert se_skew[0] == pytest.approx(math.sqrt(var_skew / 3000), rel=1e-9)
    assert se_kurt[0] == pytest.approx(math.sqrt(var_kurt / 3000), rel=1e-9)
    se_big, _ = moment_standard_errors(z, 30000.0)  # the whole tensor's count, not the subsample's
    assert se_big[0] == pytest.approx(se_skew[0] / math.sqrt(10), rel=1e-12)


def test_a_1e307_scaled_gaussian_gives_the_same_moments_and_tests_as_the_unscaled_one():
    x = np.random.default_rng(2).standard_normal(3000)
    plain, huge = gp.normality(x), gp.normality(x * 1e307)
    assert huge.status == schema.STATUS_OK and huge.verdict == plain.verdict
    assert huge.mean == pytest.approx(plain.mean * 1e307, rel=1e-9)
    assert huge.std == pytest.approx(plain.std * 1e307, rel=1e-12)
    assert huge.min == x.min() * 1e307 and huge.max == x.max() * 1e307
    for field in (
        "skew",
        "excess_kurtosis",
        "skew_se",
        "kurtosis_se",
        "ks_d",
        "shapiro_w",
        "w1_sigma",
        "qq_r",
    ):
        assert getattr(huge, field) == pytest.approx(getattr(plain, field), rel=1e-9, abs=1e-12), field
    assert plain.skew == pytest.approx(stats.skew(x), rel=1e-10)


def test_moments_that_overflow_on_the_device_give_status_overflow_not_nan_beside_a_verdict():
    x = torch.from_numpy(np.random.default_rng(3).standard_normal(4000) * 1e100)
    sums = power_sums(x.numel(), lambda a, b: x[a:b], shift=0.0)  # Σx⁴ ~ 1e403: beyond float64
    assert math.isinf(sums.s4)
    result = assess_sample(sums.to_moments(), x.numpy())
    assert result.status == schema.STATUS_OVERFLOW and "overflow" in result.reason
    assert result.verdict == schema.VERDICT_NOT_TESTED
    assert math.isnan(result.excess_kurtosis) and math.isnan(result.kurtosis_se)
    again = gp.normality(x)  # the host path rescales: real moments and a verdict
    assert again.status == schema.STATUS_OK and math.isfinite(again.excess_kurtosis)


def test_complex_input_is_refused_by_normality():
    with pytest.raises(TypeError, match="complex"):
        gp.normality(np.ones(100) * (1 + 2j))
    with pytest.raises(TypeError, match="complex"):
        gp.normality(torch.ones(100, dtype=torch.complex64))
