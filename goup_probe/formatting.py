"""How numbers are written in the terminal tables and the report: one place for both.

:func:`format_cell` is what :func:`goup_probe.summary.format_table` (the CLI)
and :func:`goup_probe.report.html.table` (the report) call for every cell, so a
learning rate or a p-value reads the same in both. Imports numpy only (scipy
once a p-value at a floor is formatted, for the floors' values).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

LR_DIGITS = 4
"""Significant digits of a learning rate wherever one is printed."""

LR_COLUMNS = frozenset({"lr"})
"""Table columns holding a learning rate."""


def format_lr(value: object) -> str:
    """A learning rate to :data:`LR_DIGITS` significant digits (``1.2e-04``-style noise removed).

    Parameters
    ----------
    value : float or str
        The learning rate; anything that is not a number is returned as text.

    Returns
    -------
    str
        E.g. ``"0.00012"`` for ``0.00011999999999999988``.

    Examples
    --------
    >>> format_lr(0.00011999999999999988)
    '0.00012'
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return str(value)
    return f"{float(value):.{LR_DIGITS}g}"


UNDERFLOW_BOUND = 1e-300
"""Shown as ``<1e-300`` for an analytic p-value of exactly 0: the double underflowed (true p < 5e-324)."""


@lru_cache(maxsize=1)
def p_floors() -> dict[str, tuple[float, str]]:
    """Per p-value column, the smallest value it can take and the bound shown at or below it.

    ``lilliefors_p`` is a Monte Carlo p-value (1 + #exceed)/(draws + 1): its
    floor 1/(draws + 1) means "no null draw was as extreme", i.e. p below about
    that. ``anderson_p`` is 0 beyond the end of Stephens' formulas (modified
    A² > 13): p below the formula's value there. Other p-values are 0 only by
    underflow. Imports :mod:`goup_probe.stats.normal_tests` (scipy) on first use.
    """
    from goup_probe.stats.normal_tests import LILLIEFORS_NULL_DRAWS, anderson_darling_p

    lilliefors = 1.0 / (LILLIEFORS_NULL_DRAWS + 1)
    anderson_end = float(anderson_darling_p(np.array([13.0]))[0])
    return {
        "lilliefors_p": (lilliefors, f"<{_round_up(lilliefors)}"),
        "anderson_p": (0.0, f"<{_round_up(anderson_end)}"),
    }


def _round_up(value: float) -> str:
    """``value`` rounded up to one significant digit (so that ``<`` it stays true)."""
    exponent = math.floor(math.log10(value))
    mantissa = math.ceil(round(value / 10.0**exponent, 9))
    return f"{mantissa * 10.0**exponent:.1g}"


def is_p_column(column: str) -> bool:
    """Whether a column holds p-values: ``*_p`` (``lilliefors_p``, ``shapiro_p``, ...) or ``p_value``."""
    return column.endswith("_p") or column == "p_value"


def format_p(column: str, value: float, digits: int = 3) -> str:
    """A p-value as text, as a bound where the number is a floor rather than a value.

    Parameters
    ----------
    column : str
        Its column (decides the floor: see :func:`p_floors`).
    value : float
        The p-value (finite).
    digits : int
        Significant digits otherwise.

    Returns
    -------
    str
        ``"<0.0005"`` for a Lilliefors p-value at its Monte Carlo floor 1/2001,
        ``"<5e-31"`` for an Anderson-Darling p-value of 0, ``"<1e-300"`` for any
        other p-value of exactly 0, else the number.

    Examples
    --------
    >>> format_p("lilliefors_p", 1 / 2001), format_p("jarque_bera_p", 0.0), format_p("shapiro_p", 0.01234)
    ('<0.0005', '<1e-300', '0.0123')
    """
    value = float(value)
    floor = p_floors().get(column) if value <= 1e-3 else None
    if floor is not None and value <= floor[0] * (1 + 1e-9):
        return floor[1]
    if value == 0.0:
        return f"<{UNDERFLOW_BOUND:g}"
    return f"{value:.{digits}g}"


def format_number(value: object, digits: int = 3, *, nan: str = "nan") -> str:
    """A value as short text: floats to ``digits`` significant digits, lists item by item.

    Parameters
    ----------
    value : object
        Cell value.
    digits : int
        Significant digits of floats.
    nan : str
        Text of NaN and None.

    Returns
    -------
    str
    """
    if value is None:
        return nan
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(float(value)):
            return nan
        return f"{float(value):.{digits}g}"  # also writes inf as such
    if isinstance(value, list | tuple | np.ndarray):
        return ", ".join(format_number(v, digits, nan=nan) for v in value)
    return str(value)


def format_cell(column: str, value: object, digits: int = 3, *, nan: str = "nan") -> str:
    """One table cell as text, by its column: learning rates to 4 digits, p-values with bounds.

    Learning rates (:data:`LR_COLUMNS`) get :func:`format_lr`, p-values
    (:func:`is_p_column`) :func:`format_p`, everything else :func:`format_number`.

    Parameters
    ----------
    column : str
        Column name (decides the rule).
    value : object
        Cell value.
    digits : int
        Significant digits of ordinary floats.
    nan : str
        Text of NaN and None (``"nan"`` in the terminal, ``"–"`` in the report).

    Returns
    -------
    str
    """
    if isinstance(value, float | np.floating) and math.isfinite(float(value)):
        if column in LR_COLUMNS:
            return format_lr(value)
        if is_p_column(column):
            return format_p(column, float(value), digits)
    return format_number(value, digits, nan=nan)
