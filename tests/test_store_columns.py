"""A table read a column at a time (store.columns) holds what reading it whole holds.

The parts are written with pyarrow directly, one of them as an older version
would have (a declared optional column missing, an undeclared column of its
own), and the result is compared with pyarrow's own reading of each part.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from goup_probe.store import RunDirectoryError, arrow_to_pandas, read_arrow
from goup_probe.store.columns import TableColumns, columns_to_frame


def _stats_part(rows: int, start: int, *, with_skew: bool, extra: str | None) -> pa.Table:
    rng = np.random.default_rng(start)
    columns = {
        "step": pa.array(np.arange(start, start + rows), pa.int32()),  # narrower than declared: cast
        "param": [f"layer{i % 3}.weight" for i in range(rows)],
        "quantity": ["theta_minus_grad"] * rows,
        "status": ["ok"] * rows,
        "verdict": [None if i % 4 == 0 else "Gaussian" for i in range(rows)],
    }
    if with_skew:
        columns["skew"] = rng.normal(size=rows)
    if extra:
        columns[extra] = rng.normal(size=rows)
    return pa.table(columns)


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "run" / "stats"
    folder.mkdir(parents=True)
    pq.write_table(_stats_part(40, 0, with_skew=False, extra="old_statistic"), folder / "part-000000.parquet")
    pq.write_table(_stats_part(25, 40, with_skew=True, extra=None), folder / "part-000001.parquet")
    pq.write_table(_stats_part(30, 65, with_skew=True, extra="new_statistic"), folder / "part-000002.parquet")
    return tmp_path / "run"


def _parts_by_pyarrow(run_dir) -> pd.DataFrame:
    frames = [pq.read_table(p).to_pandas() for p in sorted((run_dir / "stats").iterdir())]
    return pd.concat(frames, ignore_index=True)


def test_each_column_holds_every_parts_rows_in_part_order(run_dir):
    names = ["step", "param", "verdict", "skew", "old_statistic", "new_statistic"]
    with TableColumns(run_dir, "stats") as parts:
        frame = columns_to_frame((name, parts.column(name)) for name in names)
        assert parts.column("no_such_column") is None
    expected = _parts_by_pyarrow(run_dir)
    assert len(frame) == 95
    np.testing.assert_array_equal(frame["step"], np.arange(95))
    assert frame["step"].dtype == np.int64  # the declared type
    assert list(frame["param"]) == list(expected["param"])
    assert frame["verdict"].isna().tolist() == expected["verdict"].isna().tolist()
    np.testing.assert_array_equal(frame["skew"].iloc[40:], expected["skew"].iloc[40:])
    assert frame["skew"].iloc[:40].isna().all()  # declared, optional, absent from the oldest part
    np.testing.assert_array_equal(frame["old_statistic"].iloc[:40], expected["old_statistic"].iloc[:40])
    assert frame["old_statistic"].iloc[40:].isna().all()
    assert frame["new_statistic"].iloc[:65].isna().all()
    # ... and what reading the table whole gives: same dtypes, same values
    whole = arrow_to_pandas(read_arrow(run_dir, "stats", names))
    pd.testing.assert_frame_equal(frame, whole[names])


def test_columns_convert_to_writable_arrays(run_dir):
    with TableColumns(run_dir, "stats") as parts:
        frame = columns_to_frame([("skew", parts.column("skew"))])
    frame.loc[0, "skew"] = 1.5  # a read-only view of Arrow memory would refuse
    assert frame["skew"].iloc[0] == 1.5


def test_a_damaged_part_is_skipped_or_raises_on_entry_naming_it(run_dir):
    damaged = run_dir / "stats" / "part-000001.parquet"
    damaged.write_bytes(damaged.read_bytes()[:50])
    with pytest.raises(RunDirectoryError, match=re.escape(damaged.name)), TableColumns(run_dir, "stats"):
        pass
    skipped: list[str] = []
    with pytest.warns(RuntimeWarning, match=re.escape(damaged.name)):
        with TableColumns(run_dir, "stats", on_error="skip", skipped=skipped) as parts:
            steps = parts.column("step")
    assert skipped == [str(damaged)]
    assert steps.to_pylist() == [*range(40), *range(65, 95)]


def test_a_part_of_another_table_is_refused_on_entry(run_dir):
    pq.write_table(pa.table({"x": [1.0]}), run_dir / "stats" / "part-000003.parquet")
    with (
        pytest.raises(RunDirectoryError, match=r"part-000003.*lacks columns"),
        TableColumns(run_dir, "stats"),
    ):
        pass


def test_a_part_damaged_after_entry_raises_naming_it(run_dir):
    part = run_dir / "stats" / "part-000002.parquet"
    with TableColumns(run_dir, "stats", on_error="skip") as parts:
        assert len(parts.column("step")) == 95
        part.write_bytes(b"\0" * part.stat().st_size)  # the same file, its pages zeroed after opening
        with pytest.raises(RunDirectoryError, match=re.escape(part.name)):
            parts.column("new_statistic")


def test_no_parts_no_columns(tmp_path):
    with TableColumns(tmp_path, "stats") as parts:
        assert parts.column("step") is None


def _zero_pages(part):
    """Zero a part's pages, keeping its footer: it opens, and fails when a column is decoded."""
    data = bytearray(part.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4 : len(data) - footer] = bytes(len(data) - footer - 4)
    part.write_bytes(bytes(data))


def test_the_reports_stats_skip_a_part_that_fails_mid_read_when_the_run_skips(run_dir):
    from goup_probe.report.data import load_stats
    from goup_probe.store import load_run

    (run_dir / "run.json").write_text('{"schema_version": 1, "status": "completed"}')
    damaged = run_dir / "stats" / "part-000001.parquet"
    _zero_pages(damaged)
    with pytest.raises(RunDirectoryError, match=re.escape(damaged.name)):
        load_stats(load_run(run_dir))
    run = load_run(run_dir, on_error="skip")
    with pytest.warns(RuntimeWarning, match=re.escape(damaged.name)):
        stats = load_stats(run)
    assert sorted(stats["step"]) == [*range(40), *range(65, 95)]
    assert run.skipped_files == [str(damaged)]


def test_a_table_of_more_parts_than_may_be_held_open_is_read_whole(run_dir, monkeypatch):
    from goup_probe.report.data import load_stats
    from goup_probe.store import columns, load_run

    (run_dir / "run.json").write_text('{"schema_version": 1, "status": "completed"}')
    by_column = load_stats(load_run(run_dir))
    monkeypatch.setattr(columns, "MAX_OPEN_PARTS", 2)  # the fixture has 3 parts
    assert not columns.fits_column_reads(run_dir, "stats")
    with pytest.raises(ValueError, match="3 parts"), TableColumns(run_dir, "stats"):
        pass
    pd.testing.assert_frame_equal(load_stats(load_run(run_dir)), by_column)


def test_parts_skipped_on_entry_and_mid_read_are_each_listed_once(run_dir):
    from goup_probe.report.data import load_stats
    from goup_probe.store import load_run

    (run_dir / "run.json").write_text('{"schema_version": 1, "status": "completed"}')
    truncated, zeroed = run_dir / "stats" / "part-000000.parquet", run_dir / "stats" / "part-000002.parquet"
    truncated.write_bytes(truncated.read_bytes()[:50])
    _zero_pages(zeroed)
    run = load_run(run_dir, on_error="skip")
    with pytest.warns(RuntimeWarning):
        stats = load_stats(run)
    assert sorted(stats["step"]) == list(range(40, 65))
    assert sorted(run.skipped_files) == [str(truncated), str(zeroed)]


def test_a_stats_table_of_no_rows_reads_as_the_drawn_columns(tmp_path):
    from goup_probe.report.data import UNDRAWN_STATS_COLUMNS, load_stats
    from goup_probe.store import load_run

    (tmp_path / "stats").mkdir()
    (tmp_path / "run.json").write_text('{"schema_version": 1, "status": "running"}')
    pq.write_table(_stats_part(0, 0, with_skew=True, extra=None), tmp_path / "stats" / "part-000000.parquet")
    stats = load_stats(load_run(tmp_path))
    assert stats.empty and "skew" in stats.columns
    assert not set(stats.columns) & set(UNDRAWN_STATS_COLUMNS)
