"""User statistics: validated as a set, then run on the tested rows without stopping the battery.

A :class:`~goup_probe.stats.battery.Statistic` a user declares runs after the
built-in battery (:func:`evaluate`); :func:`check_statistics` refuses duplicates and
clashes with the built-ins before any capture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from goup_probe.stats.battery import Statistic, _BuiltinStatistic

__all__ = ["check_statistics", "evaluate"]


def check_statistics(statistics: Sequence[Statistic] | Statistic = ()) -> tuple[Statistic, ...]:
    """Validate user statistics as a set: all :class:`Statistic`, distinct names and columns.

    Parameters
    ----------
    statistics : sequence of Statistic, or one Statistic
        User statistics (the built-ins always run and may not be repeated).

    Returns
    -------
    tuple of Statistic
        The statistics, in order.

    Raises
    ------
    TypeError
        If an item is not a :class:`Statistic`.
    ValueError
        If an item is a built-in statistic, or two share a name or a column.
    """
    items = (statistics,) if isinstance(statistics, Statistic) else tuple(statistics)
    names: set[str] = set()
    columns: dict[str, str] = {}
    for statistic in items:
        if not isinstance(statistic, Statistic):
            raise TypeError(f"statistics must be Statistic objects, got {type(statistic).__name__}")
        if isinstance(statistic, _BuiltinStatistic):
            raise ValueError(f"statistic {statistic.name!r} is built in: the battery always computes it")
        if statistic.name in names:
            raise ValueError(f"two statistics are named {statistic.name!r}")
        names.add(statistic.name)
        for column in statistic.columns:
            if column in columns:
                raise ValueError(
                    f"column {column!r} is declared by statistics {columns[column]!r} and {statistic.name!r}"
                )
            columns[column] = statistic.name
    return items


def evaluate(
    statistics: Sequence[Statistic], samples: np.ndarray
) -> tuple[dict[str, np.ndarray], list[dict[str, str]]]:
    """User statistics on raw rows; a statistic that fails gives NaN, never an exception.

    Parameters
    ----------
    statistics : sequence of Statistic
        Validated user statistics (see :func:`check_statistics`).
    samples : ndarray, shape (m, n)
        Same-size samples, raw units, finite float64 values.

    Returns
    -------
    values : dict of str to ndarray
        One float64 array of shape (m,) per declared column, NaN where the statistic failed.
    errors : list of dict
        Per row, statistic name to the error message, for the statistics that failed on it.
    """
    rows = np.array(samples, dtype=np.float64)  # a copy no statistic can change for the next one
    rows.setflags(write=False)
    m = len(rows)
    values: dict[str, np.ndarray] = {}
    errors: list[dict[str, str]] = [{} for _ in range(m)]
    for statistic in statistics:
        columns = {c: np.full(m, np.nan) for c in statistic.columns}
        if statistic.vectorised:
            try:
                got = _checked(statistic, statistic.fn(rows), (m,))
            except Exception as exc:  # a user statistic's failure must not stop the battery
                for row_errors in errors:
                    row_errors[statistic.name] = _message(exc)
            else:
                columns = got
        else:
            for i in range(m):
                try:
                    got = _checked(statistic, statistic.fn(rows[i]), ())
                except Exception as exc:  # as above, one row at a time
                    errors[i][statistic.name] = _message(exc)
                    continue
                for column, value in got.items():
                    columns[column][i] = value
        values.update(columns)
    return values, errors


def _checked(statistic: Statistic, result: object, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """``result`` as float64 arrays of ``shape``, one per declared column; raises ValueError otherwise."""
    if not isinstance(result, Mapping):
        raise TypeError(f"returned {type(result).__name__}, not a mapping of column to values")
    missing = [c for c in statistic.columns if c not in result]
    undeclared = [str(c) for c in result if c not in statistic.columns]
    if missing or undeclared:
        raise ValueError(f"returned columns {sorted(map(str, result))}, declared {list(statistic.columns)}")
    out = {}
    for column in statistic.columns:
        value = np.asarray(result[column], dtype=np.float64)
        if value.shape != shape:
            raise ValueError(f"column {column!r} has shape {value.shape}, expected {shape}")
        out[column] = value
    return out


def _message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
