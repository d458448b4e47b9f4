"""Calibration of the tail-index estimators by simulation (goup_probe.noise.tails)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from goup_probe.noise.tails import TailIndexResult, sample_sas, tail_index

N = 10**6


@pytest.mark.parametrize("alpha", [1.2, 1.5, 1.8])
def test_mohammadi_recovers_sas_alpha_at_one_million(alpha: float) -> None:
    # 5 replications per alpha at N = 1e6 (Chambers-Mallows-Stuck draws); each within ±0.05.
    # Measured over 10 replications: sd 0.010 (1.2), 0.019 (1.5), 0.021 (1.8), max error 0.046.
    rng = np.random.default_rng(100 + int(alpha * 10))
    estimates = []
    for rep in range(5):
        r = tail_index(sample_sas(alpha, N, rng), "mohammadi", seed=rep)
        assert r.block_size == 1000 and r.n == N and r.k is None
        assert r.ci_low < r.alpha < r.ci_high
        estimates.append(r.alpha)
    assert np.max(np.abs(np.array(estimates) - alpha)) <= 0.05


def test_mohammadi_interval_covers_at_about_the_nominal_rate() -> None:
    # 200 replications at N = 10^4, alpha = 1.5: coverage of the 95% interval
    # within 3 binomial SEs (sqrt(.95 * .05 / 200) = 0.015) of 0.95.
    rng = np.random.default_rng(7)
    hits = 0
    for rep in range(200):
        r = tail_index(sample_sas(1.5, 10_000, rng), seed=rep)
        hits += r.ci_low <= 1.5 <= r.ci_high
    assert abs(hits / 200 - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 200)


def test_mohammadi_block_rule_for_any_n_and_gaussian_gives_two() -> None:
    x = np.random.default_rng(3).standard_normal(10_007)
    r = tail_index(x)
    assert r.block_size == 100 and r.n == 100 * 100
    assert abs(r.alpha - 2.0) < 0.1
    assert "symmetric alpha-stable" in r.note


@pytest.mark.parametrize(
    ("name", "true_alpha"),
    [("pareto", 1.5), ("pareto", 2.0), ("pareto", 3.0), ("t", 2.0), ("t", 3.0)],
)
def test_hill_recovers_pareto_and_student_t_tails(name: str, true_alpha: float) -> None:
    # 3 replications per law at N = 1e6, k by double bootstrap; each within 10% of the
    # true index (measured: Pareto within 0.2%, t(2) within 2.2%, t(3) within 4.8%).
    rng = np.random.default_rng(int(true_alpha * 10) + (0 if name == "pareto" else 50))
    for rep in range(3):
        if name == "pareto":
            x = (rng.pareto(true_alpha, N) + 1.0) * rng.choice([-1.0, 1.0], N)
        else:
            x = rng.standard_t(true_alpha, N)
        r = tail_index(x, "hill", seed=rep)
        assert r.method == "hill" and r.block_size is None and 2 <= r.k < N
        assert abs(r.alpha / true_alpha - 1.0) <= 0.10, r


def test_hill_interval_is_exact_for_pareto_at_fixed_k() -> None:
    # 300 replications, Pareto(2), n = 2000, k = 200: coverage within 3 binomial SEs of 0.95.
    rng = np.random.default_rng(11)
    hits = 0
    for _ in range(300):
        r = tail_index(rng.pareto(2.0, 2000) + 1.0, "hill", k=200)
        hits += r.ci_low <= 2.0 <= r.ci_high
    assert abs(hits / 300 - 0.95) <= 3 * math.sqrt(0.95 * 0.05 / 300)


def test_result_is_frozen_and_flat() -> None:
    r = tail_index(np.random.default_rng(0).standard_cauchy(5000))
    assert isinstance(r, TailIndexResult)
    with pytest.raises(AttributeError):
        r.alpha = 1.0  # type: ignore[misc]
    assert r.to_dict()["tail_method"] == "mohammadi"


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.ones((10, 10)), "1-D"),
        (np.array([1.0, np.nan] * 20), "non-finite"),
        (np.ones(20, dtype=complex), "real"),
        (np.ones(5), "at least"),
        (np.array(["a"] * 20), "numeric"),
    ],
)
def test_invalid_input_names_the_argument(x: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        tail_index(x)
    assert str(info.value).startswith("x ")


def test_invalid_options() -> None:
    x = np.random.default_rng(0).standard_normal(100)
    with pytest.raises(ValueError, match="method"):
        tail_index(x, "pickands")
    with pytest.raises(ValueError, match="k applies"):
        tail_index(x, k=10)
    with pytest.raises(ValueError, match="block_size must"):
        tail_index(x, block_size=1)
    with pytest.raises(ValueError, match="k must"):
        tail_index(x, "hill", k=1)
    with pytest.raises(ValueError, match="level"):
        tail_index(x, level=1.5)
    with pytest.raises(ValueError, match="alpha"):
        sample_sas(2.5, 10, np.random.default_rng(0))
