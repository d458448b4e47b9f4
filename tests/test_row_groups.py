"""Row groups read without their filter, and a batch of trajectories split by tensor without copies.

Checked against pyarrow's own filtered read (``pq.read_table(filters=...)``) and
``Table.filter``: the shortcuts must change the cost only, never the rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from goup_probe.store import tables
from goup_probe.store.row_groups import passes_whole
from goup_probe.tracks import _rows_by_param


@pytest.fixture
def part(tmp_path):
    """A part of 4 row groups of 50 rows: tensors a, a, b and a mixed group of b and c."""
    params = ["a"] * 100 + ["b"] * 50 + ["b"] * 20 + ["c"] * 30
    steps = list(range(100)) + list(range(50)) + list(range(50, 70)) + list(range(30))
    table = pa.table({"step": pa.array(steps, pa.int64()), "param": params, "value": np.arange(200.0)})
    path = tmp_path / "part-000000.parquet"
    pq.write_table(table, path, row_group_size=50)
    return path


def _groups(path):
    footer = pq.ParquetFile(path).metadata
    return [footer.row_group(i) for i in range(footer.num_row_groups)]


def test_passes_whole_only_where_the_statistics_prove_every_row_passes(part):
    groups = _groups(part)
    judged = lambda terms: [passes_whole(g, terms) for g in groups]  # noqa: E731
    assert judged([("param", "in", ["a"])]) == [True, True, False, False]
    assert judged([("param", "in", ["b", "c"])]) == [False, False, True, False]  # mixed: min b, max c
    assert judged([("param", "==", "b")]) == [False, False, True, False]
    assert judged([("step", ">=", 50)]) == [False, True, False, False]
    assert judged([("step", "<", 50)]) == [True, False, True, False]
    assert judged([("param", "in", ["a"]), ("step", ">=", 50)]) == [False, True, False, False]
    assert judged([("param", "in", ["a"]), ("step", "<=", 10)]) == [False, False, False, False]
    # not judged: a disjunction, an Expression, an unknown operator or column, a value of another type
    assert not any(judged([[("param", "in", ["a"])], [("param", "in", ["b"])]]))
    assert not any(judged(pq.filters_to_expression([("param", "in", ["a"])])))
    assert not any(judged([("param", "not in", ["z"])]))
    assert not any(judged([("nope", "in", ["a"])]))
    assert not any(judged([("step", ">=", "0")]))
    assert not any(judged([]))


def test_a_floating_point_column_is_never_judged_whole(tmp_path):
    path = tmp_path / "part-000000.parquet"
    pq.write_table(pa.table({"v": [5.0, float("nan"), 7.0]}), path)
    (group,) = _groups(path)
    assert not passes_whole(group, [("v", ">=", 5.0)])  # min 5, max 7, no nulls: the NaN row still fails
    assert tables._read_filtered(path, None, [("v", ">=", 5.0)]).num_rows == 2


def test_a_column_with_nulls_is_never_judged_whole(tmp_path):
    path = tmp_path / "part-000000.parquet"
    pq.write_table(pa.table({"param": ["a", None, "a"], "v": [1.0, 2.0, 3.0]}), path)
    (group,) = _groups(path)
    assert not passes_whole(group, [("param", "in", ["a"])])  # min = max = "a", yet a null row fails


@pytest.mark.parametrize(
    "filters",
    [
        [("param", "in", ["a"])],
        [("param", "in", ["b"])],
        [("param", "in", ["a", "c"])],
        [("param", "in", ["b"]), ("step", ">=", 40)],
        [("step", ">=", 60)],
        [[("param", "==", "c")], [("step", "<", 5)]],
    ],
)
def test_a_filtered_read_equals_pyarrows_filtered_read(part, filters):
    ours = tables._read_filtered(part, ["step", "param", "value"], filters)
    theirs = pq.read_table(part, columns=["step", "param", "value"], filters=filters)
    assert ours.to_pydict() == theirs.to_pydict()


def _batch(order):
    steps = {"a": 0, "b": 0, "c": 0}
    rows = []
    for name in order:
        rows.append((steps[name], name))
        steps[name] += 1
    return pa.table({"step": [s for s, _ in rows], "param": [n for _, n in rows], "x": np.arange(len(rows))})


@pytest.mark.parametrize(
    "order",
    [
        ["a"] * 5 + ["b"] * 3 + ["c"] * 4,  # clustered: slices
        ["a", "b", "c"] * 4,  # interleaved: gathered
        ["a"] * 3 + ["b", "a", "b", "c", "c"],  # some of each
    ],
)
def test_rows_by_param_equal_the_filter_of_each_tensor(order):
    table = _batch(order)
    split = dict(_rows_by_param(table, ["c", "a", "b", "absent"]))
    for name in ("a", "b", "c", "absent"):
        expected = table.filter(pa.compute.equal(table.column("param"), name))
        assert split[name].to_pydict() == expected.to_pydict(), name
    assert list(split) == ["c", "a", "b", "absent"]


def test_the_batch_is_released_with_the_last_tensors_rows():
    """While the split waits at its last tensor, nothing but that tensor's rows holds the batch."""
    n = 2**20
    normal = np.random.default_rng(0).normal(size=n)
    chunks = [pa.table({"param": ["a"] * n, "x": pa.compute.multiply(normal, 1.0)}) for _ in range(2)]
    table = pa.concat_tables(chunks)  # two chunks of 8 MB of values each, in Arrow's pool
    del chunks
    before = pa.total_allocated_bytes()
    split = _rows_by_param(table, ["a"])
    del table
    name, rows = next(split)  # the generator now waits, suspended after its last yield
    copied = np.concatenate([c.to_numpy() for c in rows.column("x").chunks])  # rows span both chunks
    del rows
    assert name == "a" and len(copied) == 2 * n
    assert pa.total_allocated_bytes() < before - 16 * 2**20  # the batch is gone, not held by `split`
    assert next(split, None) is None
