"""Issue 18 (4, 5, 10): damaged or odd run directories fail cleanly, naming the file, and deleting nothing."""

import json
import os
import re
import stat
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import goup_probe as gp
from goup_probe import schema
from goup_probe.store import RunWriter, load_run, read_meta, replace_table, update_meta
from goup_probe.store.tables import list_tables, part_files, read_table, remove_stale_temporaries
from goup_probe.store.writer import current_umask
from tests.helpers import TinyNet, batches, train, uncompacted


def _probe_run(path, steps=3, **kw):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=path, every=1, flush_rows=8, **kw):
        train(model, opt, batches(steps))
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    with uncompacted():
        return _probe_run(tmp_path_factory.mktemp("pristine") / "r")


@pytest.fixture
def run(pristine, tmp_path):
    """A fresh copy of a small real run (3 steps, several parts per table)."""
    import shutil

    return shutil.copytree(pristine, tmp_path / "r")


def _footer_rows(folder):
    """Rows of a table from the Parquet footers of its regular part files (independent of read_table)."""
    return sum(
        pq.ParquetFile(p).metadata.num_rows
        for p in folder.iterdir()
        if re.fullmatch(r"part-\d{6}\.parquet", p.name) and p.is_file() and not p.is_symlink()
    )


# ----------------------------------------------------------------------------- 4: run.json
def test_a_normal_run_loads_every_table_whole(run):
    loaded = load_run(run)
    assert loaded.tables == ["samples", "stats", "tracers", "trajectories"]
    for name in loaded.tables:
        assert len(loaded.table(name)) == _footer_rows(run / name) > 0
    assert len(part_files(run / "stats")) > 2


def test_run_json_that_is_not_utf8_names_the_file(run):
    (run / "run.json").write_bytes(b'{"schema_version": 1, "user": "caf\xe9"}')
    with pytest.raises(gp.RunDirectoryError, match=r"run\.json is not UTF-8"):
        load_run(run)
    with pytest.raises(gp.RunDirectoryError, match=r"run\.json"):
        read_meta(run)
    with pytest.warns(RuntimeWarning, match=r"run\.json is not UTF-8"):
        loaded = load_run(run, on_error="skip")
    assert loaded.meta == {} and len(loaded.stats) == _footer_rows(run / "stats")


@pytest.mark.parametrize("opening", ["[", '{"a":'])
def test_run_json_nested_100000_deep_names_the_file(run, opening):
    closing = "]" if opening == "[" else "}"
    (run / "run.json").write_text(opening * 100_000 + ("1" if opening != "[" else "") + closing * 100_000)
    with pytest.raises(gp.RunDirectoryError, match=r"run\.json is nested too deeply"):
        load_run(run)
    with pytest.warns(RuntimeWarning, match=r"run\.json is nested too deeply"):
        assert load_run(run, on_error="skip").meta == {}


@pytest.mark.parametrize("version", ["99", "1", 2.0, 1.0, True, False, None, [1], -1, 0, 99])
def test_bad_schema_version_names_run_json_and_the_value(run, version):
    meta = json.loads((run / "run.json").read_text())
    meta["schema_version"] = version
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(gp.RunDirectoryError) as caught:
        load_run(run)
    message = str(caught.value)
    assert str(run / "run.json") in message
    assert f"schema_version {version!r}" in message


def test_valid_or_absent_schema_version_is_accepted(run):
    meta = json.loads((run / "run.json").read_text())
    assert meta["schema_version"] == schema.SCHEMA_VERSION
    assert load_run(run).meta == meta
    del meta["schema_version"]  # comparison runs write none
    (run / "run.json").write_text(json.dumps(meta))
    assert load_run(run).meta == meta


# ----------------------------------------------------------------------------- 5: part schemas
def _only_part(run, table, data):
    for part in (run / table).iterdir():
        part.unlink()
    target = run / table / "part-000000.parquet"
    pq.write_table(data, target)
    return target


def test_only_part_with_foreign_columns_raises_naming_it(run):
    bad = _only_part(run, "stats", pa.table({"foo": [1, 2], "bar": ["x", "y"]}))
    with pytest.raises(gp.RunDirectoryError, match=re.escape(str(bad))) as caught:
        _ = load_run(run).stats
    assert "quantity" in str(caught.value) and "'stats'" in str(caught.value)
    with pytest.raises(gp.RunDirectoryError, match=re.escape(str(bad))):
        read_table(run, "stats", columns=["step"])  # a projection does not hide a foreign part
    with pytest.warns(RuntimeWarning, match=re.escape(str(bad))):
        loaded = load_run(run, on_error="skip")
        stats = loaded.stats
    assert stats.empty and list(stats.columns) == list(schema.STATS_COLUMNS)
    assert loaded.skipped_files == [str(bad)]


def test_declared_column_of_the_wrong_type_raises_naming_part_and_column(run):
    good = pq.read_table(part_files(run / "samples")[0])
    index = good.schema.get_field_index("step")
    bad = _only_part(run, "samples", good.set_column(index, "step", good["step"].cast(pa.string())))
    with pytest.raises(gp.RunDirectoryError, match=re.escape(str(bad))) as caught:
        _ = load_run(run).samples
    assert "step is string, declared int64" in str(caught.value)


def test_extra_columns_and_narrower_types_are_accepted(run):
    parts = part_files(run / "stats")
    expected = pq.read_table(parts[0]).to_pandas()
    first = pq.read_table(parts[0])
    index = first.schema.get_field_index("step")
    widened = first.set_column(index, "step", first["step"].cast(pa.int32()))
    widened = widened.append_column("my_statistic", pa.array([0.5] * first.num_rows))
    pq.write_table(widened, parts[0])
    stats = load_run(run).stats
    assert len(stats) == _footer_rows(run / "stats")
    assert str(stats["step"].dtype) == "int64"
    head = stats.iloc[: len(expected)]
    assert head["step"].tolist() == expected["step"].tolist()
    assert head["my_statistic"].tolist() == [0.5] * len(expected)
    assert stats["my_statistic"].iloc[len(expected) :].isna().all()


def test_a_part_from_an_older_version_reads_its_missing_statistics_as_null(run):
    """Statistics added later (L-moments, tail fits, shape, goup_fit_p) are null in old parts, not refused."""
    part = part_files(run / "stats")[0]
    current = pq.read_table(part)
    later = ["l_kurt", "t_nu", "best_fit", "shape", "goup_fit_p", "skew_se_null"]
    old = current.drop_columns(later).append_column("goup_w2_rel", pa.array([1.4] * current.num_rows))
    pq.write_table(old, part)
    stats = load_run(run).stats
    assert len(stats) == _footer_rows(run / "stats")
    head = stats.iloc[: current.num_rows]
    assert head[["l_kurt", "t_nu", "goup_fit_p", "skew_se_null"]].isna().all().all()
    assert head["best_fit"].isna().all() and head["shape"].isna().all()
    assert head["goup_w2_rel"].tolist() == [1.4] * current.num_rows  # a retired column is kept as extra
    np.testing.assert_array_equal(
        head["shapiro_p"].to_numpy(), current["shapiro_p"].to_numpy(zero_copy_only=False)
    )
    assert set(schema.STATS_COLUMNS) <= set(stats.columns)


def test_a_stats_part_without_an_identity_column_is_refused(run):
    part = part_files(run / "stats")[0]
    pq.write_table(pq.read_table(part).drop_columns(["status"]), part)
    with pytest.raises(gp.RunDirectoryError, match=re.escape(str(part))) as caught:
        _ = load_run(run).stats
    assert "lacks columns ['status']" in str(caught.value)


# ----------------------------------------------------------------------------- 10: odd files
@pytest.mark.parametrize("kind", ["symlink to its folder", "symlink to a part", "folder"])
def test_entries_named_like_parts_that_are_not_regular_files_are_not_parts(run, kind):
    folder = run / "stats"
    rows = _footer_rows(folder)
    assert len(load_run(run).stats) == rows
    odd = folder / "part-999999.parquet"
    if kind == "symlink to its folder":
        odd.symlink_to(folder)
    elif kind == "symlink to a part":
        odd.symlink_to(part_files(folder)[0])
    else:
        odd.mkdir()
        pq.write_table(pq.read_table(part_files(folder)[0]), odd / "part-000000.parquet")
    assert odd not in part_files(folder)
    with pytest.raises(gp.RunDirectoryError, match=re.escape(str(odd))) as caught:
        _ = load_run(run).stats
    assert ("symlink" if kind.startswith("symlink") else "a folder") in str(caught.value)
    with pytest.warns(RuntimeWarning, match=re.escape(str(odd))):
        loaded = load_run(run, on_error="skip")
        assert len(loaded.stats) == rows
    assert loaded.skipped_files == [str(odd)]


def test_a_table_whose_only_part_is_a_symlink_is_not_listed(run):
    (run / "extra").mkdir()
    (run / "extra" / "part-000000.parquet").symlink_to(part_files(run / "stats")[0])
    assert "extra" not in list_tables(run)


def test_load_run_says_what_a_path_that_is_no_directory_is(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    cases = {
        "file": "is a file, not a run directory",
        "a": "is a symlink loop",
        "dangling": "is a broken symlink",
        "missing": "does not exist",
    }
    for name, says in cases.items():
        for on_error in ("raise", "skip"):
            with pytest.raises(gp.RunDirectoryError, match=re.escape(f"{str(tmp_path / name)!r} {says}")):
                load_run(tmp_path / name, on_error=on_error)
    assert (tmp_path / "file").read_text() == "x"


def _record_temporaries(monkeypatch):
    """Names tempfile.mkstemp hands the store's writers (the real naming, not a copy of it)."""
    made = []
    real = tempfile.mkstemp

    def recording(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        made.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording)
    return made


def _left_by_killed_writers(run, made):
    """Recreate, as a killed writer leaves them, the part and run.json temporaries the writers made."""
    parts = sorted({os.path.basename(n) for n in made if os.path.dirname(n) == str(run / "stats")})
    metas = sorted({os.path.basename(n) for n in made if os.path.basename(n).startswith(".run.json.")})
    assert parts and metas
    left = [run / "stats" / parts[0], run / "samples" / parts[-1], run / metas[0]]
    for path in left:
        path.write_bytes(b"PAR1 half-written garbage")
    return left


def test_hidden_temporaries_are_never_counted_read_or_deleted_by_loading(tmp_path, monkeypatch):
    made = _record_temporaries(monkeypatch)
    run = _probe_run(tmp_path / "r")
    monkeypatch.undo()
    meta = json.loads((run / "run.json").read_text())
    left = _left_by_killed_writers(run, made)
    (run / "only_temps").mkdir()
    only = run / "only_temps" / left[0].name
    only.write_bytes(b"garbage")
    loaded = load_run(run)  # any warning fails the test (filterwarnings = error)
    assert loaded.meta == meta
    assert loaded.tables == ["samples", "stats", "tracers", "trajectories"]
    assert len(loaded.stats) == _footer_rows(run / "stats")
    assert len(loaded.samples) == _footer_rows(run / "samples")
    assert all(p.read_bytes() == b"PAR1 half-written garbage" for p in left) and only.exists()


def test_remove_stale_temporaries_deletes_only_old_toolkit_temporaries(tmp_path, monkeypatch):
    made = _record_temporaries(monkeypatch)
    run = _probe_run(tmp_path / "r")
    monkeypatch.undo()
    stale = _left_by_killed_writers(run, made)
    fresh = run / "trajectories" / ".part-fresh123.tmp"
    fresh.write_bytes(b"being written")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    keep = [
        fresh,
        run / "notes.tmp",
        run / ".run.json.bak",
        run / ".part-abcdefgh.tmp",  # a part temporary outside a table folder
        run / "stats" / ".part-short.tmp",
        run / "stats" / "part-abcdefgh.tmp",
        run / ".stats.replace" / "stats" / ".part-abcdefgh.tmp",  # hidden folder: not entered
        outside / ".part-abcdefgh.tmp",  # reached through a symlinked folder: not entered
    ]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"keep")
    (run / "linked").symlink_to(outside)
    (run / "samples" / ".part-zzzzzzzz.tmp").mkdir()
    (run / "tracers" / ".part-yyyyyyyy.tmp").symlink_to(outside / ".part-abcdefgh.tmp")
    hour_ago = time.time() - 7200
    for path in [*stale, *keep[1:], run / "samples" / ".part-zzzzzzzz.tmp"]:
        os.utime(path, (hour_ago, hour_ago))
    os.utime(run / "tracers" / ".part-yyyyyyyy.tmp", (hour_ago, hour_ago), follow_symlinks=False)
    before = {p for p in run.rglob("*")}

    removed = remove_stale_temporaries(run)
    assert removed == sorted(stale)
    assert not any(p.exists() for p in stale)
    assert {p for p in run.rglob("*")} == before - set(stale)
    assert all(p.read_bytes() == b"keep" for p in keep[1:]) and fresh.exists()
    assert remove_stale_temporaries(run, older_than_s=0) == [fresh]
    assert len(load_run(run).stats) == _footer_rows(run / "stats")


@pytest.mark.parametrize(("value", "error"), [(-1, ValueError), (float("nan"), ValueError), ("9", TypeError)])
def test_remove_stale_temporaries_refuses_a_bad_age(run, value, error):
    with pytest.raises(error, match="older_than_s"):
        remove_stale_temporaries(run, older_than_s=value)


# ----------------------------------------------------------------------------- 10: permissions
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_parts_and_run_json_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        run = _probe_run(tmp_path / "r", steps=2)
        update_meta(run, {"note": "x"})
        replace_table(run, "extra", load_run(run).stats.head(3))
        RunWriter(run).write_table("extra", load_run(run).stats.head(2))
    finally:
        os.umask(previous)
    files = [run / "run.json", *(p for t in list_tables(run) for p in part_files(run / t))]
    assert len(files) > 5 and "extra" in list_tables(run)
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(mode)}


def test_current_umask_reads_without_changing_it():
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still set
    finally:
        os.umask(previous)


# ----------------------------------------------------------------------------- the CLI
def _damage(run, how):
    if how == "not utf-8":
        (run / "run.json").write_bytes(b"\xff\xfe{}")
        return run / "run.json"
    if how == "nested":
        (run / "run.json").write_text("[" * 100_000 + "]" * 100_000)
        return run / "run.json"
    if how == "schema_version":
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "schema_version": "99"}))
        return run / "run.json"
    return _only_part(run, "stats", pa.table({"foo": [1], "bar": ["x"]}))


@pytest.mark.parametrize("how", ["not utf-8", "nested", "schema_version", "foreign part"])
def test_cli_summary_of_a_damaged_run_is_one_line_naming_the_file(run, how):
    named = _damage(run, how)
    done = subprocess.run(
        [sys.executable, "-m", "goup_probe", "summary", str(run)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr and str(named) in lines[0]
    assert lines[0].startswith("goup-probe: error: ")
