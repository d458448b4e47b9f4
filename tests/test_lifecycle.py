"""Issue 18 #12: a detached probe keeps nothing of the model alive (no reference cycle through it)."""

import gc
import weakref

import torch

import goup_probe as gp
from tests.helpers import TinyNet, batches, train


def _survivors(tmp_path, with_probe):
    """What of (model, optimizer, a weight, the probe) outlives its last reference, by refcount alone."""
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probe = None
    if with_probe:
        with gp.attach(model, opt, run_dir=tmp_path / "r", every=1, tracers=4) as probe:
            train(model, opt, batches(3))
        assert probe.step == 3 and probe.tracked == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    else:
        train(model, opt, batches(3))
    refs = {"model": weakref.ref(model), "opt": weakref.ref(opt), "weight": weakref.ref(model.fc1.weight)}
    if probe is not None:
        refs["probe"] = weakref.ref(probe)
    del model, opt, probe
    return sorted(name for name, ref in refs.items() if ref() is not None)


def test_a_detached_probe_keeps_nothing_alive_that_training_alone_would_not(tmp_path):
    """The probe adds no reference cycle: what survives without a GC pass is what survives without it.

    (torch's own optimizer, after a step, sits in a cycle of its own; that is the baseline.)
    """
    gc.collect()
    gc.disable()  # only reference counting frees objects from here on
    try:
        baseline = set(_survivors(tmp_path, with_probe=False))
        assert set(_survivors(tmp_path, with_probe=True)) <= baseline  # and the probe itself is gone
    finally:
        gc.enable()
        gc.collect()


def test_a_probe_can_be_attached_again_after_detach(tmp_path):
    model = TinyNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = gp.Probe(model, opt, run_dir=tmp_path / "r", every=1)
    with probe:
        train(model, opt, batches(2))
    assert probe.step == 2
    probe.config = probe.config.__class__.from_options(every=1, resume=True)
    with probe:
        train(model, opt, batches(2))
    assert probe.step == 4
    assert sorted(gp.load_run(tmp_path / "r").stats["step"].unique()) == [0, 1, 2, 3]
