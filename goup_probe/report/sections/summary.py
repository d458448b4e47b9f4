"""The Summary section: what was run, the findings in sentences, and the verdicts over training."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from goup_probe.formatting import format_lr, format_number
from goup_probe.ou import verdict_kind
from goup_probe.report import html as h
from goup_probe.report.data import OptionalTable
from goup_probe.report.figures import verdict_figure
from goup_probe.report.sections.base import ReportContext, Section, SectionOutput
from goup_probe.summary import run_progress
from goup_probe.update_rule import ou_rule, rate_sentence

NO_STATISTICS = "The run holds no normality statistics."


class SummarySection(Section):
    """What was run (model, optimizer, schedule, versions), the findings, and the verdict counts."""

    name = "summary"
    title = "Summary"

    def build(self, ctx: ReportContext) -> SectionOutput:
        """Partial-run banner, run description, findings and the verdict table and figure."""
        run, findings = ctx.run, ctx.findings
        extra = analysis_sentences(ctx.ou, ctx.fidelity, run.meta)
        progress = run_progress(run)
        parts = []
        if run.status != "completed":
            upto = (
                f"up to step {progress.last_captured}"
                if progress.last_captured is not None
                else "(no step yet)"
            )
            parts.append(
                '<div class="banner">'
                + h.esc(f"Partial run: status '{run.status}'. The report shows what was captured {upto}.")
                + "</div>"
            )
        parts.append("<h3>What was run</h3>")
        parts.append(h.key_value_table(run_description(progress.counted_meta(run.meta))))
        parts.append("<h3>Findings</h3>")
        parts.append(h.bullet_list([*findings.sentences, *extra], cls="findings"))
        if not findings.steps:
            return SectionOutput("\n".join(parts), note=NO_STATISTICS)
        parts.append(
            h.table(
                findings.table(), caption="Verdicts on X = θ − g at the first, middle and last captured step"
            )
        )
        fig = verdict_figure(ctx.writer, ctx.stats)
        parts.append(h.figure(fig))
        return SectionOutput("\n".join(parts), (fig,))


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out.extend(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return [(prefix, value)]


def run_description(meta: dict[str, Any]) -> list[tuple[str, object]]:
    """Key/value rows saying what was run: model, optimizer, steps, schedule, versions."""
    rows: list[tuple[str, object]] = [("status", meta.get("status", "unknown"))]
    if meta.get("status_reason"):
        rows.append(("status reason", meta["status_reason"]))
    rows += [("started", meta.get("started_at")), ("ended", meta.get("ended_at"))]
    model = meta.get("model") or {}
    if model:
        rows.append(
            (
                "model",
                f"{model.get('class', '?')}: {model.get('num_tensors', '?')} parameter tensors, "
                f"{model.get('num_params', '?')} parameters ({model.get('num_trainable', '?')} trainable)",
            )
        )
    opt = meta.get("optimizer") or {}
    if opt:
        groups = opt.get("param_groups") or [opt.get("defaults") or {}]
        hyper = ", ".join(
            f"{k}={_hyperparameter(k, groups[0][k])}"
            for k in ("lr", "momentum", "weight_decay", "betas", "eps")
            if k in groups[0]
        )
        suffix = f" ({len(groups)} param groups; first shown)" if len(groups) > 1 else ""
        rows.append(("optimizer", f"{opt.get('class', '?')}: {hyper}{suffix}"))
    rows.append(("optimizer steps", meta.get("steps", "?")))
    rows.append(("captured steps", meta.get("captured_steps", "?")))
    capture = meta.get("capture") or {}
    if capture:
        rows.append(("capture schedule", f"{capture.get('schedule', '?')} ({capture.get('mode', '?')})"))
        rows.append(("layers", capture.get("layers") or "all"))
        rows.append(
            (
                "subsample",
                f"tests on ≤ {capture.get('sample_size', '?')} values per tensor, "
                f"{capture.get('keep_samples', '?')} stored for figures, "
                f"{capture.get('tracers', '?')} tracer coordinates, seed {capture.get('seed', '?')}",
            )
        )
    versions = meta.get("versions") or {}
    if versions:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in versions.items() if k != "platform")))
        if "platform" in versions:
            rows.append(("platform", versions["platform"]))
    if meta.get("error_count"):
        rows.append(("capture errors", f"{meta['error_count']} (see run.json)"))
    rows += [(f"user: {k}", v) for k, v in _flatten("", meta.get("user") or {})]
    return [(k, "–" if v is None else v) for k, v in rows]


def _hyperparameter(name: str, value: Any) -> str:
    """An optimizer setting as text: the learning rate to 4 significant digits, tuples as tuples."""
    if name == "lr":
        return format_lr(value)
    if isinstance(value, list | tuple):
        return "(" + ", ".join(format_number(v, 4) for v in value) + ")"
    return format_number(value, 4)


def analysis_sentences(
    ou: OptionalTable, fidelity: dict[str, OptionalTable], meta: dict | None = None
) -> list[str]:
    """One plain-language line each for the OU validation and the GO-UP comparison, when present.

    ``meta`` (the run's ``run.json``) names the optimizer: for one whose update is
    not −αg the OU line says what α means and gives k̂ against the effective step
    (:func:`goup_probe.update_rule.rate_sentence`).
    """
    out = []
    if ou.present:
        frame = ou.frame
        parts = []
        if "verdict" in frame.columns:
            counts = frame["verdict"].map(verdict_kind).value_counts()
            parts.append(", ".join(f"{v} for {n} of {len(frame)} tensors" for v, n in counts.items()))
        rate = rate_sentence(ou_rule(meta, frame), frame)
        if rate:
            parts.append(rate)
        acf = _median_of(frame, "innovation_acf1")
        if np.isfinite(acf):
            parts.append(f"median lag-1 autocorrelation of η = α(θ − g) = {acf:.3g} (an innovation has 0)")
        if parts:
            out.append("OU model of the tracer trajectories: " + "; ".join(parts) + ".")
    summary = fidelity["summary"]
    if summary.present and {"arm", "heldout_acc"} <= set(summary.frame.columns):
        rows = summary.frame.reset_index(drop=True)
        base = rows.iloc[0]
        level = f"{100 * float(base['level']):.0f}% " if "level" in rows.columns else ""
        pieces = []
        for _, row in rows.iloc[1:].iterrows():
            piece = f"{row['arm']} {row['heldout_acc']:.3f}"
            if {"acc_gap", "acc_gap_lo", "acc_gap_hi"} <= set(rows.columns):
                piece += (
                    f" (gap {row['acc_gap']:+.3f}, {level}interval "
                    f"[{row['acc_gap_lo']:+.3f}, {row['acc_gap_hi']:+.3f}])"
                )
            pieces.append(piece)
        seeds = f" over {int(base['n_seeds'])} seeds" if "n_seeds" in rows.columns else ""
        out.append(
            f"GO-UP comparison{seeds}: final held-out accuracy {base['arm']} {base['heldout_acc']:.3f}; "
            + "; ".join(pieces)
            + "."
        )
    return out


def _median_of(frame: pd.DataFrame, column: str) -> float:
    if column not in frame.columns:
        return float("nan")
    values = frame[column].astype(np.float64).to_numpy()
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")
