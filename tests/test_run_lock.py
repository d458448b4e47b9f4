"""Issue 18 #2, #6, #8, #11: one writer per run directory, no half-made run, room for the final status."""

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import pytest
import torch

import goup_probe as gp
from goup_probe.store import RunDirectoryError, RunLockedError
from goup_probe.store.lock import LOCK_NAME
from goup_probe.store.reserve import RESERVE_NAME
from tests.helpers import TinyNet, batches, train

_RACER = textwrap.dedent(
    """
    import sys, time, torch
    sys.path.insert(0, {root!r})
    import goup_probe as gp
    from goup_probe.store import RunDirectoryError, RunLockedError
    from tests.helpers import TinyNet, batches, train
    base, trials, tag = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    model = TinyNet(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, opt, batches(1))  # warm up, then say so and wait for the common start time
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    for k in range(trials):
        while time.time() < start + 0.6 * k:  # both processes attach to directory k at the same moment
            time.sleep(0.0005)
        try:
            with gp.attach(model, opt, run_dir=f"{{base}}/run-{{k}}", every=1, metadata={{"tag": tag}}):
                train(model, opt, batches(3))
                time.sleep(0.2)  # hold the run long enough for the other process to arrive
            print(k, "ok", flush=True)
        except RunLockedError as exc:
            print(k, "locked", flush=True)
        except RunDirectoryError as exc:  # came after the winner had finished
            print(k, "not-empty", flush=True)
    """
)


def _outcomes(stdout):
    found = {}
    for line in stdout.splitlines():
        k, outcome, *_ = line.split(" ", 2)
        found[int(k)] = outcome
    return found


def test_two_processes_racing_for_a_fresh_directory_one_wins(tmp_path):
    """12 trials, two real processes attaching to the same fresh directory at the same instant."""
    trials = 12
    script = _RACER.format(root=os.getcwd())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), str(trials), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    for proc in procs:  # both interpreters are up and warm before the common start is set
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    start = time.time() + 0.5
    for proc in procs:
        proc.stdin.write(f"{start}\n")
        proc.stdin.flush()
    outs = [p.communicate(timeout=180) for p in procs]
    for proc, (_, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    a, b = (_outcomes(out) for out, _ in outs)
    for k in range(trials):
        outcomes = sorted((a[k], b[k]))
        assert outcomes in (["locked", "ok"], ["not-empty", "ok"]), (k, outcomes)
        winner = "a" if a[k] == "ok" else "b"
        run = gp.load_run(tmp_path / f"run-{k}")
        # one complete run, written by the winner alone
        assert run.status == "completed" and run.meta["user"]["tag"] == winner
        assert sorted(run.stats["step"].unique()) == [0, 1, 2]
        assert not run.stats.duplicated(["step", "param", "quantity", "micro_batch"]).any()
        assert not (tmp_path / f"run-{k}" / LOCK_NAME).exists()
    # the lock, not luck, decided: most trials met while the winner was still writing
    locked = sum("locked" in (a[k], b[k]) for k in range(trials))
    print(f"lock race: {locked} of {trials} trials met while the winner was writing")
    assert locked >= trials // 2


def test_second_writer_in_another_process_is_refused_even_with_overwrite(tmp_path):
    run_dir = tmp_path / "r"
    holder = textwrap.dedent(
        f"""
        import sys, time, torch
        sys.path.insert(0, {os.getcwd()!r})
        import goup_probe as gp
        from tests.helpers import TinyNet, batches, train
        model = TinyNet(); opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with gp.attach(model, opt, run_dir={str(run_dir)!r}, every=1):
            train(model, opt, batches(2))
            print("attached", flush=True)
            sys.stdin.readline()  # hold the run until the test says so
            train(model, opt, batches(2))
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout.readline().strip() == "attached"
            model = TinyNet()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            for overwrite in (False, True):
                with pytest.raises(RunLockedError, match=rf"pid {proc.pid} on host") as caught:
                    gp.attach(model, opt, run_dir=run_dir, every=1, overwrite=overwrite)
                assert str(run_dir) in str(caught.value)
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.wait(timeout=120) == 0
        finally:
            proc.kill()
    run = gp.load_run(run_dir)  # the holder's run is whole: nothing of the refused attaches in it
    assert run.status == "completed" and sorted(run.stats["step"].unique()) == [0, 1, 2, 3]
    assert not (run_dir / LOCK_NAME).exists()


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_recorded(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    pid = _dead_pid()
    stale = {"pid": pid, "host": socket.gethostname(), "since": "2026-01-01T00:00:00+00:00"}
    (run_dir / LOCK_NAME).write_text(json.dumps(stale))
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=run_dir, every=1):
        train(model, opt, batches(2))
    run = gp.load_run(run_dir)
    assert f"pid {pid}" in run.meta["lock_taken_over"]
    assert not (run_dir / LOCK_NAME).exists()


def test_a_lock_held_on_another_host_is_never_broken(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": "x"}))
    with pytest.raises(RunLockedError, match="another host"):
        gp.attach(TinyNet(), run_dir=run_dir)
    assert (run_dir / LOCK_NAME).exists()


def test_a_second_probe_in_the_same_process_is_refused(tmp_path):
    model_a, model_b = TinyNet(), TinyNet()
    with gp.attach(model_a, run_dir=tmp_path / "r"):
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            gp.attach(model_b, run_dir=tmp_path / "r", overwrite=True)


def test_a_run_leaves_neither_lock_nor_reserve_behind(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
        assert (tmp_path / "r" / LOCK_NAME).exists()
        assert (tmp_path / "r" / RESERVE_NAME).stat().st_size >= 64 * 1024
        train(model, opt, batches(2))
    assert sorted(p.name for p in (tmp_path / "r").iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- #6: a full disk at attach
@pytest.mark.parametrize("failing", ["run.json", "tracers", "reserve"])
def test_disk_full_at_attach_refuses_and_leaves_no_half_made_run(tmp_path, monkeypatch, failing):
    import pyarrow.parquet as pq

    from goup_probe.store import reserve as reserve_module
    from goup_probe.store import writer as writer_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {
        "run.json": (writer_module, "atomic_write_text"),
        "tracers": (pq, "write_table"),
        "reserve": (reserve_module.os, "posix_fallocate"),
    }[failing]
    monkeypatch.setattr(*target, full)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for run_dir, existed in ((tmp_path / "new", False), (tmp_path / "empty", True)):
        if existed:
            run_dir.mkdir()
        with pytest.raises(RunDirectoryError, match="No space left") as caught:
            gp.attach(model, opt, run_dir=run_dir, every=1)
        assert str(run_dir) in str(caught.value)
        assert run_dir.exists() == existed and (not existed or list(run_dir.iterdir()) == [])
        train(model, opt, batches(1))  # no hook was left on the optimizer
    monkeypatch.undo()
    with gp.attach(model, opt, run_dir=tmp_path / "empty", every=1):  # and the directory is usable
        train(model, opt, batches(1))
    assert gp.load_run(tmp_path / "empty").status == "completed"


# ---------------------------------------------------------------- #8: room for the final status
class _SmallDisk:
    """A file system of ``free`` bytes, modelled at the run's write calls (data parts, run.json, reserve)."""

    def __init__(self, monkeypatch, free):
        import pyarrow.parquet as pq

        from goup_probe.capture import record as record_module
        from goup_probe.store import reserve as reserve_module
        from goup_probe.store import writer as writer_module

        self.free = free
        real_table, real_text = pq.write_table, writer_module.atomic_write_text
        real_release = record_module.release_space

        def write_table(data, where, **kwargs):
            real_table(data, where, **kwargs)
            self._take(os.path.getsize(where), lambda: os.unlink(where))

        def atomic_write_text(path, text, mode=None):
            old = path.stat().st_size if path.exists() else 0
            self._take(len(text.encode("utf-8")))  # the new file exists before the old one goes
            self.free += old
            real_text(path, text, mode)

        def fallocate(fd, offset, size):
            self._take(size)

        def release_space(run_dir):
            reserve = run_dir / RESERVE_NAME
            self.free += reserve.stat().st_size if reserve.exists() else 0
            real_release(run_dir)

        monkeypatch.setattr(pq, "write_table", write_table)
        monkeypatch.setattr(writer_module, "atomic_write_text", atomic_write_text)
        monkeypatch.setattr(reserve_module.os, "posix_fallocate", fallocate, raising=False)
        monkeypatch.setattr(record_module, "release_space", release_space)

    def _take(self, nbytes, undo=None):
        if nbytes > self.free:
            if undo is not None:
                undo()
            raise OSError(errno.ENOSPC, "No space left on device")
        self.free -= nbytes


def test_final_status_is_written_when_the_disk_filled_during_training(tmp_path, monkeypatch):
    """Simulated at the write calls: the run's own rows fill a 160 kB disk; the final status still fits."""
    disk = _SmallDisk(monkeypatch, free=160_000)
    model = TinyNet(d_in=32, hidden=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(RuntimeWarning, match="capture stopped"):
        with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, flush_rows=10) as probe:
            train(model, opt, batches(120, d_in=32))
    assert probe.capture_stopped and probe.step == 120 and disk.free < 64 * 1024
    monkeypatch.undo()
    run = gp.load_run(tmp_path / "r")
    assert run.status == "completed" and run.meta["steps"] == 120
    assert not (tmp_path / "r" / RESERVE_NAME).exists()


def _mount_tmpfs(path, size):
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_final_status_on_a_real_nearly_full_tmpfs(tmp_path):
    """A real 1 MiB tmpfs filled by the run's own rows: the status still ends `completed`."""
    mount = tmp_path / "small"
    if not _mount_tmpfs(mount, "1m"):
        pytest.skip("mount -t tmpfs is not permitted here")
    try:
        model = TinyNet(d_in=64, hidden=256)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with gp.attach(model, opt, run_dir=mount / "r", every=1, flush_rows=20) as probe:
                train(model, opt, batches(200, d_in=64))
        assert probe.capture_stopped and probe.step == 200  # the disk filled; training went on
        run = gp.load_run(mount / "r")
        assert run.status == "completed"
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ---------------------------------------------------------------- #11: a non-main thread
def test_attaching_from_a_thread_warns_and_records_it(tmp_path):
    caught, errors = [], []

    def work():
        try:
            model = TinyNet()
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                with gp.attach(model, opt, run_dir=tmp_path / "r", every=1):
                    train(model, opt, batches(2))
            caught.extend(str(w.message) for w in seen)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors
    assert any("thread other than the main thread" in m and "SIGTERM" in m for m in caught)
    assert "non-main thread" in gp.load_run(tmp_path / "r").meta["capture"]["sigterm_handler"]


def test_attaching_from_the_main_thread_does_not_warn(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with gp.attach(TinyNet(), run_dir=tmp_path / "r"):
            pass
    assert "sigterm_handler" not in gp.load_run(tmp_path / "r").meta["capture"]
