"""Run directory: refusal to clobber, atomic parts, readable while damaged or in progress."""

import json
import re

import pytest
import torch

import goup_probe as gp
from goup_probe.store import RunWriter, prepare_run_dir
from tests.helpers import TinyNet, batches, train


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
