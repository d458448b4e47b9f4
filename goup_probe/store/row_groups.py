"""Which row groups of a Parquet part a row filter keeps whole, judged from their footer statistics.

A row group whose statistics prove that every row passes the filter is read
without it: the filter kernel copies every column it keeps, even when it keeps
all rows (a compacted run's trajectories hold a tensor's rows together, so a
read of some tensors keeps whole row groups; filtering them cost 60% more than
decoding them).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import pyarrow.parquet as pq

_BOUNDS: dict[str, Callable[[Any, Any, Any], bool]] = {
    "=": lambda lo, hi, v: lo == hi == v,
    "==": lambda lo, hi, v: lo == hi == v,
    "in": lambda lo, hi, v: lo == hi and lo in set(v),
    ">=": lambda lo, hi, v: operator.ge(lo, v),
    ">": lambda lo, hi, v: operator.gt(lo, v),
    "<=": lambda lo, hi, v: operator.le(hi, v),
    "<": lambda lo, hi, v: operator.lt(hi, v),
}
"""Per operator: whether a column whose values all lie in [lo, hi] passes ``(column, op, v)`` everywhere."""


_UNORDERED = frozenset({"FLOAT", "DOUBLE"})
"""Physical types whose statistics leave NaN out: a row group of them is never judged whole."""


def passes_whole(metadata: pq.RowGroupMetaData, terms: object) -> bool:
    """Whether every row of a row group passes ``terms``, as its footer statistics prove.

    Parameters
    ----------
    metadata : pyarrow.parquet.RowGroupMetaData
        The row group's footer entry.
    terms : object
        A row filter. Only a flat conjunction of ``(column, op, value)`` tuples
        over top-level columns is judged (``=``, ``==``, ``in``, ``<``, ``<=``,
        ``>``, ``>=``); any other filter (a disjunction, an Expression) is not.

    Returns
    -------
    bool
        True only when each term holds for the column's minimum and maximum and the
        column has no nulls there; False when a statistic is missing, a value
        cannot be compared with it, or the column is floating point (a NaN fails
        every comparison but shows in no statistic): the row group is then
        filtered as it is read.
    """
    if (
        not isinstance(terms, list)
        or not terms
        or not all(isinstance(t, tuple) and len(t) == 3 for t in terms)
    ):
        return False
    columns = {metadata.column(i).path_in_schema: metadata.column(i) for i in range(metadata.num_columns)}
    for name, op, value in terms:
        column, bound = columns.get(name), _BOUNDS.get(op)
        stats = None if column is None else column.statistics
        if bound is None or stats is None or not stats.has_min_max or stats.null_count != 0:
            return False
        if column.physical_type in _UNORDERED:  # NaN is in neither min, max nor the null count
            return False
        try:
            if not bound(stats.min, stats.max, value):
                return False
        except TypeError:  # a value of another type than the column's
            return False
    return True
