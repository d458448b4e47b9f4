"""On-device reductions: fused power sums agree with a direct float64 computation."""

import numpy as np
import pytest
import torch

from goup_probe.capture import reduce as red
from goup_probe.capture import sums
from goup_probe.stats.normality import moments

FIELDS = ("mean", "std", "skew", "excess_kurtosis", "min", "max")


def _assert_moments_equal(got, expected):
    assert got.numel == expected.numel and got.nonfinite == expected.nonfinite
    for name in FIELDS:
        assert getattr(got, name) == pytest.approx(getattr(expected, name), rel=1e-9, abs=1e-12), name


def _index(n, k=500, seed=0):
    return torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, size=min(n, k), replace=False)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_reduce_flat_matches_numpy_moments(dtype):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(10_001, generator=gen) ** 3 * 0.02 + 3.0).to(dtype)  # skewed, offset from 0
    r = red.reduce_flat(x, _index(x.numel()), precision="float64")
    expected = x.to(torch.float64).numpy()
    _assert_moments_equal(r.moments, moments(expected))
    assert r.norm == pytest.approx(np.linalg.norm(expected), rel=1e-12)
    np.testing.assert_array_equal(r.sample, expected[_index(x.numel()).numpy()])


def test_difference_is_taken_in_float64_without_cancellation():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(5000, generator=gen) + 100.0
    grad = theta + torch.randn(5000, generator=gen) * 1e-3  # θ − g tiny against θ
    expected = moments(theta.double().numpy() - grad.double().numpy())
    _assert_moments_equal(
        red.reduce_update(theta, grad, None, _index(5000), precision="float64")[0].moments, expected
    )
    fast = red.reduce_update(theta, grad, None, _index(5000))[
        0
    ].moments  # float32: θ − g is exact here (Sterbenz)
    assert fast.std == pytest.approx(expected.std, rel=1e-6)
    assert fast.excess_kurtosis == pytest.approx(expected.excess_kurtosis, abs=1e-5)


def test_chunked_sums_equal_single_pass_and_chunks_are_bounded():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(10_007, generator=gen, dtype=torch.float64)
    b = torch.randn(10_007, generator=gen, dtype=torch.float64) * 0.1
    seen = []

    def rows(start, stop):
        seen.append(stop - start)
        return [a[start:stop], b[start:stop]]

    chunked, dot = sums.chunked_power_sums(a.numel(), rows, [0.01, -0.02], chunk_elements=1000)
    assert len(seen) == 11 and max(seen) == 1000 and np.isnan(dot)
    for ps, t in zip(chunked, (a, b), strict=True):
        _assert_moments_equal(ps.to_moments(), moments(t.numpy()))


def test_components_equal_separate_reductions():
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(3, 4, 50, generator=gen).reshape(-1)
    grad = torch.randn(600, generator=gen).exp()  # skewed gradient
    index = _index(600, 100)
    fused = red.reduce_components(theta, grad, index)
    separate = (
        red.reduce_flat(theta, index),
        red.reduce_flat(grad, index),
        red.reduce_update(theta, grad, None, index)[0],
    )
    for f, s in zip((fused.theta, fused.grad, fused.x), separate, strict=True):
        _assert_moments_equal(f.moments, s.moments)
        np.testing.assert_array_equal(f.sample, s.sample)
        assert f.norm == pytest.approx(s.norm, rel=1e-12)


def test_nonfinite_values_are_excluded_and_counted():
    x = torch.randn(1000, generator=torch.Generator().manual_seed(4))
    x[[3, 500]] = float("nan")
    x[7] = float("inf")
    r = red.reduce_flat(x, _index(1000, 100))
    _assert_moments_equal(r.moments, moments(x.double().numpy()))
    assert r.moments.nonfinite == 3


def test_only_some_fused_rows_nonfinite():
    a = torch.randn(800, generator=torch.Generator().manual_seed(5))
    b = a.clone()
    b[10] = float("-inf")
    c = red.reduce_components(a, b, _index(800, 50))
    _assert_moments_equal(c.theta.moments, moments(a.double().numpy()))
    _assert_moments_equal(c.grad.moments, moments(b.double().numpy()))
    assert c.x.moments.nonfinite == 1 and c.x.moments.std == 0.0


def test_all_nonfinite_and_empty():
    r = red.reduce_flat(torch.full((10,), float("nan")), torch.arange(10))
    assert r.moments.nonfinite == 10 and np.isnan(r.moments.mean)
    e = red.reduce_flat(torch.empty(0), torch.empty(0, dtype=torch.int64))
    assert e.moments.numel == 0 and e.norm == 0.0


def test_overflowing_fourth_power_falls_back_to_float64_inf():
    x = torch.tensor([1e80, -1e80, 0.0, 1.0], dtype=torch.float64)
    r = red.reduce_flat(x, torch.arange(4))
    assert r.sums.count == 4 and np.isinf(r.sums.s4) and r.sums.maximum == 1e80


def test_power_sums_merge_across_shards():
    x = torch.randn(2000, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    left = sums.power_sums(1000, lambda a, b: x[a:b], 0.1)
    right = sums.power_sums(1000, lambda a, b: x[1000 + a : 1000 + b], 0.1)
    _assert_moments_equal(left.merge(right).to_moments(), moments(x.numpy()))


def test_non_contiguous_views_reduce_in_logical_order():
    base = torch.randn(30, 40, generator=torch.Generator().manual_seed(7))
    flat = red.flat_view(base.T)
    r = red.reduce_flat(flat, torch.arange(5))
    np.testing.assert_array_equal(r.sample, base.T.reshape(-1)[:5].double().numpy())
    _assert_moments_equal(r.moments, moments(base.double().numpy()))


def test_power_sums_calls_the_accessor_in_chunk_sized_pieces():
    x = torch.randn(2500, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    calls = []

    def chunk(a, b):
        calls.append((a, b))
        return x[a:b]

    ps = sums.power_sums(x.numel(), chunk, 0.0, chunk_elements=1000)
    assert calls == [(0, 1000), (1000, 2000), (2000, 2500)]
    _assert_moments_equal(ps.to_moments(), moments(x.numpy()))


# ---------------------------------------------------------------- the float32 fast path
LARGE = 1 << 18


def _fast_cases():
    gen = torch.Generator().manual_seed(10)
    z = torch.randn(LARGE, generator=gen)
    return {
        "normal": z * 0.05,
        "batchnorm-like, mean far from 0": 1.0 + 0.01 * z,
        "tiny gradients": 3e-11 * z + 1e-12,
        "huge values": 1e7 * z,
        "heavy tails, t(3)": z / torch.sqrt(torch.distributions.Chi2(3.0).sample((LARGE,)) / 3),
        "uniform": torch.rand(LARGE, generator=gen) - 0.3,
        "skewed": torch.exp(z),
    }


@pytest.mark.parametrize("case", list(_fast_cases()))
def test_fast_path_agrees_with_float64_far_below_sampling_error(case):
    x = _fast_cases()[case]
    assert sums.compute_dtype(x) == torch.float32
    index = _index(x.numel(), 5000)
    fast = red.reduce_flat(x, index).moments
    exact = moments(x.double().numpy())
    assert fast.std == pytest.approx(exact.std, rel=1e-6)
    assert fast.mean == pytest.approx(exact.mean, rel=1e-6, abs=1e-6 * exact.std)
    assert fast.skew == pytest.approx(exact.skew, abs=1e-5)
    assert fast.excess_kurtosis == pytest.approx(exact.excess_kurtosis, rel=1e-6, abs=1e-5)
    assert (fast.min, fast.max) == (exact.min, exact.max)  # exact: taken from the raw values
    assert red.reduce_flat(x, index, precision="float64").moments.std == pytest.approx(exact.std, rel=1e-12)


def test_fast_components_and_update_agree_with_float64():
    gen = torch.Generator().manual_seed(11)
    theta = torch.randn(LARGE, generator=gen) * 0.05
    grad = torch.randn(LARGE, generator=gen) * 1e-3 + 2e-4
    index = _index(LARGE, 5000)
    fast = red.reduce_components(theta, grad, index)
    exact = red.reduce_components(theta, grad, index, precision="float64")
    for f, e in zip((fast.theta, fast.grad, fast.x), (exact.theta, exact.grad, exact.x), strict=True):
        np.testing.assert_array_equal(f.sample, e.sample)
        assert f.moments.std == pytest.approx(e.moments.std, rel=1e-6)
        assert f.moments.excess_kurtosis == pytest.approx(e.moments.excess_kurtosis, abs=1e-5)
        assert f.norm == pytest.approx(e.norm, rel=1e-6)
    new = theta - 0.1 * grad
    upd, dot = red.reduce_update(new, theta, grad, index)
    reused, reused_dot = red.reduce_update(new, theta, grad, index, old_sample=fast.theta.sample)
    np.testing.assert_array_equal(reused.sample, upd.sample)  # θ's sample stands in for a second gather
    assert (reused.sums, reused_dot) == (upd.sums, dot)
    direct = (new.double() - theta.double()).numpy()
    assert upd.moments.std == pytest.approx(direct.std(), rel=1e-5)
    assert dot == pytest.approx(float(direct @ grad.double().numpy()), rel=1e-5)


def test_fast_path_falls_back_to_float64_for_nonfinite_values_and_float32_overflow():
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(LARGE, generator=gen)
    x[[5, 70_000]] = float("nan")
    r = red.reduce_flat(x, _index(LARGE, 500))
    _assert_moments_equal(r.moments, moments(x.double().numpy()))
    assert r.moments.nonfinite == 2 and np.isnan(r.norm)
    y = torch.randn(LARGE, generator=gen)
    y[123] = 1e20  # (1e20)⁴ overflows float32, not float64
    r = red.reduce_flat(y, torch.arange(1000, 1500))  # the subsample misses the outlier: no scaling
    _assert_moments_equal(r.moments, moments(y.double().numpy()))
    seen = red.reduce_flat(y, torch.arange(500))  # it holds the outlier: scaled by 2⁻⁶², float32
    assert seen.moments.std == pytest.approx(r.moments.std, rel=1e-7)
    assert seen.moments.excess_kurtosis == pytest.approx(r.moments.excess_kurtosis, rel=1e-6)


def test_compute_dtype_and_shift_scale_rules():
    big = torch.zeros(sums.FAST_MIN_NUMEL)
    assert sums.compute_dtype(big) == torch.float32
    assert sums.compute_dtype(big.bfloat16()) == torch.float32
    assert sums.compute_dtype(big, "float64") == torch.float64
    assert sums.compute_dtype(big.double()) == torch.float64
    assert sums.compute_dtype(big[:-1]) == torch.float64  # small tensors: float64
    with pytest.raises(ValueError, match="precision"):
        sums.compute_dtype(big, "half")
    rng = np.random.default_rng(0)
    assert sums.shift_and_scale(rng.normal(0.001, 1.0, 5000), torch.float32) == (0.0, 1.0)
    shift, scale = sums.shift_and_scale(rng.normal(1.0, 0.01, 5000), torch.float32)
    assert shift == float(np.float32(shift)) and abs(shift - 1.0) < 1e-3 and scale == 1.0
    shift, scale = sums.shift_and_scale(rng.normal(0.0, 1e-9, 5000), torch.float32)
    assert shift == 0.0 and scale == 2.0**30  # σ·scale ≈ 1


@pytest.mark.parametrize("factor", [3.7e-9, 0.3, 2.9e6])
def test_fast_path_is_scale_invariant_to_float32_rounding(factor):
    x = torch.randn(LARGE, generator=torch.Generator().manual_seed(13)) ** 3 + 0.2  # skewed, offset
    a = red.reduce_flat(x, _index(LARGE, 2000)).moments
    b = red.reduce_flat(x * factor, _index(LARGE, 2000)).moments
    assert b.std == pytest.approx(factor * a.std, rel=1e-6)
    assert b.mean == pytest.approx(factor * a.mean, rel=1e-6)
    assert b.skew == pytest.approx(a.skew, abs=1e-5)  # near 0 here: an absolute bound
    assert b.excess_kurtosis == pytest.approx(a.excess_kurtosis, rel=1e-6)


def test_fast_path_redoes_in_float64_when_tiny_values_would_underflow():
    # a constant subsample (all zeros) gives no scale; the 200 nonzero values ~1e-12 have d⁴ ~ 1e-48,
    # below float32's range: the sums would be silently wrong, so the quantity is redone in float64
    t = torch.zeros(1_000_000)
    t[:200] = torch.randn(200, generator=torch.Generator().manual_seed(14)) * 1e-12
    got = red.reduce_flat(t, torch.arange(1000, 6000)).moments
    expected = moments(t.double().numpy())
    assert got.excess_kurtosis == pytest.approx(expected.excess_kurtosis, rel=1e-9)
    assert got.std == pytest.approx(expected.std, rel=1e-9)
