"""The rows of a ``stats`` table that one quantity's analysis reads: one rule for every reader.

A tensor's statistics of one quantity at one step are pooled over the whole
tensor (``axis`` ``"pooled"``, or no ``axis`` column in older tables); rows per
axis (``"row"``, ``"col"``) describe slices of it. The plots, the report's
findings and layer selection, ``summary`` and the multiple-testing counts all
read the pooled rows through :func:`quantity_rows`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from goup_probe import schema


def quantity_rows(
    stats: pd.DataFrame, quantity: str, columns: Sequence[str] | None = None, *, tested: bool = False
) -> pd.DataFrame:
    """Rows of one quantity, pooled over the tensor (per-axis rows dropped when there is an axis).

    Parameters
    ----------
    stats : DataFrame
        A ``stats`` table (or some of its columns: ``quantity`` at least).
    quantity : str
        ``theta_minus_grad``, ``theta``, ``grad`` or ``update``.
    columns : sequence of str, optional
        Only those of them the table has: one copy of a few columns, not of every
        column of a quarter of the table (a 328 000-row table: 40 MB).
    tested : bool
        Only rows that carry test results: a tested status and a verdict other
        than ``not tested`` (needs the ``status`` and ``verdict`` columns).

    Returns
    -------
    DataFrame
        The selected rows, in table order.
    """
    keep = stats["quantity"] == quantity
    if "axis" in stats.columns:
        keep &= stats["axis"].fillna(schema.AXIS_POOLED) == schema.AXIS_POOLED
    if tested:
        keep &= stats["status"].isin(schema.TESTED_STATUSES) & (stats["verdict"] != schema.VERDICT_NOT_TESTED)
    if columns is None:
        return stats[keep]
    return stats.loc[keep, [c for c in dict.fromkeys(columns) if c in stats.columns]]
