"""Float list columns as pandas (store.lists) against pyarrow's conversion; parts read by row group."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from goup_probe.store import arrow_to_pandas, read_arrow, read_table
from goup_probe.store.lists import float_lists_to_series, is_float_list


def _reference(column: pa.ChunkedArray) -> list[object]:
    """pyarrow's conversion of the column, row by row (None or a numpy array)."""
    return pa.table({"v": column}).to_pandas()["v"].tolist()


def _assert_rows_equal(got: pd.Series, want: list[object]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got.tolist(), want, strict=True):
        if b is None:
            assert a is None
        else:
            assert isinstance(a, np.ndarray) and a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)  # NaN where a value was null, in both


def _chunks(kind: pa.DataType) -> pa.ChunkedArray:
    rows = [[1.5, 2.0], [], None, [3.25, None, -0.0], [float("inf")], [7.0] * 5]
    first = pa.array(rows, kind)
    second = pa.array([[9.0, 10.0], None, [11.0]], kind)
    sliced = pa.array([[100.0], [101.0, 102.0], [103.0], [104.0, 105.0]], kind).slice(1, 2)
    return pa.chunked_array([first, second, sliced, pa.array([], kind)])


@pytest.mark.parametrize(
    "kind",
    [
        pa.list_(pa.float32()),
        pa.list_(pa.float64()),
        pa.large_list(pa.float32()),
        pa.list_(pa.field("element", pa.float32())),
    ],
)
def test_float_lists_equal_pyarrow_conversion(kind: pa.DataType) -> None:
    column = _chunks(kind)
    want = _reference(column)
    got = float_lists_to_series("v", list(column.chunks))
    _assert_rows_equal(got, want)
    assert got.name == "v" and got.dtype == object


def test_rows_are_writable_views_of_one_buffer_and_chunks_are_consumed() -> None:
    column = pa.chunked_array([pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))] * 3)
    chunks = list(column.chunks)
    got = float_lists_to_series("v", chunks)
    assert chunks == []  # each chunk let go once copied
    rows = got.tolist()
    assert rows[0].base is rows[5].base and rows[0].base is not None
    rows[1][0] = 42.0  # writable; its neighbours keep their values
    assert rows[1][0] == 42.0 and rows[0].tolist() == [1.0, 2.0] and rows[2].tolist() == [1.0, 2.0]


def test_no_chunks_is_an_empty_object_series() -> None:
    got = float_lists_to_series("values", [])
    assert len(got) == 0 and got.dtype == object and got.name == "values"


def test_is_float_list_only_for_float_values() -> None:
    assert is_float_list(pa.list_(pa.float32())) and is_float_list(pa.large_list(pa.float64()))
    assert not is_float_list(pa.list_(pa.int64()))  # tracer coordinates keep pyarrow's conversion
    assert not is_float_list(pa.float32()) and not is_float_list(pa.string())


def test_arrow_to_pandas_keeps_column_order_and_other_columns() -> None:
    table = pa.table(
        {
            "step": pa.array([0, 1, 2], pa.int64()),
            "values": pa.array([[1.0], None, [2.0, 3.0]], pa.list_(pa.float32())),
            "param": ["a", "b", "c"],
            "coord": pa.array([[1], [2, 3], []], pa.list_(pa.int64())),
            "theta": pa.array([[0.5], [0.25], [0.125]], pa.list_(pa.float64())),
        }
    )
    want = table.to_pandas()
    got = arrow_to_pandas(table)
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(
        got.drop(columns=["values", "coord", "theta"]), want.drop(columns=["values", "coord", "theta"])
    )
    for name in ("values", "coord", "theta"):
        _assert_rows_equal(got[name], want[name].tolist())


def _write_parts(folder, rows_per_group: int) -> pa.Table:
    """Two parts of a samples-like table, many row groups each; returns their rows as one table."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    tables = []
    for k in range(2):
        n = 250
        lengths = rng.integers(0, 6, size=n)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = pa.array(rng.normal(size=int(offsets[-1])).astype(np.float32))
        table = pa.table(
            {
                "step": pa.array(np.arange(n) + 1000 * k, pa.int64()),
                "param": pa.array([f"p{i % 7}" for i in range(n)]),
                "quantity": pa.array(["theta_minus_grad"] * n),
                "values": pa.ListArray.from_arrays(pa.array(offsets), values),
            }
        )
        pq.write_table(table, folder / f"part-{k:06d}.parquet", row_group_size=rows_per_group)
        tables.append(table)
    return pa.concat_tables(tables)


def test_parts_read_a_row_group_at_a_time_equal_pyarrow(tmp_path) -> None:
    want = _write_parts(tmp_path / "samples", rows_per_group=17)
    assert pq.ParquetFile(tmp_path / "samples" / "part-000000.parquet").num_row_groups == 15
    got = read_arrow(tmp_path, "samples")
    assert got.combine_chunks().equals(want.combine_chunks().cast(got.schema))
    frame = read_table(tmp_path, "samples")
    reference = want.to_pandas()
    pd.testing.assert_frame_equal(
        frame.drop(columns="values"), reference.drop(columns="values"), check_dtype=False
    )
    _assert_rows_equal(frame["values"], reference["values"].tolist())
    projected = read_table(tmp_path, "samples", columns=["values", "step"])
    assert list(projected.columns) == ["values", "step"]
    _assert_rows_equal(projected["values"], reference["values"].tolist())


def test_a_stored_pandas_index_is_restored_and_lists_stay_aligned() -> None:
    """A table from a sliced or re-indexed DataFrame keeps its index; the lists are not aligned to it."""
    frame = pd.DataFrame(
        {"step": np.arange(6), "values": [np.array([float(i)], dtype=np.float32) for i in range(6)]}
    )
    for source in (frame.iloc[3:], frame.set_index(pd.Index(list("abcdef"), name="key"))):
        want = pa.Table.from_pandas(source).to_pandas()
        got = arrow_to_pandas(pa.Table.from_pandas(source))
        pd.testing.assert_index_equal(got.index, want.index)
        assert list(got.columns) == list(want.columns)
        np.testing.assert_array_equal(got["step"].to_numpy(), want["step"].to_numpy())
        _assert_rows_equal(got["values"], want["values"].tolist())
