"""The read side reads only what it uses (issue 17): projections and filters pushed into the store.

Each test compares the projected, filtered reads with the same analysis of a
run read whole, and spies on the store's reader to see what was asked of it.
"""

import hashlib
import re

import numpy as np
import pandas as pd
import pytest
import torch

import goup_probe as gp
from goup_probe import ou, schema, tracks
from goup_probe.report import data as report_data
from goup_probe.report.data import UNDRAWN_STATS_COLUMNS
from goup_probe.store import run as store_run
from goup_probe.summary import layer_summary, run_progress, was_tested
from tests.helpers import TinyNet, batches, train, uncompacted


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A probe run in many small parts: stats every 5 steps, samples, 8 tracers over 80 steps."""
    path = tmp_path_factory.mktemp("read-side") / "run"
    torch.manual_seed(0)
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with (
        uncompacted(),
        gp.attach(
            model,
            opt,
            run_dir=path,
            every=5,
            tracers=8,
            keep_samples=50,
            keep_sample_steps=None,
            flush_rows=16,
        ),
    ):
        train(model, opt, batches(80))
    assert len(list((path / "trajectories").glob("part-*.parquet"))) > 3  # several parts to read through
    return path


@pytest.fixture
def spy(monkeypatch):
    """Every read a Run makes: (table, columns, filters)."""
    calls = []

    def recording(real):
        def read(run_dir, name, columns=None, filters=None, **kwargs):
            calls.append((name, None if columns is None else list(columns), filters))
            return real(run_dir, name, columns, filters, **kwargs)

        return read

    monkeypatch.setattr(store_run, "read_table", recording(store_run.read_table))  # Run.table
    monkeypatch.setattr(store_run, "read_arrow", recording(store_run.read_arrow))  # Run.arrow
    monkeypatch.setattr(report_data, "read_table", recording(report_data.read_table))  # load_samples
    return calls


def _fully_read(path):
    run = gp.load_run(path)
    _ = run.stats, run.samples, run.trajectories  # every table in memory: nothing is projected
    return run


_VOLATILE = re.compile(r"(built|Built)[^<]*?\d{4}-\d\d-\d\d[^<]*|\d+(\.\d+)? s\b")


def _page(result):
    return _VOLATILE.sub("", result.index.read_text())


def _figures(result):
    return {
        f.relpath: hashlib.sha256((result.out_dir / f.relpath).read_bytes()).hexdigest()
        for f in result.figures
    }


def test_report_from_projected_reads_is_the_report_of_the_run_read_whole(run_dir, tmp_path, spy):
    projected = gp.report(run_dir, tmp_path / "projected")
    assert any(name == "stats" for name, _, _ in spy)  # it did read from disk, not from a cache
    whole = gp.report(_fully_read(run_dir), tmp_path / "whole")
    assert projected.sections == whole.sections
    assert projected.detail_layers == whole.detail_layers
    assert projected.notes == whole.notes
    assert _page(projected) == _page(whole)
    assert _figures(projected) == _figures(whole)


def test_report_reads_samples_per_drawn_step_and_tensor_and_never_a_whole_table(run_dir, tmp_path, spy):
    result = gp.report(run_dir, tmp_path / "r")
    reads = {name: [(c, f) for n, c, f in spy if n == name] for name in ("stats", "samples", "trajectories")}
    assert reads["samples"], "the per-layer figures read no samples"
    steps, params = set(), set()
    for columns, filters in reads["samples"]:
        if filters is None:  # the one unfiltered read: which steps kept samples, the step column alone
            assert list(columns) == ["step"]
            continue
        for conjunction in filters if isinstance(filters[0], list) else [filters]:
            terms = {t[0]: t for t in conjunction}
            assert {"step", "param", "quantity"} <= set(terms)
            steps |= {terms["step"][2]} if terms["step"][1] == "==" else set(terms["step"][2])
            params |= set(terms["param"][2])
    assert params == set(result.detail_layers)
    x_steps = sorted(set(gp.load_run(run_dir).stats.query("quantity == @schema.THETA_MINUS_GRAD")["step"]))
    assert steps == {x_steps[0], x_steps[len(x_steps) // 2], x_steps[-1]}  # first, middle, last
    for columns, _ in reads["stats"]:
        assert columns is not None and not set(columns) & set(UNDRAWN_STATS_COLUMNS)
    for columns, filters in reads["trajectories"]:  # the OU section: an index, then tensors by filter
        assert columns is not None
        assert filters is not None or set(columns) <= {"step", "param"}


def test_validate_ou_read_in_batches_equals_the_analysis_of_the_whole_table(run_dir, monkeypatch, spy):
    whole = ou.validate_ou(_fully_read(run_dir).trajectories)
    monkeypatch.setattr(tracks, "READ_BATCH_BYTES", 1)  # one tensor per pass, clustered or not
    monkeypatch.setattr(tracks, "CLUSTERED_READ_BATCH_BYTES", 1)
    batched = ou.validate_ou(run_dir)
    pd.testing.assert_frame_equal(batched, whole)
    passes = [f for name, c, f in spy if name == "trajectories" and "theta" in (c or [])]
    assert len(passes) == len(whole) == 4  # fc1.weight, fc1.bias, fc2.weight, fc2.bias
    assert sorted(p[-1][2][0] for p in passes) == sorted(whole["param"])
    late = ou.validate_ou(run_dir, params=["fc2.weight"], min_step=30)
    expected = ou.validate_ou(_fully_read(run_dir).trajectories, params=["fc2.weight"], min_step=30)
    pd.testing.assert_frame_equal(late, expected)
    with pytest.raises(ValueError, match="no trajectories for"):
        ou.validate_ou(run_dir, params=["nope"])


def test_summary_reads_one_quantity_and_its_columns_and_matches_the_full_table(run_dir, spy):
    full = gp.load_run(run_dir).stats
    spy.clear()
    run = gp.load_run(run_dir)
    projected = layer_summary(run, schema.THETA_MINUS_GRAD)
    tested = [was_tested(run, q) for q in (schema.THETA_MINUS_GRAD, schema.GRAD)]
    progress = run_progress(run)
    assert not run.is_read("stats")
    stats_reads = [(c, f) for name, c, f in spy if name == "stats"]
    assert stats_reads and all(c is not None and len(c) < len(full.columns) for c, _ in stats_reads)
    pd.testing.assert_frame_equal(projected, layer_summary(full, meta=run.meta))
    assert tested == [was_tested(full, q) for q in (schema.THETA_MINUS_GRAD, schema.GRAD)] == [True, False]
    assert progress.captured == full["step"].nunique()


def test_run_sample_reads_one_row_and_equals_the_whole_table(run_dir, spy):
    run = gp.load_run(run_dir)
    samples = gp.load_run(run_dir).samples
    row = samples.iloc[len(samples) // 2]
    got = run.sample(int(row["step"]), row["param"], row["quantity"])
    np.testing.assert_array_equal(got, np.asarray(row["values"], dtype=np.float64))
    name, columns, filters = spy[-1]
    assert name == "samples" and columns == ["values"] and len(filters) == 3
    with pytest.raises(KeyError, match="no sample"):
        run.sample(10**6, row["param"])


def test_run_table_projects_and_filters_and_is_read_tells_the_cached_tables(run_dir):
    run = gp.load_run(run_dir)
    got = run.table("stats", columns=["step", "param"], filters=[("step", ">=", 40)])
    full = run.stats
    expected = full.loc[full["step"] >= 40, ["step", "param"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
    assert run.is_read("stats") and not run.is_read("samples") and not run.is_read("tracers")
