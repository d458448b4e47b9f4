"""How numbers are written in the terminal tables and the report: one place for both.

:func:`format_cell` is what :func:`goup_probe.summary.format_table` (the CLI)
and :func:`goup_probe.report.html.table` (the report) call for every cell, so a
learning rate or a p-value reads the same in both. Imports numpy only.
"""

from __future__ import annotations

import math

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
    """One table cell as text, by its column: learning rates to 4 digits, the rest as :func:`format_number`.

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
    if column in LR_COLUMNS and isinstance(value, float | np.floating) and math.isfinite(float(value)):
        return format_lr(value)
    return format_number(value, digits, nan=nan)
