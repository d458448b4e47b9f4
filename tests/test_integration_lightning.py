"""The Lightning callback captures the gradient the optimizer uses: accumulated and clipped, at θ_t."""

import json
import os

import pytest
import torch
from torch import nn

pl = pytest.importorskip("lightning.pytorch")

import goup_probe as gp  # noqa: E402
from goup_probe.integrations.lightning import GoupProbe  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*does not have many workers.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated.*"),
    pytest.mark.filterwarnings("ignore:.*resuming from a checkpoint that ended before the epoch ended.*"),
]

CLIP = 0.05


class RecordingSGD(torch.optim.Optimizer):
    """Plain SGD that records θ_t and the gradient it uses, after evaluating the closure itself."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})
        self.records = []

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        record = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                record[p] = (p.detach().double().clone(), p.grad.double().clone())
                p.add_(p.grad, alpha=-group["lr"])
        self.records.append(record)
        return loss


class TinyModule(pl.LightningModule):
    def __init__(self, fail_at=None, precision_dtype=None):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 3))
        self.fail_at = fail_at
        self.unclipped_norms = []

    def training_step(self, batch, batch_idx):
        if self.fail_at is not None and self.global_step == self.fail_at:
            raise RuntimeError("boom")
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def on_before_optimizer_step(self, optimizer):  # Lightning calls it before clipping
        norms = [p.grad.norm() for p in self.parameters() if p.grad is not None]
        self.unclipped_norms.append(float(torch.linalg.vector_norm(torch.stack(norms))))

    def configure_optimizers(self):
        self.recording = RecordingSGD(self.parameters(), lr=0.5)
        return self.recording


def loader(n=32, batch=4):
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(
        torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    )
    return torch.utils.data.DataLoader(data, batch_size=batch, shuffle=False)


def make_trainer(callback, max_steps, **kwargs):
    options = dict(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accumulate_grad_batches=2,
        gradient_clip_val=CLIP,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=[callback], **options)


def worst_discrepancy(stats, module, records, first_step=0):
    """Worst |Δmean|/σ and relative Δstd of g, X = θ − g and θ over every captured step."""
    names = {p: n for n, p in module.named_parameters()}
    worst = {"mean": 0.0, "std": 0.0, "rows": 0}
    for step, record in enumerate(records[first_step:]):
        for p, (theta, grad) in record.items():
            for quantity, values in (("grad", grad), ("theta_minus_grad", theta - grad), ("theta", theta)):
                row = stats[
                    (stats["step"] == step) & (stats["param"] == names[p]) & (stats["quantity"] == quantity)
                ]
                assert len(row) == 1, (step, names[p], quantity)
                row = row.iloc[0]
                v = values.numpy().ravel()
                assert row["numel"] == v.size
                worst["mean"] = max(worst["mean"], abs(row["mean"] - v.mean()) / v.std())
                worst["std"] = max(worst["std"], abs(row["std"] - v.std()) / v.std())
                worst["rows"] += 1
    return worst


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_lightning_captures_the_accumulated_clipped_gradient(tmp_path, precision):
    module = TinyModule()
    callback = GoupProbe(tmp_path / "run", every=1, tracers=4)
    make_trainer(callback, max_steps=4, precision=precision).fit(module, loader())
    assert len(module.recording.records) == 4
    # clipping was active: the gradient before clipping (what on_before_optimizer_step sees) is larger
    used = [
        float(torch.linalg.vector_norm(torch.stack([g.norm() for _, g in r.values()])))
        for r in module.recording.records
    ]
    assert all(u <= CLIP * (1 + 1e-5) for u in used)
    assert all(n > 2 * CLIP for n in module.unclipped_norms)
    run = gp.load_run(tmp_path / "run")
    assert run.meta["status"] == "completed"
    assert run.meta["last_global_step"] == {"step": 3, "global_step": 3}
    assert sorted(run.stats["step"].unique()) == [0, 1, 2, 3]
    worst = worst_discrepancy(run.stats, module, module.recording.records)
    print(f"lightning {precision}: worst {worst}")
    assert worst["rows"] == 4 * 4 * 3
    assert worst["mean"] <= 1e-5
    assert worst["std"] <= 1e-5
    assert callback.probe.step == 4 and not callback.probe.errors


def test_lightning_resume_continues_the_schedule_without_duplicate_steps(tmp_path):
    module = TinyModule()
    first = GoupProbe(tmp_path / "run", every=2)
    trainer = make_trainer(first, max_steps=3)
    trainer.fit(module, loader())
    ckpt = tmp_path / "ckpt.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=False)["callbacks"][first.state_key]
    assert state["steps"] == 3

    resumed = TinyModule()
    second = GoupProbe(tmp_path / "run", every=2)
    make_trainer(second, max_steps=6).fit(resumed, loader(), ckpt_path=ckpt)
    assert second.steps == 6
    run = gp.load_run(tmp_path / "run")  # one run, continued in place
    assert sorted(run.stats["step"].unique()) == [0, 2, 4]  # step 4 is the resumed fit's; 3 and 5 not due
    assert not run.stats.duplicated(["step", "param", "quantity"]).any()
    assert run.status == "completed" and run.meta["steps"] == 6
    assert [r["at_step"] for r in run.meta["resumes"]] == [3]
    assert run.meta["user"]["goup_probe_lightning"]["global_step_at_attach"] == 3
    assert run.meta["last_global_step"] == {"step": 4, "global_step": 4}
    # the resumed fit's captured gradient is the one its optimizer used at step 4
    worst = worst_discrepancy(
        run.stats[run.stats["step"] == 4].assign(step=0), resumed, resumed.recording.records[1:2]
    )
    assert worst["mean"] <= 1e-5 and worst["std"] <= 1e-5


def test_lightning_detaches_on_exception(tmp_path):
    module = TinyModule(fail_at=2)
    callback = GoupProbe(tmp_path / "run", every=1)
    with pytest.raises(RuntimeError, match="boom"):
        make_trainer(callback, max_steps=4).fit(module, loader())
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "failed" and "boom" in meta["status_reason"]
    assert meta["steps"] == 2
    assert not module.recording._optimizer_step_pre_hooks  # the callback's hooks are gone


def test_lightning_manual_optimization(tmp_path):
    class Manual(TinyModule):
        def __init__(self):
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch, batch_idx):
            opt = self.optimizers()
            x, y = batch
            opt.zero_grad()
            self.manual_backward(nn.functional.cross_entropy(self.net(x), y))
            opt.step()

    module = Manual()
    callback = GoupProbe(tmp_path / "run", every=1)
    make_trainer(callback, max_steps=3, accumulate_grad_batches=1, gradient_clip_val=None).fit(
        module, loader()
    )
    run = gp.load_run(tmp_path / "run")
    assert run.meta["last_global_step"] == {"step": 2, "global_step": 2}
    worst = worst_discrepancy(run.stats, module, module.recording.records)
    assert worst["mean"] <= 1e-5 and worst["std"] <= 1e-5


def test_options_the_callback_sets_are_refused(tmp_path):
    with pytest.raises(TypeError, match="hooks"):
        GoupProbe(tmp_path / "run", hooks=True)
    with pytest.raises(ValueError, match="either every= or schedule="):
        GoupProbe(tmp_path / "run", every=2, schedule=gp.every(3))
    assert os.listdir(tmp_path) == []


def _ddp_spawn_unavailable():
    return not torch.distributed.is_available() or not torch.distributed.is_gloo_available()


@pytest.mark.slow
@pytest.mark.skipif(_ddp_spawn_unavailable(), reason="needs torch.distributed with gloo")
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_lightning_ddp_writes_once_from_rank_0(tmp_path):
    module = TinyModule()
    callback = GoupProbe(tmp_path / "run", every=1)
    trainer = make_trainer(callback, max_steps=2, strategy="ddp_fork", devices=2)
    trainer.fit(module, loader())
    run = gp.load_run(tmp_path / "run")
    assert run.meta["status"] == "completed" and run.meta["world_size"] == 2
    assert run.meta["last_global_step"] == {"step": 1, "global_step": 1}
    assert sorted(run.stats["step"].unique()) == [0, 1]
    assert not run.meta["errors"]
    assert not any(p.name.startswith("run") and p.name != "run" for p in tmp_path.iterdir())


class OverflowAt(TinyModule):
    """Puts an Inf in a gradient at one step, so the GradScaler skips that step."""

    def __init__(self, overflow_step):
        super().__init__()
        self.overflow_step = overflow_step

    def on_after_backward(self):
        if self.global_step == self.overflow_step:
            self.net[0].weight.grad[0, 0] = float("inf")


def test_lightning_16_mixed_with_a_real_grad_scaler(tmp_path):
    """Lightning's own 16-mixed plugin with a CPU GradScaler (Trainer refuses precision="16-mixed" on
    CPU by name, so the plugin is passed directly): unscaled, clipped gradient; a skipped step is
    neither captured nor counted, and the framework step of each row says which steps were taken."""
    from lightning.pytorch.plugins import MixedPrecision

    module = OverflowAt(overflow_step=1)
    callback = GoupProbe(tmp_path / "run", every=1)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=2.0**12))
    make_trainer(callback, max_steps=4, plugins=[plugin]).fit(module, loader())
    assert len(module.recording.records) == 3  # the scaler skipped one of 4 steps
    run = gp.load_run(tmp_path / "run")
    assert run.status == "completed" and run.meta["steps"] == 3
    assert run.stats.groupby("step")["global_step"].first().tolist() == [0, 2, 3]
    worst = worst_discrepancy(run.stats, module, module.recording.records)
    print(f"lightning 16-mixed: worst {worst}")
    assert worst["rows"] == 3 * 4 * 3 and worst["mean"] <= 1e-5 and worst["std"] <= 1e-5
