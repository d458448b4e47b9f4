"""On-device reductions: fused power sums agree with a direct float64 computation."""

import numpy as np
import pytest
import torch

from goup_probe.capture import reduce as red
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
    r = red.reduce_flat(x, _index(x.numel()))
    expected = x.to(torch.float64).numpy()
    _assert_moments_equal(r.moments, moments(expected))
    assert r.norm == pytest.approx(np.linalg.norm(expected), rel=1e-12)
    np.testing.assert_array_equal(r.sample, expected[_index(x.numel()).numpy()])


def test_difference_is_taken_in_float64_without_cancellation():
    gen = torch.Generator().manual_seed(1)
    theta = torch.randn(5000, generator=gen) + 100.0
    grad = theta + torch.randn(5000, generator=gen) * 1e-3  # θ − g tiny against θ
    r = red.reduce_difference(theta, grad, _index(5000))
    expected = theta.double().numpy() - grad.double().numpy()
    _assert_moments_equal(r.moments, moments(expected))


def test_chunked_sums_equal_single_pass_and_chunks_are_bounded():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(10_007, generator=gen)
    b = torch.randn(10_007, generator=gen) * 0.1
    seen = []

    def fill(start, stop, out):
        seen.append(out.shape)
        out[0].copy_(a[start:stop])
        out[1].copy_(b[start:stop])

    chunked = red.multi_power_sums(a.numel(), fill, [0.01, -0.02], chunk_elements=2 * 1000)
    assert len(seen) == 11 and all(s[0] == 2 and s[1] <= 1000 for s in seen)
    for ps, t in zip(chunked, (a, b), strict=True):
        _assert_moments_equal(ps.to_moments(), moments(t.double().numpy()))


def test_components_equal_separate_reductions():
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(3, 4, 50, generator=gen).reshape(-1)
    grad = torch.randn(600, generator=gen).exp()  # skewed gradient
    index = _index(600, 100)
    fused = red.reduce_components(theta, grad, index)
    separate = (
        red.reduce_flat(theta, index),
        red.reduce_flat(grad, index),
        red.reduce_difference(theta, grad, index),
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
    left = red.power_sums(1000, lambda a, b: x[a:b], 0.1)
    right = red.power_sums(1000, lambda a, b: x[1000 + a : 1000 + b], 0.1)
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

    ps = red.power_sums(x.numel(), chunk, 0.0, chunk_elements=1000)
    assert calls == [(0, 1000), (1000, 2000), (2000, 2500)]
    _assert_moments_equal(ps.to_moments(), moments(x.numpy()))
