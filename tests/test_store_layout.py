"""Compacted parts: trajectories clustered by tensor, row groups bounded in bytes (issue 17).

The tables are written directly with the store's writer (no training), step by
step as the probe writes them, then compacted; each test checks the layout
against pyarrow's own reading of the files and the rows against pandas
computations on the uncompacted table.
"""

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from goup_probe import ou, schema, tracks
from goup_probe.store import RunWriter, layout, prepare_run_dir, read_table
from goup_probe.store import run as store_run
from goup_probe.store.compact import compact_run

TENSORS = ["w", "b", "a.weight", "z"]  # not in lexicographic order: the order kept is first appearance
TRACERS = 6


def _trajectory_block(steps, names, rng, state):
    """AR(1) tracer rows (k = 0.05, α = 0.1) of some steps, every tensor at each step, as the probe writes."""
    rows = {"step": [], "param": [], "lr": [], "theta": [], "grad": [], "theta_next": []}
    for step in steps:
        for name in names:
            theta = state[name]
            grad = 0.5 * theta + rng.normal(0.0, 1.0, TRACERS)
            nxt = theta - 0.1 * grad
            for key, value in zip(rows, (step, name, 0.1, theta, grad, nxt), strict=True):
                rows[key].append(value)
            state[name] = nxt
    return pa.table(
        {
            k: (v if k in ("step", "param", "lr") else [np.asarray(x, np.float32) for x in v])
            for k, v in rows.items()
        },
        schema=schema.TRAJECTORY_SCHEMA,
    )


def _write_run(path, steps=240, names=TENSORS, flush_rows=100):
    """A run directory of trajectories (and a stats-like table) in parts of ``flush_rows`` rows."""
    rng = np.random.default_rng(0)
    prepare_run_dir(path, overwrite=True)
    writer = RunWriter(path, flush_rows=flush_rows)
    state = {name: rng.normal(0.0, 1.0, TRACERS) for name in names}
    for start in range(0, steps, 10):
        writer.append_arrow("trajectories", _trajectory_block(range(start, start + 10), names, rng, state))
        writer.append_arrow(
            "notes", pa.table({"step": np.repeat(np.arange(start, start + 10), 2), "param": ["x", "y"] * 10})
        )
    writer.flush()
    writer.write_meta({"status": "completed", "capture": {"tracers": TRACERS}})
    return path


def _grouped(frame):
    """The rows grouped by tensor (first appearance), each tensor's rows in their order: pandas, stably."""
    rank = {p: i for i, p in enumerate(dict.fromkeys(frame["param"]))}
    order = np.argsort(frame["param"].map(rank).to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def _row_group_params(folder):
    """The distinct tensors of every row group of every part, read back row group by row group."""
    out = []
    for part in sorted(folder.glob("part-*.parquet")):
        handle = pq.ParquetFile(part)
        for i in range(handle.num_row_groups):
            out.append(set(handle.read_row_group(i, columns=["param"]).column("param").to_pylist()))
    return out


def _admitted_rows(folder, expression):
    """Rows of the row groups pyarrow's statistics do not rule out (what a filtered read decodes)."""
    total = 0
    for part in sorted(folder.glob("part-*.parquet")):
        (fragment,) = ds.dataset(part, format="parquet").get_fragments()
        total += sum(
            rg.num_rows for g in fragment.split_by_row_group(filter=expression) for rg in g.row_groups
        )
    return total


def test_compaction_clusters_trajectories_and_a_tensor_read_decodes_only_its_row_groups(tmp_path):
    run_dir = _write_run(tmp_path / "run")
    before = read_table(run_dir, "trajectories")
    notes_before = read_table(run_dir, "notes")
    assert not layout.table_is_clustered(run_dir / "trajectories", "param")
    result = compact_run(run_dir, target_rows=400)  # 960 rows: three parts
    assert result.parts["trajectories"] == (8, 3)  # parts of 120 rows (blocks of 40, flushed at 100)
    after = read_table(run_dir, "trajectories")
    per_part = [_grouped(before.iloc[i : i + 400]) for i in range(0, len(before), 400)]
    pd.testing.assert_frame_equal(after, pd.concat(per_part, ignore_index=True))  # grouped within each part
    pd.testing.assert_frame_equal(_grouped(after), _grouped(before))
    assert list(dict.fromkeys(after["param"])) == TENSORS
    pd.testing.assert_frame_equal(read_table(run_dir, "notes"), notes_before)  # other tables keep their order
    groups = _row_group_params(run_dir / "trajectories")
    assert len(groups) >= len(TENSORS) * 3 and all(len(g) == 1 for g in groups)
    assert layout.table_is_clustered(run_dir / "trajectories", "param")
    assert not layout.table_is_clustered(run_dir / "notes", "param")
    for name in TENSORS:
        got = read_table(run_dir, "trajectories", filters=[("param", "==", name)])
        pd.testing.assert_frame_equal(got, before[before["param"] == name].reset_index(drop=True))
        decoded = _admitted_rows(run_dir / "trajectories", ds.field("param") == name)
        assert decoded == len(got) == 240  # its own row groups, no other tensor's


def test_a_compact_unclustered_trajectories_table_is_clustered_and_a_clustered_one_left_alone(
    tmp_path, monkeypatch
):
    run_dir = _write_run(tmp_path / "run", flush_rows=10_000)  # one part: already few enough files
    before = read_table(run_dir, "trajectories")
    assert len(list((run_dir / "trajectories").glob("part-*.parquet"))) == 1
    assert compact_run(run_dir).parts == {}  # 960 rows fit one row group: nothing to skip, left as it is
    monkeypatch.setattr(layout, "ROW_GROUP_ROWS", 100)
    assert compact_run(run_dir).parts == {"trajectories": (1, 1)}  # more rows than a row group: clustered
    pd.testing.assert_frame_equal(read_table(run_dir, "trajectories"), _grouped(before))
    assert all(len(g) == 1 for g in _row_group_params(run_dir / "trajectories"))
    assert compact_run(run_dir).parts == {}  # clustered and compact: left alone


def test_row_groups_of_wide_rows_are_bounded_in_bytes(tmp_path):
    path = tmp_path / "run"
    prepare_run_dir(path, overwrite=True)
    writer = RunWriter(path, flush_rows=500)
    values = np.arange(3000 * 1000, dtype=np.float32).reshape(3000, 1000)
    for start in range(0, 3000, 500):
        block = values[start : start + 500]
        writer.append_arrow(
            "samples",
            pa.table(
                {
                    "step": np.arange(start, start + 500),
                    "param": ["p"] * 500,
                    "quantity": [schema.THETA] * 500,
                    "values": list(block),
                },
                schema=schema.SAMPLES_SCHEMA,
            ),
        )
    writer.flush()
    writer.write_meta({"status": "completed"})
    compact_run(path)
    (part,) = sorted((path / "samples").glob("part-*.parquet"))
    meta = pq.read_metadata(part)
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    limit = layout.ROW_GROUP_BYTES // (1000 * 4)  # 4000 bytes of values a row, a few more of the rest
    assert sum(sizes) == 3000 and max(sizes) <= limit and len(sizes) >= 3000 // limit
    got = read_table(path, "samples", filters=[("step", "==", 1234)])
    np.testing.assert_array_equal(np.asarray(got["values"].iloc[0]), values[1234])


def test_cluster_order_numbers_tensors_by_first_appearance_across_chunks():
    order = layout.ClusterOrder()
    first = pa.table({"param": ["b", "a", "b", None, "a"], "i": [0, 1, 2, 3, 4]})
    second = pa.table({"param": pa.array(["c", "a", "b", "c"]).dictionary_encode(), "i": [5, 6, 7, 8]})
    got = [[t.column("param").to_pylist(), t.column("i").to_pylist()] for t in order.groups(first, "param")]
    assert got == [[["b", "b"], [0, 2]], [["a", "a"], [1, 4]], [[None], [3]]]
    got = [t.column("i").to_pylist() for t in order.groups(second, "param")]
    assert got == [[7], [6], [5, 8]]  # b and a were seen first; c is new


def test_validate_ou_on_a_clustered_run_reads_each_row_group_once_and_equals_the_whole_analysis(
    tmp_path, monkeypatch
):
    raw = _write_run(tmp_path / "raw")
    run_dir = tmp_path / "compacted"
    shutil.copytree(raw, run_dir)
    compact_run(run_dir, target_rows=400)
    whole = ou.validate_ou(read_table(raw, "trajectories"))  # the uncompacted table, in memory
    assert list(whole["param"]) == TENSORS and whole["k_pooled"].notna().all()
    reads = []

    def recording(real):
        def read(path, name, columns=None, filters=None, **kwargs):
            reads.append((name, columns, filters))
            return real(path, name, columns, filters, **kwargs)

        return read

    for reader in ("read_table", "read_arrow"):  # the tracer values come through read_arrow
        monkeypatch.setattr(store_run, reader, recording(getattr(store_run, reader)))
    monkeypatch.setattr(tracks, "READ_BATCH_BYTES", 1)  # one tensor per pass, clustered or not
    monkeypatch.setattr(tracks, "CLUSTERED_READ_BATCH_BYTES", 1)
    batched = ou.validate_ou(run_dir)
    pd.testing.assert_frame_equal(batched, whole)
    pd.testing.assert_frame_equal(ou.validate_ou(raw), whole)  # uncompacted, read from disk
    passes = [f for name, c, f in reads if name == "trajectories" and c and "theta" in c][: len(TENSORS)]
    assert len(passes) == len(TENSORS)
    decoded = sum(_admitted_rows(run_dir / "trajectories", pq.filters_to_expression(f)) for f in passes)
    assert decoded == len(read_table(raw, "trajectories"))  # every row group decoded once in all


@pytest.mark.parametrize("rows", [0, 1, 10**6])
def test_row_group_rows_stays_within_its_bounds(rows):
    assert layout.row_group_rows(rows * 10, rows) == layout.ROW_GROUP_ROWS  # narrow rows: the row cap
    assert 1 <= layout.row_group_rows(rows * 10**8, rows) <= layout.ROW_GROUP_ROWS
    if rows:
        assert layout.row_group_rows(rows * 4000, rows) == layout.ROW_GROUP_BYTES // 4000
