"""The normality test battery: each statistic declared once, run together on rows of same-size samples.

Each statistic of the battery is declared once, as a :class:`Statistic` with
its output columns and their descriptions (:data:`BUILTIN_STATISTICS`); the
``stats`` table's schema is derived from these declarations
(:func:`goup_probe.schema.stats_schema`). A user-defined :class:`Statistic` is
declared the same way and runs after the built-ins (:func:`goup_probe.stats.user_statistics.evaluate`).

The tests themselves, vectorised over rows, are in
:mod:`goup_probe.stats.normal_tests` (their public names are re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from types import MappingProxyType

import numpy as np

from goup_probe import schema
from goup_probe.stats.equivalence import distinct_share, w1_standard_error
from goup_probe.stats.lmoments import l_moment_ratios
from goup_probe.stats.normal_tests import (
    LILLIEFORS_MAX_NULL_DRAWS,
    LILLIEFORS_NULL_DRAWS,
    MAX_TESTED,
    MIN_DAGOSTINO,
    anderson_darling,
    anderson_darling_p,
    blom_positions,
    dagostino_pearson_p,
    dallal_wilkinson_p,
    fitted_cdf,
    jarque_bera_p,
    ks_distance,
    lilliefors_null,
    lilliefors_null_draws,
    lilliefors_p,
    lilliefors_p_and_floor,
    lilliefors_statistic,
    probability_plot_r,
    qq_r_critical,
    shapiro_francia_p,
    shapiro_wilk,
    skew_kurtosis,
    standardise,
    subsample_indices,
    wasserstein1_to_normal,
)
from goup_probe.stats.normal_tests import _shapiro as _shapiro  # tests compare it with scipy's own
from goup_probe.stats.tail_effects import compare_fits_blocks, exceedance_ratio, hill_rows

__all__ = [
    "BUILTIN_COLUMNS",
    "BUILTIN_STATISTICS",
    "LILLIEFORS_MAX_NULL_DRAWS",
    "LILLIEFORS_NULL_DRAWS",
    "MAX_TESTED",
    "MIN_DAGOSTINO",
    "TEXT_COLUMNS",
    "Statistic",
    "anderson_darling",
    "anderson_darling_p",
    "blom_positions",
    "dagostino_pearson_p",
    "dallal_wilkinson_p",
    "fitted_cdf",
    "jarque_bera_p",
    "ks_distance",
    "lilliefors_null",
    "lilliefors_null_draws",
    "lilliefors_p",
    "lilliefors_p_and_floor",
    "lilliefors_statistic",
    "probability_plot_r",
    "qq_r_critical",
    "run_batteries",
    "run_battery",
    "shapiro_francia_p",
    "shapiro_wilk",
    "skew_kurtosis",
    "standardise",
    "subsample_indices",
    "wasserstein1_to_normal",
]


_BUILTIN_NAMES: frozenset[str] = frozenset()

_BUILTIN_COLUMNS: frozenset[str] = frozenset()
"""Names and columns of :data:`BUILTIN_STATISTICS` (empty while they are being declared)."""


def _table_columns() -> frozenset[str]:
    """Columns of the stats table that are not statistics: moments, norms, verdict, GO-UP shadow."""
    return frozenset(
        name
        for name, _, _ in (
            *schema.STATS_BASE_FIELDS,
            *schema.STATS_VERDICT_FIELDS,
            *schema.STATS_SHADOW_FIELDS,
        )
    )


@dataclass(frozen=True, eq=False)
class Statistic:
    """One statistic of the test battery, declared with its output columns.

    Every column is a float64 column of the ``stats`` table; the Parquet schema
    is derived from the declared columns (:func:`goup_probe.schema.stats_schema`).
    Built-in statistics are listed in :data:`BUILTIN_STATISTICS`; a user-defined
    one is passed as ``statistics=`` to :func:`goup_probe.normality`,
    :func:`~goup_probe.stats.normality.assess_sample` or
    :func:`~goup_probe.stats.normality.assess_samples` (and to the probe), and
    its columns follow the built-in ones. Statistics compare by identity.

    Parameters
    ----------
    name : str
        Identifier of the statistic (used in error messages), e.g. ``"tail_share"``.
    columns : Mapping[str, str]
        Output column name (an identifier) to a one-line description (schema and
        glossary). A column may not clash with a built-in column of the stats table.
    fn : callable
        With ``vectorised=True``: takes a read-only float64 array of shape
        ``(m, n)``, ``m`` same-size samples in raw units, finite values only
        (``n >= 8``), and returns a mapping from each declared column to an array
        of shape ``(m,)``. With ``vectorised=False``: takes one 1-D sample and
        returns a mapping from each column to a scalar; the battery calls it
        once per sample.
    vectorised : bool
        Whether ``fn`` takes all samples of a size at once (default) or one at a time.

    Raises
    ------
    ValueError
        If the name or a column is not an identifier, no column is declared, a
        description is empty or spans lines, or a name or column clashes with a
        built-in one (the message names it).
    TypeError
        If ``fn`` is not callable.

    Notes
    -----
    An exception raised by ``fn`` at run time, or a result without exactly the
    declared columns, does not stop the battery: the statistic's columns are
    NaN in the rows it failed on, and the message is kept in
    ``NormalityResult.statistic_errors`` (statistic name to message).

    Examples
    --------
    >>> import numpy as np, goup_probe as gp
    >>> def tail_share(x):
    ...     d = np.abs(x - x.mean(axis=1, keepdims=True))
    ...     return {"tail_share": np.mean(d > 3 * x.std(axis=1, keepdims=True), axis=1)}
    >>> tails = gp.Statistic("tail_share", {"tail_share": "share of values beyond 3 sigma"}, tail_share)
    >>> r = gp.normality(np.random.default_rng(0).laplace(size=4000), statistics=[tails])
    >>> round(r.extra["tail_share"], 3)
    0.014
    """

    name: str
    columns: Mapping[str, str]
    fn: Callable[[np.ndarray], Mapping[str, np.ndarray | float]]
    vectorised: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a statistic's name must be a non-empty identifier, got {self.name!r}")
        if self.name in _BUILTIN_NAMES:
            raise ValueError(f"statistic name {self.name!r} clashes with a built-in statistic")
        if not callable(self.fn):
            raise TypeError(f"statistic {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if not isinstance(self.columns, Mapping) or not self.columns:
            raise ValueError(
                f"statistic {self.name!r} must declare at least one column (name -> description)"
            )
        reserved = _table_columns() | _BUILTIN_COLUMNS
        for column, description in self.columns.items():
            if not isinstance(column, str) or not column.isidentifier():
                raise ValueError(f"statistic {self.name!r}: column {column!r} is not an identifier")
            if column in reserved:
                raise ValueError(
                    f"statistic {self.name!r}: column {column!r} clashes with a built-in stats column"
                )
            if not isinstance(description, str) or not description.strip() or "\n" in description:
                raise ValueError(f"statistic {self.name!r}: column {column!r} needs a one-line description")
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        object.__setattr__(self, "vectorised", bool(self.vectorised))


class _Prepared:
    """Standardised rows and the intermediates the built-in statistics share, each computed once."""

    def __init__(self, z: np.ndarray) -> None:
        self.z = z
        self.n = z.shape[1]

    @cached_property
    def ordered(self) -> np.ndarray:
        return np.sort(self.z, axis=1)

    @cached_property
    def cdf(self) -> np.ndarray:
        return fitted_cdf(self.ordered)

    @cached_property
    def ks_d(self) -> np.ndarray:
        return ks_distance(self.cdf)

    @cached_property
    def skew_kurtosis(self) -> tuple[np.ndarray, np.ndarray]:
        return skew_kurtosis(self.z)

    @cached_property
    def qq_r(self) -> np.ndarray:
        return probability_plot_r(self.ordered)


Compute = Callable[[_Prepared], Mapping[str, np.ndarray]]


ComputeBlocks = Callable[[Sequence[_Prepared]], list[Mapping[str, np.ndarray]]]


@dataclass(frozen=True, eq=False)
class _BuiltinStatistic(Statistic):
    """A built-in statistic: ``compute`` reads the shared intermediates, ``fn`` standardises first.

    ``compute_blocks``, when set, computes it for several blocks of rows (each of one size) in
    one call, which :func:`run_batteries` uses; ``compute`` is then its one-block case.
    """

    compute: Compute | None = field(default=None, repr=False)
    compute_blocks: ComputeBlocks | None = field(default=None, repr=False)


def _on_raw(compute: Compute, samples: np.ndarray) -> dict[str, np.ndarray]:
    """A built-in statistic on raw rows (its public ``fn``): standardise, then compute."""
    return dict(compute(_Prepared(standardise(np.asarray(samples, dtype=np.float64)))))


def _builtin(name: str, columns: Mapping[str, str], compute: Compute) -> _BuiltinStatistic:
    return _BuiltinStatistic(name, columns, partial(_on_raw, compute), compute=compute)


def _builtin_blocks(
    name: str, columns: Mapping[str, str], compute_blocks: ComputeBlocks
) -> _BuiltinStatistic:
    def compute(p: _Prepared) -> Mapping[str, np.ndarray]:
        return compute_blocks([p])[0]

    return _BuiltinStatistic(
        name, columns, partial(_on_raw, compute), compute=compute, compute_blocks=compute_blocks
    )


def _lilliefors(p: _Prepared) -> dict[str, np.ndarray]:
    pvalue, floor = lilliefors_p_and_floor(p.ks_d, p.n)
    return {"ks_d": p.ks_d, "lilliefors_p": pvalue, "lilliefors_p_floor": np.full(len(p.z), floor)}


def _shapiro_wilk(p: _Prepared) -> dict[str, np.ndarray]:
    w, pvalue = shapiro_wilk(p.z, p.ordered)
    return {"shapiro_w": w, "shapiro_p": pvalue}


def _anderson_darling(p: _Prepared) -> dict[str, np.ndarray]:
    a2, pvalue = anderson_darling(p.ordered, p.cdf)
    return {"anderson_a2": a2, "anderson_p": pvalue}


def _dagostino(p: _Prepared) -> dict[str, np.ndarray]:
    if p.n < MIN_DAGOSTINO:
        return {"dagostino_p": np.full(len(p.z), np.nan)}
    return {"dagostino_p": dagostino_pearson_p(*p.skew_kurtosis, p.n)}


def _jarque_bera(p: _Prepared) -> dict[str, np.ndarray]:
    return {"jarque_bera_p": jarque_bera_p(*p.skew_kurtosis, p.n)}


def _qq(p: _Prepared) -> dict[str, np.ndarray]:
    return {"qq_r": p.qq_r, "qq_r_crit05": np.full(len(p.z), qq_r_critical(p.n, 0.05))}


def _shapiro_francia(p: _Prepared) -> dict[str, np.ndarray]:
    return {"shapiro_francia_p": shapiro_francia_p(p.qq_r, p.n)}


def _wasserstein1(p: _Prepared) -> dict[str, np.ndarray]:
    return {"w1_sigma": wasserstein1_to_normal(p.ordered), "w1_se": w1_standard_error(p.ordered)}


def _l_moments(p: _Prepared) -> dict[str, np.ndarray]:
    r = l_moment_ratios(p.ordered)
    return {"l_skew": r.l_skew, "l_skew_se": r.l_skew_se, "l_kurt": r.l_kurt, "l_kurt_se": r.l_kurt_se}


def _lattice(p: _Prepared) -> dict[str, np.ndarray]:
    return {"distinct_share": distinct_share(p.ordered)}


def _exceedance(p: _Prepared) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for cut in (3, 4):
        r = exceedance_ratio(p.z, float(cut))
        out.update({f"exceed{cut}_ratio": r.ratio, f"exceed{cut}_lo": r.low, f"exceed{cut}_hi": r.high})
    return out


def _hill(p: _Prepared) -> dict[str, np.ndarray]:
    r = hill_rows(p.ordered)
    return {"hill_alpha": r.alpha, "hill_lo": r.low, "hill_hi": r.high}


MIN_FIT_VALUES = 100
"""Rows of fewer values get no shape fits (NaN, ``best_fit`` empty): a three-parameter fit to a
handful of values says nothing (a BatchNorm subsample of 16), and the fits' iterations are the
battery's largest fixed cost per call (≈ 1.5 ms, a ResNet-20 captured step ≈ 28 ms of them).
The same 100 values below which the report ranks no tensor and hatches its heatmap row."""


def _shape_fits(blocks: Sequence[_Prepared]) -> list[dict[str, np.ndarray]]:
    """The fits of every block of at least :data:`MIN_FIT_VALUES` values, in one packed call."""
    fitted = [p for p in blocks if p.n >= MIN_FIT_VALUES]
    fitted_blocks = compare_fits_blocks([(p.z, p.ordered) for p in fitted]) if fitted else []
    fits = dict(zip(map(id, fitted), fitted_blocks, strict=True))
    out = []
    for p in blocks:
        f = fits.get(id(p))
        if f is None:
            nan = np.full(len(p.z), np.nan)
            out.append(
                {
                    "t_nu": nan,
                    "gennorm_beta": nan.copy(),
                    "best_fit": np.full(len(p.z), "", dtype=object),
                    "aic_gain": nan.copy(),
                }
            )
        else:
            out.append(
                {
                    "t_nu": f.t.nu,
                    "gennorm_beta": f.gennorm.beta,
                    "best_fit": f.best_fit,
                    "aic_gain": f.aic_gain,
                }
            )
    return out


BUILTIN_STATISTICS: tuple[Statistic, ...] = (
    _builtin(
        "lilliefors",
        {
            "ks_d": "Lilliefors KS statistic D (estimated mean and std)",
            "lilliefors_p": "Lilliefors p-value: Monte Carlo null (20000 draws for n <= 200, down to 2000 "
            "for n >= 2000); beyond every draw, Dallal-Wilkinson's tail approximation",
            "lilliefors_p_floor": "1/(draws + 1) for n_tested: a lilliefors_p at or below it is beyond every "
            "null draw, where the simulation bounds p by this and the value is Dallal-Wilkinson's",
        },
        _lilliefors,
    ),
    _builtin(
        "shapiro_wilk",
        {"shapiro_w": "Shapiro-Wilk W on at most 5000 values", "shapiro_p": "Shapiro-Wilk p-value"},
        _shapiro_wilk,
    ),
    _builtin(
        "anderson_darling",
        {
            "anderson_a2": "Anderson-Darling A^2 (estimated parameters)",
            "anderson_p": "Anderson-Darling p-value (Stephens' case 3)",
        },
        _anderson_darling,
    ),
    _builtin("dagostino_pearson", {"dagostino_p": "D'Agostino-Pearson K^2 p-value (n >= 20)"}, _dagostino),
    _builtin("jarque_bera", {"jarque_bera_p": "Jarque-Bera p-value (asymptotic)"}, _jarque_bera),
    _builtin(
        "qq_correlation",
        {
            "qq_r": "normal probability-plot correlation (Blom positions)",
            "qq_r_crit05": "5% null critical value of qq_r for n_tested",
        },
        _qq,
    ),
    _builtin("shapiro_francia", {"shapiro_francia_p": "p-value of qq_r^2 (Royston 1993)"}, _shapiro_francia),
    _builtin(
        "wasserstein1",
        {
            "w1_sigma": "Wasserstein-1 distance to the fitted normal, in std units",
            "w1_se": "standard error of w1_sigma: influence function on the data, combined with the "
            "normal-sample spread 0.19/sqrt(n)",
        },
        _wasserstein1,
    ),
    _builtin(
        "l_moments",
        {
            "l_skew": "L-skewness tau3 = lambda3/lambda2 (0 for a normal; robust to heavy tails)",
            "l_skew_se": "standard error of l_skew valid for the data (influence function)",
            "l_kurt": "L-kurtosis tau4 = lambda4/lambda2 (0.1226 for a normal, 0 uniform, 0.236 Laplace)",
            "l_kurt_se": "standard error of l_kurt valid for the data (influence function)",
        },
        _l_moments,
    ),
    _builtin(
        "lattice",
        {"distinct_share": "distinct values among the tested ones, over n_tested (1 for continuous data)"},
        _lattice,
    ),
    _builtin(
        "exceedance",
        {
            "exceed3_ratio": "share of |z| > 3 (z by the tested values' mean and std) over the normal's "
            "2*Phi(-3) = 0.0027: 1 for a normal, above 1 for heavy tails",
            "exceed3_lo": "lower end of the 95% Clopper-Pearson interval of exceed3_ratio (binomial count; "
            "ignores that mean and std were estimated)",
            "exceed3_hi": "upper end of the 95% Clopper-Pearson interval of exceed3_ratio",
            "exceed4_ratio": "share of |z| > 4 over the normal's 2*Phi(-4) = 6.3e-5 (a normal row of 5000 "
            "expects 0.3 such values)",
            "exceed4_lo": "lower end of the 95% Clopper-Pearson interval of exceed4_ratio",
            "exceed4_hi": "upper end of the 95% Clopper-Pearson interval of exceed4_ratio",
        },
        _exceedance,
    ),
    _builtin(
        "hill",
        {
            "hill_alpha": "Hill tail index of |z| at k = floor(sqrt(n_tested)) upper order statistics "
            "(Student-t(nu) gives about nu for small nu; a normal about 8 at n = 5000)",
            "hill_lo": "lower end of hill_alpha's 95% Gamma(k) interval (exact for a Pareto tail; "
            "sampling error at that k only, not the bias of a non-Pareto tail)",
            "hill_hi": "upper end of hill_alpha's 95% Gamma(k) interval",
        },
        _hill,
    ),
    _builtin_blocks(
        "shape_fits",
        {
            "t_nu": "degrees of freedom nu of the Student-t fitted by maximum likelihood (location, scale, "
            "nu jointly); inf when the normal fits at least as well or nu >= 1000",
            "gennorm_beta": "shape beta of the generalised normal fitted by maximum likelihood at the t fit's"
            " location (2 normal, 1 Laplace, below 2 heavier tails; capped at 0.2 and 20)",
            "best_fit": "family of least AIC among normal, t, laplace, gennorm (normal data: 'normal' in "
            "about 82% of rows, since a shape parameter wins when its likelihood ratio exceeds 2)",
            "aic_gain": "AIC(normal) - AIC(best_fit), >= 0: 0 when the normal is best, above 10 the normal "
            "is clearly worse. The four shape-fit columns are NaN (best_fit empty) on fewer than 100 values",
        },
        _shape_fits,
    ),
)
"""The built-in statistics of the battery, in the order of their columns in the stats table."""

BUILTIN_COLUMNS: tuple[str, ...] = tuple(c for s in BUILTIN_STATISTICS for c in s.columns)
"""Columns of the built-in statistics, in table order."""

TEXT_COLUMNS: frozenset[str] = frozenset({"best_fit"})
"""Built-in columns holding text (string columns of the stats table, "" where untested); every other
statistic column, and every column of a user statistic, is float64."""

_BUILTIN_NAMES = frozenset(s.name for s in BUILTIN_STATISTICS)

_BUILTIN_COLUMNS = frozenset(BUILTIN_COLUMNS)

assert len(_BUILTIN_COLUMNS) == len(BUILTIN_COLUMNS), "two built-in statistics declare the same column"


def run_battery(z: np.ndarray) -> dict[str, np.ndarray]:
    """Every built-in test and effect size on standardised rows ``z`` (shape (k, n), n >= 8).

    The statistics share the sorted rows, the fitted CDF, the moments and the
    QQ correlation, each computed once. Returns one array of length k per
    column of :data:`BUILTIN_COLUMNS`.
    """
    return run_batteries([z])[0]


def run_batteries(blocks: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """:func:`run_battery` on several blocks of standardised rows, each block of one row length.

    Each block's tests run on it alone (their null distributions depend on n);
    the shape fits run once over the rows of all blocks (their per-call cost is
    the largest of the battery's: a ResNet-20 step tests seven sizes).
    """
    if not blocks:
        return []
    prepared = [_Prepared(z) for z in blocks]
    outs: list[dict[str, np.ndarray]] = [{} for _ in prepared]
    for statistic in BUILTIN_STATISTICS:
        if statistic.compute_blocks is not None:  # type: ignore[attr-defined]
            results = statistic.compute_blocks(prepared)  # type: ignore[attr-defined]
        else:
            results = [statistic.compute(p) for p in prepared]  # type: ignore[attr-defined]
        for out, result in zip(outs, results, strict=True):
            out.update(result)
    return outs
