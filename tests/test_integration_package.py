"""goup_probe.integrations imports neither Lightning nor transformers; its helpers unwrap and shift."""

import subprocess
import sys

import pytest
import torch

import goup_probe as gp
from goup_probe.integrations import offset_schedule, unwrap_optimizer


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


def test_offset_schedule_continues_where_a_resumed_run_starts():
    assert offset_schedule(3, None, 0)(3)
    shifted = offset_schedule(3, None, 4)
    assert [s for s in range(6) if shifted(s)] == [2, 5]  # absolute steps 6 and 9
    assert "from step 4" in repr(shifted)
    explicit = offset_schedule(None, gp.explicit([5]), 4)
    assert [s for s in range(4) if explicit(s)] == [1]
