"""Disk use of a run: float32 trajectories, sample retention, compaction (atomic), bytes per step."""

import json
import math
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import goup_probe as gp
from goup_probe.capture.retention import SampleRetention
from goup_probe.cli import main
from goup_probe.ou import ou_summary, validate_ou
from goup_probe.store import RunDirectoryError, RunLockedError, load_run
from goup_probe.store.compact import compact_run
from goup_probe.store.usage import bytes_per_step, disk_meta, disk_usage
from goup_probe.summary import format_table
from tests.helpers import TinyNet, batches, train, uncompacted

# ----------------------------------------------------------------------------- helpers


def _probe_run(run_dir, steps=40, **options):
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with gp.attach(model, opt, run_dir=run_dir, **options):
        train(model, opt, batches(steps))
    return Path(run_dir)


def _value_type(run_dir, table="trajectories", column="theta"):
    part = sorted((Path(run_dir) / table).glob("part-*.parquet"))[0]
    return pq.read_schema(part).field(column).type.value_type


def _tables(run_dir):
    run = load_run(run_dir)
    return {name: run.table(name) for name in run.tables}


def _grouped_by_param(frame):
    """Rows grouped by tensor, tensors in order of first appearance, each one's rows in their order."""
    rank = {p: i for i, p in enumerate(dict.fromkeys(frame["param"]))}
    order = np.argsort(frame["param"].map(rank).to_numpy(), kind="stable")
    return frame.iloc[order].reset_index(drop=True)


def _assert_same_tables(expected, run_dir):
    """Every row once and in order; ``trajectories`` compared grouped by tensor (compaction clusters it)."""
    got = _tables(run_dir)
    assert sorted(got) == sorted(expected)
    for name, frame in expected.items():
        if name == "trajectories":
            frame, got[name] = _grouped_by_param(frame), _grouped_by_param(got[name])
        pd.testing.assert_frame_equal(got[name], frame, check_dtype=True)


def _many_parts_run(tmp_path, name="run", steps=30):
    """A finished run whose tables hold many small parts (flush_rows=7): one the probe did not compact
    at detach (a run written before compaction existed, or whose detach was cut short)."""
    with uncompacted():
        return _probe_run(tmp_path / name, steps=steps, every=3, flush_rows=7)


def test_the_probe_compacts_its_run_at_detach_and_records_its_disk_use(tmp_path):
    run_dir = _probe_run(tmp_path / "run", steps=30, every=3, flush_rows=7)
    parts = {t: len(list((run_dir / t).glob("part-*.parquet"))) for t in ("stats", "samples", "trajectories")}
    assert parts == {"stats": 1, "samples": 1, "trajectories": 1}  # 7-row parts merged
    uncompacted = _many_parts_run(tmp_path, "reference")
    for table in ("stats", "samples"):  # same rows, same order as the run left uncompacted
        pd.testing.assert_frame_equal(load_run(run_dir).table(table), load_run(uncompacted).table(table))
    pd.testing.assert_frame_equal(  # the same rows, grouped by tensor
        load_run(run_dir).table("trajectories"),
        _grouped_by_param(load_run(uncompacted).table("trajectories")),
    )
    disk = load_run(run_dir).meta["disk"]
    on_disk = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file() and f.name != "run.json")
    assert abs(disk["bytes"] - on_disk) <= 4096 and disk["bytes_per_step"] == pytest.approx(
        disk["bytes"] / 30
    )


def _walk(run_dir):
    files = [Path(r) / n for r, _, names in os.walk(run_dir) for n in names if n != ".goup-probe.lock"]
    return len(files), sum(f.stat().st_size for f in files)


# ----------------------------------------------------------------------------- float32 trajectories


def test_trajectories_are_float32_by_default_and_float64_on_request(tmp_path):
    default = _probe_run(tmp_path / "f32", steps=5)
    wide = _probe_run(tmp_path / "f64", steps=5, trajectory_dtype="float64")
    for column in ("theta", "grad", "theta_next"):
        assert _value_type(default, column=column) == pa.float32()
        assert _value_type(wide, column=column) == pa.float64()
    assert json.loads((default / "run.json").read_text())["capture"]["trajectory_dtype"] == "float32"
    # the stored float32 values are the float32 parameters exactly
    a, b = load_run(default).trajectories, load_run(wide).trajectories
    for column in ("theta", "grad", "theta_next"):
        np.testing.assert_array_equal(np.concatenate(list(a[column])), np.concatenate(list(b[column])))


@pytest.mark.parametrize("bad", ["float16", "double", None, 32])
def test_trajectory_dtype_is_validated_naming_it(tmp_path, bad):
    with pytest.raises(ValueError, match="trajectory_dtype"):
        _probe_run(tmp_path / "run", steps=1, trajectory_dtype=bad)
    assert not (tmp_path / "run").exists()


def test_ou_results_from_float32_trajectories_equal_float64_to_the_printed_digits(tmp_path):
    wide = _probe_run(tmp_path / "f64", steps=120, trajectory_dtype="float64", every=1000)
    narrow = _probe_run(tmp_path / "f32", steps=120, every=1000)
    assert _value_type(narrow) == pa.float32()
    a, b = validate_ou(wide), validate_ou(narrow)
    assert a["verdict"].notna().all() and (a["n_coords"] > 0).all()
    assert format_table(ou_summary(a)) == format_table(ou_summary(b))
    assert format_table(a.drop(columns=["reason"])) == format_table(b.drop(columns=["reason"]))
    assert list(a["reason"]) == list(b["reason"])


# ----------------------------------------------------------------------------- sample retention


def _expected_sample_steps(captured, n):
    """The documented rule, computed independently: the first n, the first of each log bin, the last."""
    kept, seen_bins = set(captured[:n]), set()
    for step in captured:
        b = int(np.floor(n * np.log10(step + 1)))
        if b not in seen_bins:
            kept.add(step)
        seen_bins.add(b)
    kept.add(captured[-1])
    return sorted(kept)


@pytest.mark.parametrize(("every", "n", "steps"), [(1, 5, 3000), (3, 10, 3000), (7, 2, 500), (1, 40, 100)])
def test_sample_retention_follows_the_documented_rule(every, n, steps):
    captured = list(range(0, steps, every))
    retention = SampleRetention(n)
    written = [s for s in captured for _ in range(2) for _ in retention.admit(s, {"step": s})]
    written += [row["step"] for row in retention.release()]
    assert sorted(set(written)) == _expected_sample_steps(captured, n)
    assert sorted(written) == sorted(2 * _expected_sample_steps(captured, n))  # both rows of each step
    if steps >= 1000 and n <= 10:  # logarithmic growth: far fewer than the captured steps
        assert len(set(written)) < n * (2 + math.log10(steps)) < len(captured) / 4


def test_sample_retention_none_keeps_every_step_and_holds_nothing():
    retention = SampleRetention(None)
    assert all(retention.admit(s, {"step": s}) == [{"step": s}] for s in range(100))
    assert retention.release() == []


def test_the_held_step_is_dropped_when_a_later_step_is_kept():
    retention = SampleRetention(1)  # bins are decades of step + 1: steps 0..8 in bin 0, 9..98 in bin 1
    assert retention.admit(0, {"s": 0}) == [{"s": 0}]  # the first captured step
    assert retention.admit(1, {"s": 1}) == []  # bin 0 again: held as the possible last step
    assert retention.admit(5, {"s": 5}) == []  # replaces step 1 as the held one
    assert retention.held_step == 5
    assert retention.admit(9, {"s": 9}) == [{"s": 9}]  # a new bin: written, the held step dropped
    assert retention.held_step is None
    assert retention.admit(20, {"s": 20}) == []
    assert retention.admit(20, {"s": 20, "q": 2}) == []
    assert retention.admit(3, {"s": 3}) == []  # an older step (another optimizer): dropped
    assert retention.release() == [{"s": 20}, {"s": 20, "q": 2}]
    assert retention.release() == []


def test_probe_stores_samples_at_the_retained_steps_and_the_last(tmp_path):
    run_dir = _probe_run(tmp_path / "run", steps=400, every=1, keep_sample_steps=4, tracers=0)
    run = load_run(run_dir)
    captured = sorted(run.stats["step"].unique().tolist())
    assert captured == list(range(400))
    assert sorted(run.samples["step"].unique().tolist()) == _expected_sample_steps(captured, 4)
    assert run.meta["capture"]["keep_sample_steps"] == 4


def test_keep_sample_steps_none_stores_every_captured_step(tmp_path):
    run = load_run(_probe_run(tmp_path / "run", steps=30, every=1, keep_sample_steps=None, tracers=0))
    assert sorted(run.samples["step"].unique()) == list(range(30))


@pytest.mark.parametrize(
    ("bad", "error"), [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("5", TypeError)]
)
def test_keep_sample_steps_is_validated_naming_it(tmp_path, bad, error):
    with pytest.raises(error, match="keep_sample_steps"):
        _probe_run(tmp_path / "run", steps=1, keep_sample_steps=bad)
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- compaction


def test_compaction_merges_parts_keeping_every_row_in_order(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    expected = _tables(run_dir)
    parts_before = {t: len(list((run_dir / t).glob("part-*.parquet"))) for t in expected}
    assert parts_before["stats"] > 5 and parts_before["trajectories"] > 5
    files_before, bytes_before = _walk(run_dir)
    result = compact_run(run_dir, target_rows=1000)
    _assert_same_tables(expected, run_dir)
    files_after, bytes_after = _walk(run_dir)
    assert (result.files_before, result.bytes_before) == (files_before, bytes_before)
    assert (result.files_after, result.bytes_after) == (files_after, bytes_after)
    for table, count in parts_before.items():
        rows = len(expected[table])
        now = len(list((run_dir / table).glob("part-*.parquet")))
        assert now == (max(1, math.ceil(rows / 1000)) if count > math.ceil(rows / 1000) else count)
    assert result.parts["stats"] == (parts_before["stats"], 1)
    assert not [p for p in run_dir.rglob("*") if p.name.startswith(".") and p.name != ".goup-probe.lock"]
    again = compact_run(run_dir, target_rows=1000)
    assert again.parts == {} and again.files_after == files_after
    _assert_same_tables(expected, run_dir)


def test_compaction_into_several_parts_of_target_rows(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    expected = _tables(run_dir)
    compact_run(run_dir, target_rows=25)
    _assert_same_tables(expected, run_dir)
    rows = [pq.read_metadata(p).num_rows for p in sorted((run_dir / "stats").glob("part-*.parquet"))]
    assert rows[:-1] == [25] * (len(rows) - 1) and 0 < rows[-1] <= 25 and sum(rows) == len(expected["stats"])


def test_compaction_merges_parts_whose_columns_differ(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    (run_dir / "notes").mkdir()
    chunks = [
        pa.table({"step": [1000], "param": ["x"], "note": ["a"]}),
        pa.table({"step": [1001, 1002], "param": ["y", "z"]}),
        pa.table({"step": [1003], "note": [None], "score": [0.5]}),
    ]
    for i, chunk in enumerate(chunks):
        pq.write_table(chunk, run_dir / "notes" / f"part-{i:06d}.parquet")
    expected = _tables(run_dir)
    assert list(expected["notes"].columns) == ["step", "param", "note", "score"]
    compact_run(run_dir)
    _assert_same_tables(expected, run_dir)
    assert len(list((run_dir / "notes").glob("part-*.parquet"))) == 1


class _Frozen(OSError):
    pass


def _freeze_after(monkeypatch, k, *, freeze):
    """The k-th file-system step of compaction fails; with ``freeze``, every later one too (a crash)."""
    calls = {"n": 0, "frozen": False}
    real = {"replace": os.replace, "fsync": os.fsync, "rmtree": shutil.rmtree}

    def wrap(name):
        def patched(*args, **kwargs):
            calls["n"] += 1
            if calls["frozen"] or calls["n"] == k:
                calls["frozen"] = freeze
                raise _Frozen(f"injected failure of {name} (call {calls['n']})")
            return real[name](*args, **kwargs)

        return patched

    monkeypatch.setattr(os, "replace", wrap("replace"))
    monkeypatch.setattr(os, "fsync", wrap("fsync"))
    monkeypatch.setattr(shutil, "rmtree", wrap("rmtree"))
    return calls


def _count_steps(original, tmp_path):
    run_dir = tmp_path / "count"
    shutil.copytree(original, run_dir)
    calls = {"n": 0}
    real = {"replace": os.replace, "fsync": os.fsync, "rmtree": shutil.rmtree}
    with pytest.MonkeyPatch.context() as mp:
        for name in real:

            def counted(*args, _name=name, **kwargs):
                calls["n"] += 1
                return real[_name](*args, **kwargs)

            mp.setattr(os if name != "rmtree" else shutil, name, counted)
        compact_run(run_dir, target_rows=20, holding_lock=True)
    return calls["n"]


@pytest.mark.parametrize("freeze", [True, False], ids=["crash", "error"])
def test_a_failure_at_any_step_of_compaction_leaves_a_readable_run_without_duplicates(
    tmp_path, monkeypatch, freeze
):
    original = _many_parts_run(tmp_path, "original", steps=12)
    steps = _count_steps(original, tmp_path)
    assert steps > 10  # several tables, each: part renames and fsyncs, two folder renames, one removal
    expected = _tables(original)
    for k in range(1, steps + 1):
        run_dir = tmp_path / f"k{k}"
        shutil.copytree(original, run_dir)
        calls = _freeze_after(monkeypatch, k, freeze=freeze)
        try:
            compact_run(run_dir, target_rows=20, holding_lock=True)  # the compaction's own steps only
            raised = False
        except _Frozen:
            raised = True
        monkeypatch.undo()
        assert calls["n"] >= k
        # a crash always ends it; a single failure does too, unless it was a directory's fsync (best effort)
        assert raised or not freeze
        _assert_same_tables(expected, run_dir)  # readable, every row once, in order
        compact_run(run_dir, target_rows=20)  # the next compaction settles what was left and finishes
        _assert_same_tables(expected, run_dir)
        assert not list(run_dir.glob(".*.replace")), f"staging left after the failure at step {k}"
        assert len(list((run_dir / "stats").glob("part-*.parquet"))) == math.ceil(len(expected["stats"]) / 20)


def test_compaction_refuses_a_running_run_unless_allowed(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "running"}))
    listing = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    with pytest.raises(RunDirectoryError, match="running"):
        compact_run(run_dir)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == listing
    expected = _tables(run_dir)
    assert compact_run(run_dir, allow_running=True).parts
    _assert_same_tables(expected, run_dir)


def test_compaction_refuses_a_run_another_live_process_writes(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    holder = {"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}  # alive: our parent
    (run_dir / ".goup-probe.lock").write_text(json.dumps(holder))
    listing = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*"))
    with pytest.raises(RunLockedError, match="being written"):
        compact_run(run_dir)
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*")) == listing
    (run_dir / ".goup-probe.lock").write_text(json.dumps({**holder, "pid": _dead_pid()}))
    expected = _tables(run_dir)
    assert compact_run(run_dir).parts  # a stale lock (its process is gone) is taken over, then released
    _assert_same_tables(expected, run_dir)
    assert not (run_dir / ".goup-probe.lock").exists()


def _dead_pid():
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_compaction_leaves_a_table_with_a_damaged_part_or_a_foreign_file_alone(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    (run_dir / "samples" / "part-000001.parquet").write_bytes(b"not parquet")
    (run_dir / "stats" / "my-notes.txt").write_text("mine")
    before = {t: sorted(p.name for p in (run_dir / t).iterdir()) for t in ("samples", "stats")}
    with pytest.raises(RunDirectoryError, match=r"part-000001\.parquet"):
        compact_run(run_dir)
    assert {t: sorted(p.name for p in (run_dir / t).iterdir()) for t in ("samples", "stats")} == before
    (run_dir / "samples" / "part-000001.parquet").unlink()
    with pytest.raises(RunDirectoryError, match=r"my-notes\.txt"):
        compact_run(run_dir)
    assert (run_dir / "stats" / "my-notes.txt").read_text() == "mine"


@pytest.mark.parametrize("bad", [0, -1, 2.0, True])
def test_compaction_target_rows_is_validated(tmp_path, bad):
    with pytest.raises((TypeError, ValueError), match="target_rows"):
        compact_run(tmp_path, target_rows=bad)


def test_cli_compact_prints_files_and_bytes_before_and_after(tmp_path, capsys):
    run_dir = _many_parts_run(tmp_path)
    files_before, _ = _walk(run_dir)
    assert main(["compact", str(run_dir)]) == 0
    out = capsys.readouterr().out
    files_after, _ = _walk(run_dir)
    assert f"{files_before} files" in out and f"{files_after} files" in out and "→" in out
    assert "stats:" in out
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "running"}))
    assert main(["compact", str(run_dir)]) == 2
    assert "running" in capsys.readouterr().err


# ----------------------------------------------------------------------------- usage


def test_disk_usage_counts_files_and_bytes_per_table(tmp_path):
    run_dir = _many_parts_run(tmp_path)
    usage = disk_usage(run_dir)
    assert (usage.files_total, usage.bytes_total) == _walk(run_dir)
    for table in ("stats", "samples", "trajectories", "tracers"):
        parts = list((run_dir / table).glob("part-*.parquet"))
        assert usage.files_by_table[table] == len(parts)
        assert usage.bytes_by_table[table] == sum(p.stat().st_size for p in parts)
    meta = load_run(run_dir).meta
    entry = disk_meta(run_dir, steps=meta["steps"], captured_steps=meta["captured_steps"])
    assert entry["bytes_per_step"] == pytest.approx(usage.bytes_total / 30)
    assert entry["bytes_per_captured_step"] == pytest.approx(usage.bytes_total / 10)
    assert bytes_per_step(100, 0, None) == {"bytes_per_step": None, "bytes_per_captured_step": None}
    with pytest.raises(RunDirectoryError):
        disk_usage(tmp_path / "absent")
