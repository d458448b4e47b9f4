"""``resample="step"`` under FSDP2: every rank draws the same fresh global indices at each step.

Two real gloo processes shard a small MLP; what rank 0 writes must equal a
single-process run with the same seed and ``resample="step"`` value for value
(the tested subsample is then the same global one), and the indices must change
between captured steps for tensors larger than ``sample_size``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

import goup_probe as gp
from goup_probe.capture.plan import step_subsample_indices
from goup_probe.store import load_run
from tests.test_distributed import (
    EVERY,
    KEY,
    OPTS,
    TEST_COLS,
    _aligned,
    _data,
    _model,
    _shard,
    _spawn,
    _train,
    pytestmark,  # noqa: F401  (skipped where torch.distributed is not available)
)

RESAMPLED = {**OPTS, "resample": "step"}


def _fsdp_resample_worker(rank: int, out: Path) -> None:
    x, y = _data()
    model = _shard(_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with gp.attach(model, opt, run_dir=out / "fsdp", every=EVERY, **RESAMPLED) as probe:
        _train(model, opt, x, y)
    assert not probe.errors, probe.errors


def _single_process(path: Path) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = _data()
    with gp.attach(model, opt, run_dir=path, every=EVERY, **RESAMPLED) as probe:
        _train(model, opt, x, y)
    assert not probe.errors, probe.errors


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY).reset_index(drop=True)


def test_fsdp2_step_resampling_equals_single_process_and_changes_between_steps(tmp_path: Path) -> None:
    _spawn(_fsdp_resample_worker, tmp_path)
    _single_process(tmp_path / "ref")
    ref, run = load_run(tmp_path / "ref"), load_run(tmp_path / "fsdp")
    assert run.meta["capture"]["resample"] == "step" == ref.meta["capture"]["resample"]
    a, b = _aligned(ref.stats, run.stats)
    pd.testing.assert_frame_equal(a[TEST_COLS], b[TEST_COLS], check_exact=True)
    pd.testing.assert_frame_equal(_sorted(ref.samples), _sorted(run.samples), check_exact=True)

    # the stored θ sample of step 0 comes from θ at that step's own indices (drawn independently here)
    model = _model()
    theta = {name: p.detach().flatten().numpy() for name, p in model.named_parameters()}
    samples = run.samples
    first = samples[(samples["step"] == 0) & (samples["quantity"] == "theta")]
    size = OPTS["sample_size"]
    checked = 0
    for _, row in first.iterrows():
        flat = theta[row["param"]]
        index = step_subsample_indices(OPTS["seed"], row["param"], flat.size, size, 0)
        stored = np.asarray(row["values"], dtype=np.float32)
        assert stored.size == min(OPTS["keep_samples"], flat.size), row["param"]
        assert np.isin(stored, flat[index].astype(np.float32)).all(), row["param"]
        checked += 1
    assert checked == len(list(model.parameters()))

    # tensors above sample_size get other indices at the next captured step
    for name, flat in theta.items():
        at0 = step_subsample_indices(OPTS["seed"], name, flat.size, size, 0)
        at2 = step_subsample_indices(OPTS["seed"], name, flat.size, size, EVERY)
        assert np.array_equal(at0, at2) == (flat.size <= size), name
