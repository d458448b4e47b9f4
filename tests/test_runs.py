"""Many runs: gp.load_runs, ``goup-probe compare-runs`` and ``goup-probe watch``."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import goup_probe as gp
from goup_probe import runs as runs_module
from goup_probe.cli import main
from goup_probe.store import RunLock, update_meta
from goup_probe.store.lock import LOCK_NAME
from goup_probe.watch import CLEAR_SCREEN, watch
from tests.helpers import TinyNet, batches, train

X = "theta_minus_grad"


class OtherNet(nn.Module):
    """Shares ``fc1.*`` with TinyNet (matched by name), has ``head.*`` instead of ``fc2.*``."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(torch.relu(self.fc1(x)))


def _make_run(path, model, optimizer, steps, metadata, **options):
    with gp.attach(model, optimizer, run_dir=path, every=2, metadata=metadata, **options):
        train(model, optimizer, batches(steps, seed=len(str(path))))
    return path


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """sweep/sgd (SGD), sweep/adam (Adam, with an ou table), other/sgd (another model, same folder name)."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    model = TinyNet()
    _make_run(
        root / "sweep" / "sgd",
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        8,
        {"seed": 0, "init": "default", "batch_size": 32, "sweep": {"arm": "a"}, "tags": ["x", "y"]},
    )
    torch.manual_seed(1)
    model = TinyNet()
    _make_run(
        root / "sweep" / "adam",
        model,
        torch.optim.Adam(model.parameters(), lr=0.01),
        30,
        {"seed": 1, "init": "normal", "batch_size": 16, "sweep": {"arm": "b"}},
        tracers=4,
    )
    gp.validate_ou(root / "sweep" / "adam", write=True)
    torch.manual_seed(2)
    model = OtherNet()
    _make_run(root / "other" / "sgd", model, torch.optim.SGD(model.parameters(), lr=0.05), 6, {"seed": 2})
    return root


@pytest.fixture(scope="module")
def lone(tmp_path_factory):
    """A run of a model whose parameter names no other run has (``0.weight``, ``0.bias``)."""
    path = tmp_path_factory.mktemp("lone") / "lone"
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 3))
    return _make_run(path, model, torch.optim.SGD(model.parameters(), lr=0.1), 4, {"seed": 3})


def _concat_independently(paths):
    """Each run's stats through gp.load_run, tagged with the given names, concatenated."""
    frames = []
    for name, path in paths:
        stats = gp.load_run(path).stats.copy()
        stats.insert(0, "run", name)
        frames.append(stats)
    return pd.concat(frames, ignore_index=True)


# ----------------------------------------------------------------------------- load_runs


def test_load_runs_equals_each_run_read_alone(sweep):
    df = gp.load_runs(str(sweep / "sweep" / "*"))
    expected = _concat_independently([("adam", sweep / "sweep" / "adam"), ("sgd", sweep / "sweep" / "sgd")])
    assert list(df["run"].unique()) == ["adam", "sgd"]  # glob matches sorted by name
    pd.testing.assert_frame_equal(df[list(expected.columns)], expected)
    assert df.attrs["runs"]["run"].tolist() == ["adam", "sgd"]


def test_run_level_columns_come_from_run_json_and_metadata(sweep):
    df = gp.load_runs([sweep / "sweep" / "sgd", sweep / "sweep" / "adam"])
    per_run = df.groupby("run", sort=False).first()
    assert per_run.index.tolist() == ["sgd", "adam"]  # the order given
    assert per_run["run_optimizer"].tolist() == ["SGD", "Adam"]
    assert per_run["run_lr"].tolist() == [0.1, 0.01]
    assert per_run["run_seed"].tolist() == [0, 1]
    assert per_run["run_init"].tolist() == ["default", "normal"]
    assert per_run["run_batch_size"].tolist() == [32, 16]
    assert per_run["run_meta_sweep.arm"].tolist() == ["a", "b"]
    assert per_run["run_status"].tolist() == ["completed", "completed"]
    assert per_run["run_steps"].tolist() == [8, 30]
    captured = [gp.load_run(sweep / "sweep" / n).stats["step"].nunique() for n in ("sgd", "adam")]
    assert per_run["run_captured_steps"].tolist() == captured == [4, 15]
    assert "run_meta_tags" not in df.columns  # a list is not a scalar: left out
    # every row of a run carries that run's values
    assert (df.loc[df["run"] == "adam", "run_optimizer"] == "Adam").all()


def test_columns_and_filters_are_pushed_into_read_table(sweep, monkeypatch):
    calls = []
    real = runs_module.read_table

    def spy(run_dir, name, columns=None, filters=None, **kw):
        calls.append((Path(run_dir).name, name, columns, filters))
        return real(run_dir, name, columns=columns, filters=filters, **kw)

    monkeypatch.setattr(runs_module, "read_table", spy)
    filters = [("quantity", "==", X), ("step", ">=", 4)]
    df = gp.load_runs(str(sweep / "sweep" / "*"), columns=["step", "param", "w1_sigma"], filters=filters)
    table_calls = [c for c in calls if c[2] != ["step"]]  # run_progress's own step-only reads aside
    assert table_calls == [
        ("adam", "stats", ["step", "param", "w1_sigma"], filters),
        ("sgd", "stats", ["step", "param", "w1_sigma"], filters),
    ]
    table_part = [c for c in df.columns if not c.startswith("run")]
    assert ["run", *table_part] == ["run", "step", "param", "w1_sigma"]
    full = _concat_independently([("adam", sweep / "sweep" / "adam"), ("sgd", sweep / "sweep" / "sgd")])
    expected = full[(full["quantity"] == X) & (full["step"] >= 4)][["run", "step", "param", "w1_sigma"]]
    pd.testing.assert_frame_equal(df[["run", "step", "param", "w1_sigma"]], expected.reset_index(drop=True))
    assert df["step"].min() == 4 and len(df) > 0


def test_runs_sharing_a_folder_name_get_unique_names(sweep):
    df = gp.load_runs([sweep / "sweep" / "sgd", sweep / "other" / "sgd"], columns=["param"])
    assert list(df["run"].unique()) == ["sweep/sgd", "other/sgd"]
    assert set(df.loc[df["run"] == "other/sgd", "param"]) == {
        "fc1.weight",
        "fc1.bias",
        "head.weight",
        "head.bias",
    }


def test_a_run_named_twice_is_read_once(sweep):
    df = gp.load_runs([str(sweep / "sweep" / "s*"), sweep / "sweep" / "sgd"], columns=["step"])
    assert df["run"].unique().tolist() == ["sgd"]
    assert len(df) == len(gp.load_run(sweep / "sweep" / "sgd").stats)


def test_load_runs_errors_name_the_offending_pattern_or_path(sweep, tmp_path):
    pattern = str(tmp_path / "nothing-*")
    with pytest.raises(ValueError, match="nothing-"):
        gp.load_runs(pattern)
    (tmp_path / "notes").mkdir()
    with pytest.raises(gp.RunDirectoryError, match="notes"):
        gp.load_runs([sweep / "sweep" / "sgd", tmp_path / "notes"])
    with pytest.raises(gp.RunDirectoryError, match="missing"):
        gp.load_runs(tmp_path / "missing")
    with pytest.warns(RuntimeWarning, match="notes"):
        df = gp.load_runs([sweep / "sweep" / "sgd", tmp_path / "notes"], on_error="skip", columns=["step"])
    assert df["run"].unique().tolist() == ["sgd"]
    with pytest.raises(ValueError, match="run_optimizer"):
        gp.load_runs(sweep / "sweep" / "sgd", filters=[("run_optimizer", "==", "SGD")])
    with pytest.raises(ValueError, match="empty"):
        gp.load_runs([])
    with pytest.raises(TypeError, match="runs"):
        gp.load_runs([3])


# ----------------------------------------------------------------------------- compare-runs


def test_compare_runs_writes_a_page_naming_every_run(sweep, tmp_path, capsys):
    from goup_probe.report.compare_runs import compare_runs

    paths = [sweep / "sweep" / "sgd", sweep / "sweep" / "adam", sweep / "other" / "sgd"]
    out = tmp_path / "page"
    assert main(["compare-runs", *map(str, paths), "--out", str(out)]) == 0
    assert "Compared 3 runs" in capsys.readouterr().out
    page = (out / "index.html").read_text("utf-8")
    for name in ("sweep/sgd", "adam", "other/sgd", "SGD", "Adam"):
        assert name in page
    pngs = sorted((out / "figures").glob("*.png"))
    assert len(pngs) >= 1 and all(p.stat().st_size > 1000 for p in pngs)
    for src in (f"figures/{p.name}" for p in pngs):
        assert f'src="{src}"' in page
    assert "No ou table in: sweep/sgd, other/sgd" in page  # adam has one
    # shared layers: names two runs or more captured, found independently from each run's stats
    params = [set(gp.load_run(p).stats["param"]) for p in paths]
    shared = {n for n in set().union(*params) if sum(n in s for s in params) >= 2}
    result = compare_runs(paths, tmp_path / "again")
    assert set(result.shared) == shared == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert list(result.shared) == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]  # model order


def test_compare_runs_refuses_a_non_empty_out_and_keeps_foreign_files(sweep, tmp_path, capsys):
    runs = [str(sweep / "sweep" / "sgd"), str(sweep / "sweep" / "adam")]
    out = tmp_path / "page"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["compare-runs", *runs, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert main(["compare-runs", *runs, "--out", str(out), "--overwrite"]) == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "index.html").is_file()
    # an earlier page of ours is replaced with --overwrite, refused without
    assert main(["compare-runs", *runs, "--out", str(out)]) == 2
    assert main(["compare-runs", *runs, "--out", str(out), "--overwrite", "--max-layers", "1"]) == 0
    # a page goup_probe did not write is never replaced
    foreign = tmp_path / "site"
    foreign.mkdir()
    (foreign / "index.html").write_text("<html>my site</html>")
    assert main(["compare-runs", *runs, "--out", str(foreign), "--overwrite"]) == 2
    assert "did not write" in capsys.readouterr().err
    assert (foreign / "index.html").read_text() == "<html>my site</html>"
    assert not (foreign / "figures").exists()
    # nor is a run directory used as the page folder
    assert main(["compare-runs", *runs, "--out", runs[0], "--overwrite"]) == 2
    assert not (Path(runs[0]) / "index.html").exists()


def test_compare_runs_without_shared_layers_still_summarises_each_run(sweep, lone, tmp_path):
    from goup_probe.report.compare_runs import compare_runs

    result = compare_runs([sweep / "sweep" / "sgd", lone], tmp_path / "page")
    page = result.index.read_text("utf-8")
    assert result.shared == () and result.layers == ()
    assert "share no layer" in page
    assert "None of the runs has an ou table" in page
    assert '<td class="text">lone</td>' in page and '<td class="text">sgd</td>' in page
    assert len(result.figures) == 1  # the verdict shares, one bar per run


# ----------------------------------------------------------------------------- watch


def test_watch_of_a_finished_run_prints_once_and_exits(sweep, capsys):
    assert main(["watch", str(sweep / "sweep" / "sgd"), "--interval", "0.01"]) == 0
    out = capsys.readouterr().out
    assert out.count("status completed") == 1
    assert "the run is completed; watch ends" in out and CLEAR_SCREEN not in out  # not a terminal


def _running_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    update_meta(dst, {"status": "running"})
    return dst


def test_watch_of_a_running_run_refreshes_until_max_updates(sweep, tmp_path, capsys):
    run = _running_copy(sweep / "sweep" / "sgd", tmp_path / "live")
    lock = RunLock(run).acquire()  # a live writer: this process
    try:
        assert main(["watch", str(run), "--interval", "0.01", "--max-updates", "3"]) == 0
    finally:
        lock.release()
    out = capsys.readouterr().out
    assert out.count("status running") == 3
    assert out.count("fc1.weight") == 3  # the summary table, each time
    assert "stopped after 3 updates" in out


def test_watch_stops_when_the_writer_of_a_running_run_is_gone(sweep, tmp_path, capsys):
    run = _running_copy(sweep / "sweep" / "sgd", tmp_path / "crashed")
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(gone.stdout)
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": "x"}))
    assert main(["watch", str(run), "--interval", "0.01", "--max-updates", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("status running") == 1 and f"pid {pid}" in out and "has exited" in out


def test_watch_clears_a_terminal_and_ctrl_c_exits_zero(sweep, tmp_path):
    run = _running_copy(sweep / "sweep" / "sgd", tmp_path / "live")
    shown = []

    def interrupt(_seconds):
        raise KeyboardInterrupt

    stream = io.StringIO()
    code = watch(run, lambda: shown.append(1), interval=1.0, stream=stream, clear=True, sleep=interrupt)
    assert code == 0 and shown == [1]
    text = stream.getvalue()
    assert text.startswith(CLEAR_SCREEN) and "Ctrl-C" in text
    with pytest.raises(ValueError, match="interval"):
        watch(run, lambda: None, interval=0)
