"""How compacted parts lay out their rows: row-group sizes, and tables clustered by a column.

A reader with a row filter skips the row groups whose statistics rule it out
(:func:`~goup_probe.store.tables.read_table`). That only helps when the rows a
reader wants sit together. ``trajectories`` is written one step at a time,
every tensor at each step, so a row group of it holds every tensor and a read
of a few tensors decoded the whole table — :func:`goup_probe.validate_ou`,
which reads the tensors in batches to bound its memory, decoded it once per
batch (41 times on a 41-tensor run). Compaction therefore writes the tables of
:data:`CLUSTER_COLUMNS` *clustered*: each part (a run of consecutive rows, as
before) holds its rows grouped by that column, the groups in order of first
appearance in the table, each group's rows in their written order, and every
row group holds one value of the column only. A filter on that column then
decodes only the row groups it wants; the parts still follow each other in
step order.

Row groups are also bounded in bytes (:data:`ROW_GROUP_BYTES`), so one of
``samples`` (1000 values a row) is 4 MiB, not 32: a filtered read decodes
whole row groups, and the report draws a few dozen rows.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROW_GROUP_ROWS = 8192
"""Most rows per row group of a compacted part."""
ROW_GROUP_BYTES = 4 * 2**20
"""Decoded bytes per row group of a compacted part, at most (a row group holds at least one row)."""

CLUSTER_COLUMNS: dict[str, str] = {"trajectories": "param"}
"""Tables compacted clustered (rows grouped by the column, one value per row group): table -> column."""


def row_group_rows(nbytes: int, num_rows: int) -> int:
    """Rows per row group of ``num_rows`` rows of ``nbytes`` decoded bytes.

    :data:`ROW_GROUP_ROWS`, or fewer for wide rows, so that a row group holds
    about :data:`ROW_GROUP_BYTES` at most (and at least one row).
    """
    if num_rows <= 0:
        return ROW_GROUP_ROWS
    row_bytes = max(1, nbytes // num_rows)
    return max(1, min(ROW_GROUP_ROWS, ROW_GROUP_BYTES // row_bytes))


def cluster_column(name: str) -> str | None:
    """The column table ``name`` is clustered by when compacted, or None."""
    return CLUSTER_COLUMNS.get(name)


def is_clustered(footers: list[pq.FileMetaData], column: str) -> bool:
    """Whether every row group of these parts holds a single non-null value of ``column``.

    Decided from the footers' statistics alone (no rows read); a part without
    the column or without statistics on it is not clustered.
    """
    for footer in footers:
        names = [footer.schema.column(i).path for i in range(footer.num_columns)]
        if column not in names:
            return False
        index = names.index(column)
        for group in range(footer.num_row_groups):
            stats = footer.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max or stats.null_count != 0 or stats.min != stats.max:
                return False
    return True


def table_is_clustered(folder: str | os.PathLike[str], column: str) -> bool:
    """Whether the parts of a table folder are clustered by ``column`` (see :func:`is_clustered`)."""
    from goup_probe.store.tables import part_files

    parts = part_files(Path(folder))
    return bool(parts) and is_clustered([pq.read_metadata(p) for p in parts], column)


class ClusterOrder:
    """Values of a column numbered in order of first appearance, across the chunks of one table."""

    def __init__(self) -> None:
        self._rank: dict[object, int] = {}

    def groups(self, data: pa.Table, column: str) -> Iterator[pa.Table]:
        """The rows of ``data`` grouped by ``column``: one table per value, in order of first appearance.

        Each group keeps its rows in their order in ``data``; values first seen
        in an earlier chunk come first; null values form the last group.
        """
        values = data.column(column).combine_chunks()
        if pa.types.is_dictionary(values.type):  # re-encode: its dictionary need not be in first-seen order
            values = values.cast(values.type.value_type)
        encoded = pc.dictionary_encode(values)  # the dictionary in order of first appearance
        codes = np.asarray(pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
        ranks = np.array(
            [self._rank.setdefault(v, len(self._rank)) for v in encoded.dictionary.to_pylist()] + [-1],
            dtype=np.int64,
        )
        row_rank = ranks[codes]  # codes of -1 (nulls) pick the trailing -1
        row_rank = np.where(row_rank < 0, np.iinfo(np.int64).max, row_rank)
        order = np.argsort(row_rank, kind="stable")
        sorted_rank = row_rank[order]
        bounds = np.flatnonzero(np.diff(sorted_rank)) + 1
        for chunk in np.split(order, bounds):
            if chunk.size:
                yield data.take(pa.array(chunk))
