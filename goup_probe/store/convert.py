"""Arrow tables and columns as pandas DataFrames of writable columns, converted without holding them twice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from goup_probe.memory import release_free_memory
from goup_probe.store.lists import float_lists_to_series, is_float_list


def arrow_to_pandas(data: pa.Table) -> pd.DataFrame:
    """``data`` as a DataFrame of writable columns, one block per column, ``data`` consumed.

    Arrow's default conversion consolidates the columns into 2-D blocks, a
    strided copy that took 0.9–1.3 s of the 1.5–2 s of reading 10⁶ stats rows;
    one block per column (``split_blocks``) is converted in 0.1 s, and copying
    its numeric columns, which would otherwise be read-only views of Arrow
    memory, costs 0.2 s more. Only a column Arrow can hand over without a copy
    (one chunk, no nulls, a fixed-width numeric or temporal type) is copied;
    the others come out of the conversion as new arrays. The Arrow memory the
    conversion frees goes back to the system (Arrow's allocator would keep it:
    a 328 000-row ``stats`` table left 120 MB resident).

    A column of float lists (``samples.values``, the tracer values) is converted
    by :func:`~goup_probe.store.lists.float_lists_to_series`: one copy, a view
    per row, as Arrow's conversion gives, in a third of its time.

    ``data`` must not be used afterwards (its buffers are released as its
    columns are converted).
    """
    return consume_to_pandas([data])


def consume_to_pandas(held: list[pa.Table]) -> pd.DataFrame:
    """:func:`arrow_to_pandas` of the one table in ``held``, taken out of it.

    With no other reference to the table, each chunk of a float list column
    is freed as soon as it is copied, so the column is never held twice.
    """
    data = held.pop()
    order = data.column_names
    lists = [f.name for f in data.schema if is_float_list(f.type)]
    chunks = {name: data.column(name).chunks for name in lists}
    rest = data.drop_columns(lists) if lists else data
    del data
    views = [name for name, column in zip(rest.column_names, rest.columns, strict=True) if _zero_copy(column)]
    frame = rest.to_pandas(split_blocks=True, self_destruct=True)
    del rest
    for name in views:  # by name: a stored pandas index is no longer a column
        at = frame.columns.get_loc(name) if name in frame.columns else None
        if isinstance(at, int):
            frame.isetitem(at, np.array(frame.iloc[:, at].to_numpy(), copy=True))
    for name in lists:  # in column order, so each lands where the table had it
        at = sum(1 for earlier in order[: order.index(name)] if earlier in frame.columns)
        values = float_lists_to_series(name, chunks.pop(name)).to_numpy()  # by position, not index label
        frame.insert(at, name, values)
    release_free_memory()
    return frame


def column_to_pandas(name: str, column: pa.ChunkedArray) -> pd.Series:
    """One column as :func:`arrow_to_pandas` converts it in a table: the same dtype, a writable array."""
    series = pa.table({name: column}).to_pandas(split_blocks=True, self_destruct=True)[name]
    if _zero_copy(column):
        return pd.Series(np.array(series.to_numpy(), copy=True), name=name)
    return series


def _zero_copy(column: pa.ChunkedArray) -> bool:
    """Whether pandas would get ``column`` as a read-only view of Arrow memory."""
    kind = column.type
    fixed = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_temporal(kind)
    return fixed and column.num_chunks == 1 and column.null_count == 0
