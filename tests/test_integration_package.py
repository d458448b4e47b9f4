"""goup_probe.integrations imports neither Lightning nor transformers; its helpers unwrap and shift."""

import subprocess
import sys

import pytest
import torch

from goup_probe.integrations import unwrap_optimizer


def test_the_package_imports_no_framework():
    code = (
        "import sys, goup_probe.integrations; print(sorted({'lightning', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_unwrap_follows_optimizer_wrappers():
    inner = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)

    class Accelerated(torch.optim.Optimizer):  # like accelerate's: an Optimizer holding the real one
        def __init__(self, optimizer):
            self.optimizer = optimizer

    class LightningLike:
        def __init__(self, optimizer):
            self._optimizer = optimizer

    assert unwrap_optimizer(inner) == (inner, [])
    assert unwrap_optimizer(LightningLike(Accelerated(inner))) == (inner, ["LightningLike", "Accelerated"])
    with pytest.raises(TypeError, match=r"no torch\.optim\.Optimizer"):
        unwrap_optimizer(object())


def test_resume_step_from_global_step_counts_the_steps_a_scaler_skipped(tmp_path):
    """Rows (step, global_step) of a run whose scaler skipped 2 steps before global step 7."""
    from goup_probe.integrations._common import resume_step_from_global_step
    from goup_probe.store import RunWriter, prepare_run_dir

    run = prepare_run_dir(tmp_path / "run")
    writer = RunWriter(run)
    writer.write_meta({"schema_version": 1, "status": "interrupted"})
    rows = [(0, 0), (2, 2), (5, 7), (8, 10)]  # probe step, trainer step: 2 skips between 2 and 7
    writer.append(
        "stats", [{"step": s, "global_step": g, "param": "w", "quantity": "theta"} for s, g in rows]
    )
    writer.flush()
    assert resume_step_from_global_step(run, 0) is False
    assert resume_step_from_global_step(tmp_path / "fresh", 5) is False
    assert resume_step_from_global_step(run, 9) == 5 + (9 - 7)  # from the last row before 9
    assert resume_step_from_global_step(run, 4) == 2 + 2
