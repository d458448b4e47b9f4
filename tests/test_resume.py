"""Issue 13: a job resumed from a checkpoint continues its run in the same directory, each step once."""

import copy

import pandas as pd
import pytest
import torch

import goup_probe as gp
from goup_probe.store import RunDirectoryError
from tests.helpers import TinyNet, batches

DATA = batches(10, seed=3)
KEY = ["step", "param", "quantity"]


def _steps(model, opt, data):
    for x, y in data:
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def _fresh():
    torch.manual_seed(0)
    model = TinyNet()
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def _reference(run_dir):
    model, opt = _fresh()
    with gp.attach(model, opt, run_dir=run_dir, every=2, tracers=4):
        _steps(model, opt, DATA)
    return gp.load_run(run_dir)


def test_resume_after_a_crash_past_the_checkpoint_equals_an_uninterrupted_run(tmp_path):
    reference = _reference(tmp_path / "reference")
    model, opt = _fresh()
    probe = gp.attach(model, opt, run_dir=tmp_path / "run", every=2, tracers=4, flush_rows=1)
    _steps(model, opt, DATA[:6])
    checkpoint = copy.deepcopy({"model": model.state_dict(), "opt": opt.state_dict()})  # after step 5
    _steps(model, opt, DATA[6:9])  # steps 6..8 reach the disk, then the job dies without a word
    probe._writer.flush()
    probe._hooks.remove()
    probe._record.opened.release()  # what a killed process leaves: rows past the checkpoint, status running

    model, opt = _fresh()
    model.load_state_dict(checkpoint["model"])
    opt.load_state_dict(checkpoint["opt"])
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=2, tracers=4, resume=6) as resumed:
        _steps(model, opt, DATA[6:])
    assert resumed.step == 10
    run = gp.load_run(tmp_path / "run")
    assert run.status == "completed" and run.meta["steps"] == 10 and run.meta["captured_steps"] == 5
    (entry,) = run.meta["resumes"]
    assert entry["at_step"] == 6 and entry["previous_status"] == "running"
    assert entry["dropped_rows"]["stats"] > 0 and entry["dropped_rows"]["trajectories"] == 3 * 4
    for table in ("stats", "trajectories"):
        got = run.table(table).sort_values(KEY[:2] if table == "trajectories" else KEY)
        want = getattr(reference, table).sort_values(KEY[:2] if table == "trajectories" else KEY)
        assert len(got) == len(want)
        for column in ("mean", "std", "skew") if table == "stats" else ("theta", "grad"):
            if column in got:
                pd.testing.assert_series_equal(
                    got[column].reset_index(drop=True), want[column].reset_index(drop=True), rtol=1e-6
                )


def test_resume_true_continues_after_the_last_step(tmp_path):
    model, opt = _fresh()
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=1):
        _steps(model, opt, DATA[:3])
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=1, resume=True):
        _steps(model, opt, DATA[3:5])
    run = gp.load_run(tmp_path / "run")
    assert sorted(run.stats["step"].unique()) == [0, 1, 2, 3, 4]
    assert run.meta["resumes"][0]["previous_status"] == "completed"


def test_resume_refuses_a_run_of_other_tensors_and_changes_nothing(tmp_path):
    model, opt = _fresh()
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=1, tracers=4):
        _steps(model, opt, DATA[:3])
    before = gp.load_run(tmp_path / "run").stats
    with pytest.raises(RunDirectoryError, match=r"tracked tensors differ.*fc1"):
        gp.attach(model, opt, run_dir=tmp_path / "run", layers="fc2.*", tracers=4, resume=1)
    with pytest.raises(RunDirectoryError, match="tracers was 4, now 8"):
        gp.attach(model, opt, run_dir=tmp_path / "run", tracers=8, resume=1)
    after = gp.load_run(tmp_path / "run")
    assert after.status == "completed" and len(after.stats) == len(before)


def test_resume_option_errors(tmp_path):
    model, opt = _fresh()
    with pytest.raises(RunDirectoryError, match=r"no run\.json: there is no run to resume"):
        gp.attach(model, opt, run_dir=tmp_path / "none", resume=True)
    assert not (tmp_path / "none").exists()  # nothing created
    with pytest.raises(ValueError, match="resume and overwrite"):
        gp.attach(model, opt, run_dir=tmp_path / "x", resume=3, overwrite=True)
    with pytest.raises(ValueError, match="resume must be >= 0"):
        gp.attach(model, opt, run_dir=tmp_path / "x", resume=-1)
    with pytest.raises(TypeError, match="resume must be an integer"):
        gp.attach(model, opt, run_dir=tmp_path / "x", resume=2.0)


def test_resuming_removes_the_temporaries_killed_writers_left(tmp_path):
    model, opt = _fresh()
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=1):
        _steps(model, opt, DATA[:2])
    left = [tmp_path / "run" / "stats" / ".part-k1ll3d0a.tmp", tmp_path / "run" / ".run.json.k1ll3d0b.tmp"]
    for path in left:
        path.write_bytes(b"half a file")
    assert len(gp.load_run(tmp_path / "run").stats) > 0 and all(
        p.exists() for p in left
    )  # reading keeps them
    with gp.attach(model, opt, run_dir=tmp_path / "run", every=1, resume=True):
        assert not any(p.exists() for p in left)
        _steps(model, opt, DATA[2:3])
    run = gp.load_run(tmp_path / "run")
    assert run.meta["temporaries_removed"] == 2 and sorted(run.stats["step"].unique()) == [0, 1, 2]
