"""Float list columns (stored subsamples, tracer values) as pandas: one writable buffer, a view per row.

Arrow's own conversion of a ``list<float>`` column holds the column twice at its
peak, the Arrow buffers and the numpy copy, and took 5.5 s for the 328 000
rows × 1000 values of a 5000-step BERT-sized run's ``samples`` (1.4 GB as
float32; 3.4 GB peak with the read). Here the values go chunk by chunk into one
float buffer of the column's value type, each Arrow chunk released once copied,
and every row becomes a view of its slice of that buffer: what Arrow's
conversion gives (writable arrays sharing one base, ``None`` for a null list,
NaN for a null value), at the cost of one copy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from goup_probe.memory import release_free_memory

RELEASE_BYTES = 128 << 20
"""Arrow memory freed by copied chunks between two returns of it to the system."""

_FLOAT_VALUES = {pa.float32(): np.float32, pa.float64(): np.float64}


def is_float_list(kind: pa.DataType) -> bool:
    """Whether a column of type ``kind`` is a list (or large list) of float32 or float64 values."""
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and kind.value_type in _FLOAT_VALUES


def float_lists_to_series(name: str, chunks: list[pa.Array]) -> pd.Series:
    """A float list column as an object Series of arrays; ``chunks`` is emptied as it is copied.

    Parameters
    ----------
    name : str
        The Series' name.
    chunks : list of pyarrow.Array
        The column's chunks (:func:`is_float_list` of their type), each released
        (removed from the list) as soon as its values are in the buffer: hold no
        other reference to them for the memory to go back.

    Returns
    -------
    Series
        Object dtype: per row a writable 1-D array of the value type (views of
        one buffer, as Arrow's conversion gives), ``None`` where the list is null.
    """
    if not chunks:
        return pd.Series(np.empty(0, dtype=object), name=name)
    dtype = _FLOAT_VALUES[chunks[0].type.value_type]
    rows = sum(len(chunk) for chunk in chunks)
    total = sum(_value_span(chunk) for chunk in chunks)
    values = np.empty(total, dtype=dtype)
    starts = np.empty(rows + 1, dtype=np.int64)
    null = np.zeros(rows, dtype=bool)
    at_row = at_value = freed = 0
    chunks.reverse()  # popped from the end, in order
    while chunks:
        chunk = chunks.pop()
        offsets = chunk.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
        span = int(offsets[-1] - offsets[0])
        # values under the chunk's own offsets (a sliced chunk shares a longer child); nulls become NaN
        child = chunk.values.slice(int(offsets[0]), span)
        values[at_value : at_value + span] = child.to_numpy(zero_copy_only=False)
        starts[at_row : at_row + len(chunk)] = at_value + offsets[:-1] - offsets[0]
        if chunk.null_count:
            null[at_row : at_row + len(chunk)] = chunk.is_null().to_numpy(zero_copy_only=False)
        at_row, at_value = at_row + len(chunk), at_value + span
        freed += chunk.nbytes
        del chunk, child
        if freed >= RELEASE_BYTES:
            release_free_memory()
            freed = 0
    starts[rows] = total
    out = np.empty(rows, dtype=object)
    for row, (start, stop) in enumerate(zip(starts[:-1].tolist(), starts[1:].tolist(), strict=True)):
        out[row] = values[start:stop]
    if null.any():
        out[null] = None
    release_free_memory()
    return pd.Series(out, name=name)


def _value_span(chunk: pa.Array) -> int:
    """Values a list chunk's rows cover (a sliced chunk covers only part of its child)."""
    if len(chunk) == 0:
        return 0
    offsets = chunk.offsets
    return int(offsets[len(chunk)].as_py()) - int(offsets[0].as_py())
