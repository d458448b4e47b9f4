"""The Hugging Face callback captures the gradient the optimizer uses: accumulated and clipped, at θ_t."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models from configs only: nothing is downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import goup_probe as gp  # noqa: E402
from goup_probe.integrations.transformers import GoupProbeCallback  # noqa: E402

CLIP = 0.05
STEPS = 4


class RecordingSGD(torch.optim.Optimizer):
    """Plain SGD that records θ_t and the gradient it uses at each step."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})
        self.records = []

    @torch.no_grad()
    def step(self, closure=None):
        record = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                record[p] = (p.detach().double().clone(), p.grad.double().clone())
                p.add_(p.grad, alpha=-group["lr"])
        self.records.append(record)


class Synthetic(torch.utils.data.Dataset):
    def __init__(self, n=32, length=8, vocab=50):
        g = torch.Generator().manual_seed(2)
        self.ids = torch.randint(0, vocab, (n, length), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {
            "input_ids": self.ids[i],
            "attention_mask": torch.ones_like(self.ids[i]),
            "labels": self.labels[i],
        }


def tiny_bert():
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config)


def train(tmp_path, callback, resume=None, **args):
    model = tiny_bert()
    model.dtypes = set()
    model.classifier.register_forward_hook(lambda module, inputs, output: model.dtypes.add(output.dtype))
    optimizer = RecordingSGD(model.parameters(), lr=0.5)
    args.setdefault("save_strategy", "no")
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=STEPS,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_grad_norm=CLIP,
        report_to=[],
        use_cpu=True,
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **args,
    )
    trainer = transformers.Trainer(
        model=model,
        args=arguments,
        train_dataset=Synthetic(),
        optimizers=(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))),
        callbacks=[callback],
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, optimizer


def worst_discrepancy(stats, model, records):
    """Worst |Δmean|/σ and relative Δstd of g, X = θ − g and θ over every captured step and tensor."""
    names = {p: n for n, p in model.named_parameters()}
    worst = {"mean": 0.0, "std": 0.0, "rows": 0}
    for step, record in enumerate(records):
        for p, (theta, grad) in record.items():
            for quantity, values in (("grad", grad), ("theta_minus_grad", theta - grad), ("theta", theta)):
                row = stats[
                    (stats["step"] == step) & (stats["param"] == names[p]) & (stats["quantity"] == quantity)
                ]
                assert len(row) == 1, (step, names[p], quantity)
                row = row.iloc[0]
                v = values.numpy().ravel()
                assert row["numel"] == v.size
                if v.std() == 0:  # e.g. an embedding row's gradient that is all zero
                    assert abs(row["mean"] - v.mean()) <= 1e-12
                    continue
                worst["mean"] = max(worst["mean"], abs(row["mean"] - v.mean()) / v.std())
                worst["std"] = max(worst["std"], abs(row["std"] - v.std()) / v.std())
                worst["rows"] += 1
    return worst


@pytest.mark.parametrize("bf16", [False, True])
def test_transformers_captures_the_accumulated_clipped_gradient(tmp_path, bf16):
    callback = GoupProbeCallback(tmp_path / "run", every=1)
    model, optimizer = train(tmp_path, callback, bf16=bf16)
    assert len(optimizer.records) == STEPS
    assert model.dtypes == {torch.bfloat16 if bf16 else torch.float32}  # bf16 autocast is on, or off
    for record in optimizer.records:  # clipping was active: the norm the optimizer used is max_grad_norm
        norm = torch.linalg.vector_norm(torch.stack([g.norm() for _, g in record.values()]))
        assert float(norm) == pytest.approx(CLIP, rel=1e-4)
    run = gp.load_run(tmp_path / "run")
    assert run.meta["status"] == "completed"
    assert run.meta["last_global_step"] == {"step": STEPS - 1, "global_step": STEPS - 1}
    assert run.meta["user"]["goup_probe_transformers"]["optimizer_wrappers"] == ["AcceleratedOptimizer"]
    assert sorted(run.stats["step"].unique()) == list(range(STEPS))
    worst = worst_discrepancy(run.stats, model, optimizer.records)
    print(f"transformers bf16={bf16}: worst {worst}")
    assert worst["rows"] > 0
    assert worst["mean"] <= 1e-5
    assert worst["std"] <= 1e-5
    assert callback.probe.step == STEPS and not callback.probe.errors


def test_transformers_torch_compile(tmp_path):
    """``torch_compile=True`` (aot_eager: no C++ compiler needed): same gradient, names of the plain model."""
    callback = GoupProbeCallback(tmp_path / "run", every=1)
    model, optimizer = train(tmp_path, callback, torch_compile=True, torch_compile_backend="aot_eager")
    run = gp.load_run(tmp_path / "run")
    assert run.status == "completed" and not callback.probe.errors
    assert not any(name.startswith("_orig_mod") for name in run.stats["param"].unique())
    worst = worst_discrepancy(run.stats, model, optimizer.records)
    print(f"transformers torch_compile: worst {worst}")
    assert worst["rows"] > 0 and worst["mean"] <= 1e-5 and worst["std"] <= 1e-5


def test_transformers_resume_from_checkpoint_continues_the_run(tmp_path):
    callback = GoupProbeCallback(tmp_path / "run", every=1)
    train(tmp_path, callback, save_strategy="steps", save_steps=2)
    first = gp.load_run(tmp_path / "run").stats
    resumed = GoupProbeCallback(tmp_path / "run", every=1)
    model, optimizer = train(tmp_path, resumed, resume=str(tmp_path / "out" / "checkpoint-2"))
    run = gp.load_run(tmp_path / "run")
    assert sorted(run.stats["step"].unique()) == list(range(STEPS))
    assert not run.stats.duplicated(["step", "param", "quantity"]).any()
    assert [r["at_step"] for r in run.meta["resumes"]] == [2]
    assert run.stats.groupby("step")["global_step"].first().tolist() == list(range(STEPS))
    # steps 0, 1 are the first run's; steps 2, 3 the resumed one's, matching what its optimizer used
    kept = run.stats[run.stats["step"] < 2].sort_values(["step", "param", "quantity"])["mean"].to_numpy()
    want = first[first["step"] < 2].sort_values(["step", "param", "quantity"])["mean"].to_numpy()
    assert (kept == want).all()
    later = run.stats[run.stats["step"] >= 2].assign(step=lambda s: s["step"] - 2)
    worst = worst_discrepancy(later, model, optimizer.records)
    assert worst["rows"] > 0 and worst["mean"] <= 1e-5 and worst["std"] <= 1e-5


def test_transformers_fp16_scaler_unscaled_gradient_and_skipped_step(tmp_path):
    """accelerate's AcceleratedOptimizer with a real GradScaler, driven in the Trainer's callback order.

    No clipping, so the gradients are still scaled at ``on_pre_optimizer_step``; step 1 gets an Inf
    gradient, which the scaler skips (``step_was_skipped``): it is neither captured nor counted.
    """
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    Accelerator(cpu=True)  # the process state AcceleratedOptimizer reads (after TrainingArguments resets it)
    model = tiny_bert()
    inner = RecordingSGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    optimizer = AcceleratedOptimizer(inner, device_placement=False, scaler=scaler)
    state, control = transformers.TrainerState(), transformers.TrainerControl()
    callback = GoupProbeCallback(tmp_path / "run", every=1)
    callback.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    data = Synthetic()
    skipped = []
    for step in range(4):
        batch = {key: torch.stack([data[i][key] for i in range(step * 4, step * 4 + 4)]) for key in data[0]}
        scaler.scale(model(**batch).loss).backward()
        if step == 1:
            model.classifier.weight.grad[0, 0] = float("inf")
        callback.on_pre_optimizer_step(args, state, control, model=model, optimizer=optimizer)
        optimizer.step()
        skipped.append(optimizer.step_was_skipped)
        callback.on_optimizer_step(args, state, control, model=model, optimizer=optimizer)
        optimizer.zero_grad()
        state.global_step += 1
    callback.on_train_end(args, state, control, model=model, optimizer=optimizer)
    assert skipped == [False, True, False, False]  # the real scaler skipped step 1
    assert len(inner.records) == 3
    run = gp.load_run(tmp_path / "run")
    assert run.meta["steps"] == 3 and run.meta["scaler_skipped_steps"] == 1
    assert run.stats.groupby("step")["global_step"].first().tolist() == [0, 2, 3]
    worst = worst_discrepancy(run.stats, model, inner.records)  # unscaled, as the optimizer used it
    print(f"transformers fp16 GradScaler: worst {worst}")
    assert worst["rows"] > 0 and worst["mean"] <= 1e-5 and worst["std"] <= 1e-5


def test_transformers_crash_ends_the_run_failed(tmp_path):
    """Trainer has no exception callback: an uncaught exception still ends the run `failed`, naming it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {os.getcwd()!r})
        from pathlib import Path
        import tests.test_integration_transformers as t
        from goup_probe.integrations.transformers import GoupProbeCallback

        original = t.tiny_bert
        def failing_bert():
            model = original()
            calls = {{"n": 0}}
            def boom(module, inputs):
                calls["n"] += 1
                if calls["n"] == 5:
                    raise RuntimeError("boom in forward")
            model.register_forward_pre_hook(boom)
            return model
        t.tiny_bert = failing_bert
        t.train(Path({str(tmp_path)!r}), GoupProbeCallback(Path({str(tmp_path / "run")!r}), every=1))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "boom in forward" in proc.stderr
    run = gp.load_run(tmp_path / "run")
    assert run.status == "failed" and "RuntimeError: boom in forward" in run.meta["status_reason"]
    assert sorted(run.stats["step"].unique()) == [0, 1]  # 2 micro-batches per step: steps 0 and 1 done
