"""Run directory: refusal to clobber, atomic parts, readable while damaged or in progress."""

import json
import re

import pytest
import torch

import goup_probe as gp
from goup_probe.store import RunWriter, prepare_run_dir
from tests.helpers import TinyNet, batches, train, uncompacted


def _probe_run(path, **kw):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=path, every=1, **kw):
        train(model, opt, batches(2))
    return path


def test_non_empty_run_dir_refused_unless_overwrite(tmp_path):
    run = _probe_run(tmp_path / "r")
    with pytest.raises(gp.RunDirectoryError, match="not empty"):
        _probe_run(run)
    _probe_run(run, overwrite=True)
    assert gp.load_run(run).meta["steps"] == 2


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(gp.RunDirectoryError, match="not a goup_probe run"):
        prepare_run_dir(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_parts_are_atomic_and_readable_while_the_run_is_in_progress(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, flush_rows=8):
        train(model, opt, batches(3))
        live = gp.load_run(tmp_path / "r")
        assert live.status == "running"
        assert len(live.stats) >= 8
        leftovers = [p for p in (tmp_path / "r" / "stats").iterdir() if not p.name.startswith("part-")]
        assert leftovers == []
    assert gp.load_run(tmp_path / "r").status == "completed"


def test_damaged_part_raises_naming_the_file_or_is_skipped(tmp_path):
    with uncompacted():
        run = _probe_run(tmp_path / "r", flush_rows=4)
    parts = sorted((run / "stats").iterdir())
    assert len(parts) > 2
    parts[1].write_bytes(parts[1].read_bytes()[:40])
    with pytest.raises(gp.RunDirectoryError, match=re.escape(parts[1].name)):
        _ = gp.load_run(run).stats
    with pytest.warns(RuntimeWarning, match=re.escape(parts[1].name)):
        loaded = gp.load_run(run, on_error="skip")
        stats = loaded.stats
    assert len(stats) > 0 and loaded.skipped_files == [str(parts[1])]


def test_malformed_run_json_names_the_file(tmp_path):
    run = _probe_run(tmp_path / "r")
    (run / "run.json").write_text("{not json")
    with pytest.raises(gp.RunDirectoryError, match=r"run\.json"):
        gp.load_run(run)
    with pytest.warns(RuntimeWarning, match=r"run\.json"):
        assert gp.load_run(run, on_error="skip").meta == {}


def test_missing_run_dir(tmp_path):
    with pytest.raises(gp.RunDirectoryError, match="does not exist"):
        gp.load_run(tmp_path / "nope")


def test_writer_appends_new_parts_after_existing_ones(tmp_path):
    writer = RunWriter(prepare_run_dir(tmp_path / "w"))
    writer.write_meta({"schema_version": 1})
    writer.append("extra", [{"a": 1}])
    writer.flush()
    again = RunWriter(tmp_path / "w")
    again.append("extra", [{"a": 2}])
    again.flush()
    assert sorted(p.name for p in (tmp_path / "w" / "extra").iterdir()) == [
        "part-000000.parquet",
        "part-000001.parquet",
    ]
    assert list(gp.load_run(tmp_path / "w").table("extra")["a"]) == [1, 2]


def test_run_json_is_plain_json(tmp_path):
    run = _probe_run(tmp_path / "r")
    meta = json.loads((run / "run.json").read_text())
    assert meta["schema_version"] == 1 and meta["status"] == "completed"


def test_write_table_keeps_string_columns_with_missing_values(tmp_path):
    import pandas as pd

    writer = RunWriter(prepare_run_dir(tmp_path / "w"))
    writer.write_meta({"schema_version": 1})
    writer.write_table(
        "summary", pd.DataFrame({"arm": ["sgd", "goup"], "mode": [None, "seed"], "x": [1.0, None]})
    )
    back = gp.load_run(tmp_path / "w").table("summary")
    assert back["mode"].isna().tolist() == [True, False] and back["mode"].iloc[1] == "seed"
    assert back["x"].isna().tolist() == [False, True]


# ----------------------------------------------------------------------------- whole tables


def _frame(n, offset=0.0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(n)
    return pd.DataFrame(
        {
            "param": [f"p{i % 4}" for i in range(n)],
            "step": [i // 4 for i in range(n)],
            "value": rng.normal(size=n) + offset,
            "label": [None if i % 5 == 0 else f"x{i}" for i in range(n)],
        }
    )


def _table_run(tmp_path):
    from goup_probe import schema

    path = prepare_run_dir(tmp_path / "run")
    RunWriter(path).write_meta({"schema_version": schema.SCHEMA_VERSION, "status": "completed"})
    return path


def test_replace_table_swaps_in_the_new_content_and_leaves_nothing_behind(tmp_path):
    from goup_probe import store

    path = _table_run(tmp_path)
    writer = RunWriter(path)
    writer.write_table("extra", _frame(8))
    writer.write_table("extra", _frame(8))
    store.replace_table(path, "extra", _frame(12, offset=100.0))
    back = store.read_table(path, "extra")
    assert len(back) == 12 and back["value"].min() > 50
    assert back["label"].isna().sum() == 3  # missing strings stay nulls
    assert sorted(p.name for p in path.iterdir()) == ["extra", "run.json"]
    assert store.list_tables(path) == ["extra"]
    assert store.delete_table(path, "extra") and not store.delete_table(path, "extra")
    assert store.list_tables(path) == [] and store.read_table(path, "extra").empty


@pytest.mark.parametrize("fail_at", ["write", "first rename", "second rename"])
def test_replace_table_failing_midway_keeps_the_old_table(tmp_path, monkeypatch, fail_at):
    import os

    import pandas.testing as pdt
    import pyarrow.parquet as pq

    from goup_probe import store

    path = _table_run(tmp_path)
    store.replace_table(path, "extra", _frame(8))
    before = store.read_table(path, "extra")
    real_replace, renames = os.replace, []

    def flaky_replace(src, dst):
        if not str(src).endswith(".tmp"):  # not a part's own temp file: a folder swap
            renames.append(src)
            if (fail_at == "first rename" and len(renames) == 1) or (
                fail_at == "second rename" and len(renames) == 2
            ):
                raise OSError("simulated crash")
        return real_replace(src, dst)

    def flaky_write(*args, **kwargs):
        raise OSError("simulated crash")

    if fail_at == "write":
        monkeypatch.setattr(pq, "write_table", flaky_write)
    monkeypatch.setattr(os, "replace", flaky_replace)
    with pytest.raises(OSError, match="simulated crash"):
        store.replace_table(path, "extra", _frame(20, offset=100.0))
    monkeypatch.undo()
    pdt.assert_frame_equal(store.read_table(path, "extra"), before)
    assert sorted(p.name for p in path.iterdir()) == ["extra", "run.json"]


def test_a_crash_between_the_two_renames_leaves_the_new_table_readable(tmp_path):
    import os

    import pandas.testing as pdt

    from goup_probe import store

    path = _table_run(tmp_path)
    store.replace_table(path, "extra", _frame(8))
    new = _frame(20, offset=100.0)
    # What a process killed between the two renames leaves: the old table aside, the new one staged.
    staging = path / ".extra.replace"
    staging.mkdir()
    RunWriter(staging).write_table("extra", new)
    os.replace(path / "extra", staging / ".old")
    expected = store.read_table(staging, "extra")
    pdt.assert_frame_equal(store.read_table(path, "extra"), expected)
    assert gp.load_run(path).tables == ["extra"]
    store.replace_table(path, "extra", _frame(4))  # the next replace finishes the swap, then replaces
    assert len(store.read_table(path, "extra")) == 4
    assert sorted(p.name for p in path.iterdir()) == ["extra", "run.json"]


def test_read_table_columns_and_filters_equal_a_pandas_filter_of_the_full_table(tmp_path):
    import pandas.testing as pdt

    from goup_probe import store

    path = _table_run(tmp_path)
    writer = RunWriter(path)
    for k in range(3):  # several parts
        writer.write_table("extra", _frame(40 + k, offset=k))
    full = store.read_table(path, "extra")
    filters = [("param", "in", ["p1", "p3"]), ("step", ">=", 2)]
    got = store.read_table(path, "extra", columns=["step", "value"], filters=filters)
    want = full[full["param"].isin(["p1", "p3"]) & (full["step"] >= 2)][["step", "value"]]
    pdt.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    # A disjunction, a column no part has, a filter no row passes, an absent table.
    got = store.read_table(path, "extra", filters=[[("step", "==", 0)], [("param", "==", "p2")]])
    want = full[(full["step"] == 0) | (full["param"] == "p2")]
    pdt.assert_frame_equal(got.reset_index(drop=True), want.reset_index(drop=True))
    assert list(store.read_table(path, "extra", columns=["value", "nope"]).columns) == ["value"]
    assert store.read_table(path, "extra", filters=[("step", ">", 10**6)]).empty
    assert store.read_table(path, "absent", filters=[("step", "==", 0)]).empty
    assert store.table_columns(path, "extra") == ["param", "step", "value", "label"]
