"""Normality of a 1-D sample: tests, effect sizes and a verdict.

Every function here works in float64 on the host and is scale-invariant: the
sample is standardised before testing, so multiplying the data by any positive
constant leaves every statistic unchanged.

Pitfalls respected (see DESIGN.md §2):

* no ``scipy.stats.kstest`` against a normal with estimated parameters; the KS
  statistic is tested with Lilliefors' null distribution instead;
* Shapiro-Wilk (and every other test, for comparability) runs on a seeded
  subsample of at most 5000 values, the range where its p-values are valid;
* effect sizes are reported beside p-values, and "not rejected" is no
  evidence: "Gaussian" needs upper confidence bounds of the distances within
  margins (an equivalence argument, :mod:`goup_probe.stats.equivalence`),
  and with large n every test rejects, so a rejected sample whose bounds are
  within the margins is "close to Gaussian";
* the standard errors of skewness and kurtosis (``skew_se``, ``kurtosis_se``)
  are delta-method SEs from the tested subsample's own moments up to order 6
  and 8 (:func:`goup_probe.stats.moments.moment_standard_errors`), valid for
  heavy tails; the null-only √(6/n), √(24/n) are kept as ``skew_se_null`` and
  ``kurtosis_se_null``;
* moments are computed after dividing by the largest magnitude (finite values
  near 1e307 give the same moments as unscaled ones); moments that could not
  be computed (power sums that overflowed on the device) give status
  ``overflow`` and no verdict, never NaN moments beside a verdict.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import InitVar, dataclass, fields
from types import MappingProxyType
from typing import Any

import numpy as np

from goup_probe import schema
from goup_probe.stats import battery
from goup_probe.stats.battery import (
    LILLIEFORS_NULL_DRAWS,
    MAX_TESTED,
    MIN_DAGOSTINO,
    Statistic,
    blom_positions,
    lilliefors_statistic,
    qq_r_critical,
    subsample_indices,
)
from goup_probe.stats.equivalence import DEFAULT_THRESHOLDS, VerdictThresholds, verdict_and_shape
from goup_probe.stats.moments import Moments, moment_standard_errors, moments
from goup_probe.stats.one_sample import (
    anderson_darling,
    dagostino_pearson_p,
    jarque_bera_p,
    lilliefors_p,
    shapiro_francia_p,
    wasserstein1_to_normal,
)
from goup_probe.stats.user_statistics import check_statistics, evaluate

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LILLIEFORS_NULL_DRAWS",
    "MAX_TESTED",
    "MIN_DAGOSTINO",
    "MIN_TESTED",
    "Moments",
    "NormalityResult",
    "Statistic",
    "VerdictThresholds",
    "anderson_darling",
    "assess_sample",
    "assess_samples",
    "blom_positions",
    "dagostino_pearson_p",
    "jarque_bera_p",
    "lilliefors_p",
    "lilliefors_statistic",
    "moments",
    "normality",
    "qq_r_critical",
    "shapiro_francia_p",
    "subsample_indices",
    "verdict",
    "wasserstein1_to_normal",
]

MIN_TESTED = 8
"""Fewest values on which the tests are run at all."""
_RELATIVE_CONSTANT = 1e-12


@dataclass(frozen=True)
class NormalityResult:
    """Normality statistics of one sample; field names match the stats columns.

    Moments (``mean`` to ``max``) describe all finite values; the tests and
    effect sizes (``ks_d`` to ``w1_sigma``) describe the subsample of
    ``n_tested`` values. ``skew_se`` and ``kurtosis_se`` are the standard
    errors of the whole-array skewness and kurtosis, with the higher moments
    they need estimated on the subsample (delta method); ``skew_se_null`` and
    ``kurtosis_se_null`` are √(6/n) and √(24/n), valid only for normal data.
    Statistics that could not be computed are NaN, and ``status``/``reason`` say why.

    The columns of user statistics (:class:`~goup_probe.stats.battery.Statistic`)
    are in ``extra`` (column to value, NaN for an untested row or a statistic
    that failed), and :meth:`to_dict` appends them to the row;
    ``statistic_errors`` maps the name of each user statistic that failed on
    this sample to its error message. Both are read-only mappings passed to the
    constructor as keywords; they are not dataclass fields, so
    ``dataclasses.asdict`` and equality see the built-in columns only.
    """

    numel: int
    n_tested: int
    nonfinite: int
    mean: float
    std: float
    skew: float
    skew_se: float
    skew_se_null: float
    excess_kurtosis: float
    kurtosis_se: float
    kurtosis_se_null: float
    min: float
    max: float
    ks_d: float
    lilliefors_p: float
    lilliefors_p_floor: float
    shapiro_w: float
    shapiro_p: float
    anderson_a2: float
    anderson_p: float
    dagostino_p: float
    jarque_bera_p: float
    qq_r: float
    qq_r_crit05: float
    shapiro_francia_p: float
    w1_sigma: float
    w1_se: float
    l_skew: float
    l_skew_se: float
    l_kurt: float
    l_kurt_se: float
    distinct_share: float
    exceed3_ratio: float
    exceed3_lo: float
    exceed3_hi: float
    exceed4_ratio: float
    exceed4_lo: float
    exceed4_hi: float
    hill_alpha: float
    hill_lo: float
    hill_hi: float
    t_nu: float
    gennorm_beta: float
    best_fit: str
    aic_gain: float
    axis: str
    status: str
    reason: str
    verdict: str
    shape: str
    extra: InitVar[Mapping[str, float] | None] = None
    statistic_errors: InitVar[Mapping[str, str] | None] = None

    def __post_init__(
        self, extra: Mapping[str, float] | None, statistic_errors: Mapping[str, str] | None
    ) -> None:
        object.__setattr__(self, "extra", MappingProxyType(dict(extra or {})))
        object.__setattr__(self, "statistic_errors", MappingProxyType(dict(statistic_errors or {})))

    def to_dict(self) -> dict[str, object]:
        """Plain dictionary, ready to become a stats row (shallow: every field is a scalar).

        The built-in columns in field order, then the columns of the user statistics (``extra``).
        """
        return {**{name: getattr(self, name) for name in _RESULT_FIELDS}, **self.extra}


_RESULT_FIELDS = tuple(f.name for f in fields(NormalityResult))
_TEST_FIELDS = battery.BUILTIN_COLUMNS


def _cell(name: str, value: object) -> float | str:
    """One battery value as its field holds it: text for :data:`battery.TEXT_COLUMNS`, else a float."""
    return str(value) if name in battery.TEXT_COLUMNS else float(value)  # type: ignore[arg-type]


def _as_sample(x: Any) -> np.ndarray:
    """``x`` as a flat float64 array: a torch tensor detached to the host, a masked array's unmasked values.

    Raises
    ------
    TypeError
        Naming ``x`` when it is None, text, complex or not numeric.
    """
    if x is None:
        raise TypeError("x must be an array of real numbers, got None")
    if isinstance(x, str | bytes):
        raise TypeError(f"x must be an array of real numbers, got {type(x).__name__}: {x!r:.40}")
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"x must be real; got a complex tensor ({x.dtype})")
        return x.detach().to(device="cpu", dtype=torch.float64).numpy().ravel()
    if isinstance(x, np.ma.MaskedArray):
        x = np.ma.compressed(x)
    try:
        a = np.asarray(x)
        real = a.astype(np.float64, copy=False) if a.dtype.kind in "biufO" else None
    except (TypeError, ValueError) as exc:
        raise TypeError(f"x must be an array of real numbers, got {type(x).__name__}: {exc}") from exc
    if real is None:
        raise TypeError(f"x must be an array of real numbers, got an array of dtype {a.dtype}")
    return real.ravel()


def _check_seed(seed: Any) -> int | np.random.Generator | None:
    """A seed :func:`numpy.random.default_rng` takes: an int >= 0, None or a Generator."""
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):
        raise TypeError(f"seed must be an int >= 0, None or a numpy Generator, got {type(seed).__name__}")
    if seed.__index__() < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed.__index__())


def normality(
    x: Any,
    *,
    axis: str = schema.AXIS_POOLED,
    max_tested: int = MAX_TESTED,
    seed: int | np.random.Generator | None = 0,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    statistics: Sequence[Statistic] = (),
) -> NormalityResult:
    """Test a 1-D sample for normality and measure how far from normal it is.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Real values; flattened. Non-finite values are counted and excluded. A
        torch tensor is detached and copied to the host (``requires_grad`` and
        the device do not matter); of a numpy masked array only the unmasked
        values are used (``np.ma.compressed``), and ``numel`` counts those.
    axis : str
        What the values are: ``"pooled"`` (coordinates of one tensor at one step)
        or ``"time"`` (one coordinate over time). Recorded, not used.
    max_tested : int
        Tests run on a seeded subsample of at most this many finite values
        (Shapiro-Wilk on a seeded 5000 of them when it is larger).
    seed : int, None or numpy.random.Generator
        Seed of the subsample: an int >= 0 (the same seed, the same subsample),
        a Generator to draw from, or None for fresh entropy.
    thresholds : VerdictThresholds
        Effect-size thresholds of the verdict.
    statistics : sequence of Statistic
        User statistics computed on the subsample beside the built-in battery
        (their columns in ``NormalityResult.extra``).

    Returns
    -------
    NormalityResult
        Moments of all finite values, tests and effect sizes on the subsample.

    Raises
    ------
    TypeError
        When ``x`` is None, text, complex or not numeric, ``seed``, ``max_tested``
        or ``axis`` has the wrong type, or ``thresholds`` is no VerdictThresholds.
    ValueError
        When ``seed`` is negative or ``max_tested`` below 8.

    Examples
    --------
    >>> import numpy as np, goup_probe as gp
    >>> r = gp.normality(np.random.default_rng(0).uniform(size=4000))
    >>> r.verdict, round(r.excess_kurtosis, 1)
    ('non-Gaussian', -1.2)
    """
    a = _as_sample(x)
    seed = _check_seed(seed)
    if isinstance(max_tested, bool) or not hasattr(max_tested, "__index__"):
        raise TypeError(f"max_tested must be an integer, got {type(max_tested).__name__}: {max_tested!r}")
    max_tested = int(max_tested.__index__())
    if max_tested < MIN_TESTED:
        raise ValueError(f"max_tested must be >= {MIN_TESTED}, got {max_tested}")
    if not isinstance(axis, str):
        raise TypeError(f"axis must be a str, got {type(axis).__name__}")
    if not isinstance(thresholds, VerdictThresholds):
        raise TypeError(f"thresholds must be a VerdictThresholds, got {type(thresholds).__name__}")
    full = moments(a)
    finite = a[np.isfinite(a)] if full.nonfinite else a
    sample = finite[subsample_indices(finite.size, max_tested, seed)]
    return assess_sample(full, sample, axis=axis, thresholds=thresholds, statistics=statistics)


def assess_sample(
    full: Moments,
    sample: np.ndarray,
    *,
    axis: str = schema.AXIS_POOLED,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    tested: bool = True,
    statistics: Sequence[Statistic] = (),
) -> NormalityResult:
    """Combine whole-array moments with tests on a subsample into one result.

    This is the path the probe takes: ``full`` is reduced on the device over the
    whole tensor, ``sample`` is the seeded subsample copied to the host.

    Parameters
    ----------
    full : Moments
        Moments of the whole array.
    sample : ndarray
        Subsample to test; non-finite values are dropped.
    axis : str
        Axis label recorded in the result.
    thresholds : VerdictThresholds
        Effect-size thresholds of the verdict.
    tested : bool
        When false, only the moments are reported (tests NaN, verdict "not tested").
    statistics : sequence of Statistic
        User statistics run on the finite subsample (raw units) after the
        built-in battery; their columns are NaN when the sample is not tested.
    """
    s = np.asarray(sample, dtype=np.float64).ravel()
    return assess_samples(
        [full],
        s[np.isfinite(s)][None, :],
        axis=axis,
        thresholds=thresholds,
        tested=tested,
        statistics=statistics,
    )[0]


def assess_samples(
    fulls: Sequence[Moments],
    samples: np.ndarray,
    *,
    axis: str = schema.AXIS_POOLED,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    tested: bool | Sequence[bool] = True,
    statistics: Sequence[Statistic] = (),
) -> list[NormalityResult]:
    """:func:`assess_sample` for many arrays whose finite subsamples have the same size.

    The tests run on all rows at once (:mod:`goup_probe.stats.battery`), which
    is how the probe tests the subsamples of many same-size tensors.

    Parameters
    ----------
    fulls : sequence of Moments
        Moments of each whole array.
    samples : ndarray, shape (len(fulls), n)
        Their subsamples, one per row, all values finite.
    axis, thresholds
        As for :func:`assess_sample`.
    tested : bool or sequence of bool
        As for :func:`assess_sample`, for all rows or one per row (rows of
        tested and untested quantities share one call).
    statistics : sequence of Statistic
        User statistics; a vectorised one is called once on all tested rows.

    Raises
    ------
    ValueError
        If the samples do not match ``fulls`` or hold non-finite values, or two
        user statistics share a name or a column.
    """
    return assess_sample_blocks(
        [SampleBlock(fulls, samples, tested)], axis=axis, thresholds=thresholds, statistics=statistics
    )[0]


@dataclass(frozen=True)
class SampleBlock:
    """Rows for :func:`assess_sample_blocks`: whole-array moments, same-size subsamples, tested flags."""

    fulls: Sequence[Moments]
    samples: np.ndarray
    tested: bool | Sequence[bool] = True


def assess_sample_blocks(
    blocks: Sequence[SampleBlock],
    *,
    axis: str = schema.AXIS_POOLED,
    thresholds: VerdictThresholds = DEFAULT_THRESHOLDS,
    statistics: Sequence[Statistic] = (),
) -> list[list[NormalityResult]]:
    """:func:`assess_samples` for several blocks of subsamples (each block one size), one list per block.

    Each block's tests run on it alone; the battery's shape fits run once over the
    tested rows of every block (:func:`goup_probe.stats.battery.run_batteries`), so a
    phase of a captured step with subsamples of several sizes pays their per-call cost once.
    Results are those of :func:`assess_samples` on each block, up to float rounding.
    """
    statistics = check_statistics(statistics)
    prepared = [_Block(b, axis) for b in blocks]
    testing = [b for b in prepared if b.to_test]
    tests = battery.run_batteries([b.rows_z for b in testing])
    for block, block_tests in zip(testing, tests, strict=True):
        block.finish(block_tests, statistics, thresholds)
    for block in prepared:
        block.fill_untested(statistics)
    return [block.results for block in prepared]  # type: ignore[misc]


class _Block:
    """One block's rows through :func:`assess_sample_blocks`: statuses and SEs, then the test results."""

    def __init__(self, block: SampleBlock, axis: str) -> None:
        fulls, tested = block.fulls, block.tested
        samples = np.asarray(block.samples, dtype=np.float64)
        if samples.ndim != 2 or len(samples) != len(fulls):
            raise ValueError(f"samples must have one row per Moments, got shape {samples.shape}")
        row_tested = [bool(tested)] * len(fulls) if isinstance(tested, bool) else [bool(t) for t in tested]
        if len(row_tested) != len(fulls):
            raise ValueError(
                f"tested must be a bool or one bool per row, got {len(row_tested)} for {len(fulls)}"
            )
        if not np.isfinite(samples).all():
            raise ValueError("assess_samples needs finite subsamples; use assess_sample for the others")
        self.fulls, self.samples, self.axis = fulls, samples, axis
        self.statuses = [_degenerate_status(full, samples[i]) for i, full in enumerate(fulls)]
        usable = [i for i, (status, _) in enumerate(self.statuses) if status is None]
        z = battery.standardise(samples[usable]) if usable else np.empty((0, samples.shape[1]))
        self.ses: dict[int, tuple[float, float]] = {}
        if usable:
            counts = np.array([fulls[i].n_finite for i in usable], dtype=np.float64)
            self.ses = dict(zip(usable, zip(*moment_standard_errors(z, counts), strict=True), strict=True))
        self.to_test = [i for i in usable if row_tested[i]]
        position = {i: k for k, i in enumerate(usable)}
        self.rows_z = z if len(self.to_test) == len(usable) else z[[position[i] for i in self.to_test]]
        self.untested_reason = {
            i: "moments only (quantity not in tested)" for i in usable if not row_tested[i]
        }
        self.results: list[NormalityResult | None] = [None] * len(fulls)

    def finish(
        self, tests: Mapping[str, np.ndarray], statistics: Sequence[Statistic], thresholds: VerdictThresholds
    ) -> None:
        """The results of the tested rows, from the battery's columns."""
        tested_rows = self.samples[self.to_test]
        extra, errors = evaluate(statistics, tested_rows) if statistics else ({}, None)
        n = self.samples.shape[1]
        for row, i in enumerate(self.to_test):
            full = self.fulls[i]
            values = {name: _cell(name, tests[name][row]) for name in _TEST_FIELDS}
            status = schema.STATUS_NONFINITE_EXCLUDED if full.nonfinite else schema.STATUS_OK
            reason = f"{full.nonfinite} non-finite values excluded" if full.nonfinite else ""
            fields_ = {
                **_base_fields(full, n, self.axis, self.ses[i]),
                **values,
                "status": status,
                "reason": reason,
            }
            verdict_, shape = verdict_and_shape(fields_, thresholds)
            self.results[i] = NormalityResult(
                **fields_,
                verdict=verdict_,
                shape=shape,
                extra={name: float(column[row]) for name, column in extra.items()},
                statistic_errors=errors[row] if errors else None,
            )

    def fill_untested(self, statistics: Sequence[Statistic]) -> None:
        """The results of the rows not tested: moments only, or the reason they cannot be."""
        nan_tests = {name: "" if name in battery.TEXT_COLUMNS else float("nan") for name in _TEST_FIELDS}
        nan_extra = dict.fromkeys((c for s in statistics for c in s.columns), float("nan"))
        for i, full in enumerate(self.fulls):
            if self.results[i] is not None:
                continue
            status, reason = self.statuses[i]
            if status is None:
                status, reason = schema.STATUS_OK, self.untested_reason[i]
            self.results[i] = NormalityResult(
                **_base_fields(full, self.samples.shape[1], self.axis, self.ses.get(i)),
                **nan_tests,
                status=status,
                reason=reason,
                verdict=_NOT_TESTED,
                shape="",
                extra=nan_extra,
            )


_NOT_TESTED = schema.VERDICT_NOT_TESTED


def _base_fields(
    full: Moments, n_tested: int, axis: str, ses: tuple[float, float] | None
) -> dict[str, object]:
    """The moment fields of a result (whole array), their SEs and the size of its tested subsample.

    ``ses`` are the data-valid SEs of skewness and kurtosis (None: not computable, NaN).
    """
    n_fin = full.n_finite
    overflow = _moments_overflowed(full)
    nan = float("nan")
    skew_se, kurtosis_se = (nan, nan) if ses is None or overflow else (float(ses[0]), float(ses[1]))
    return {
        "numel": int(full.numel),
        "n_tested": int(n_tested),
        "nonfinite": int(full.nonfinite),
        "mean": nan if overflow else full.mean,
        "std": nan if overflow else full.std,
        "skew": nan if overflow else full.skew,
        "skew_se": skew_se,
        "skew_se_null": math.sqrt(6.0 / n_fin) if n_fin > 0 else nan,
        "excess_kurtosis": nan if overflow else full.excess_kurtosis,
        "kurtosis_se": kurtosis_se,
        "kurtosis_se_null": math.sqrt(24.0 / n_fin) if n_fin > 0 else nan,
        "min": full.min,
        "max": full.max,
        "axis": axis,
    }


def _moments_overflowed(full: Moments) -> bool:
    """Whether moments of finite values came out non-finite (power sums beyond float64's range)."""
    if full.n_finite < 2:
        return False
    values = (full.mean, full.std, full.skew, full.excess_kurtosis)
    if full.std == 0:  # constant: skewness and kurtosis are undefined (NaN), not overflowed
        values = (full.mean,)
    return not all(math.isfinite(v) for v in values)


def _degenerate_status(full: Moments, sample: np.ndarray) -> tuple[str | None, str]:
    if full.numel == 0:
        return schema.STATUS_TOO_FEW, "empty tensor"
    if full.n_finite == 0:
        return schema.STATUS_ALL_NONFINITE, f"all {full.numel} values are NaN/Inf"
    if full.n_finite < 2:
        return schema.STATUS_TOO_FEW, "a single value: no spread to test"
    if _moments_overflowed(full):
        return schema.STATUS_OVERFLOW, (
            f"moments overflowed float64 (values up to {max(abs(full.min), abs(full.max)):.3g}): their "
            "power sums are beyond its range; gp.normality() on the values rescales and computes them"
        )
    if full.std == 0 or full.std <= _RELATIVE_CONSTANT * abs(full.mean):
        return schema.STATUS_CONSTANT, f"all values equal {full.mean:.6g}"
    if sample.size < MIN_TESTED:
        return schema.STATUS_TOO_FEW, f"{sample.size} values; tests need at least {MIN_TESTED}"
    if np.ptp(sample) == 0:
        return schema.STATUS_CONSTANT, "the tested subsample is constant"
    return None, ""


def verdict(result: NormalityResult, thresholds: VerdictThresholds = DEFAULT_THRESHOLDS) -> str:
    """Verdict of a result under ``thresholds``: Gaussian, close to Gaussian, non-Gaussian, inconclusive.

    The rule is :func:`goup_probe.stats.equivalence.verdict_and_shape` (which also names the shape).
    """
    return verdict_and_shape(result.to_dict(), thresholds)[0]
