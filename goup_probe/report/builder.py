"""Build the report of a run: figures as PNG files and one ``index.html`` that opens offline."""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.report import html as h
from goup_probe.report.data import OptionalTable, load_fidelity, load_ou, load_samples
from goup_probe.report.figures import (
    FIGURE_DIR,
    FigureFile,
    FigureWriter,
    fidelity_figures,
    heatmap_figure,
    layer_figure,
    lines_figure,
    ou_figures,
    verdict_figure,
)
from goup_probe.report.findings import Findings, compute_findings
from goup_probe.report.glossary import glossary_items
from goup_probe.report.select import LayerSelection, choose_layers, choose_steps
from goup_probe.store import Run, atomic_write_text, load_run
from goup_probe.summary import layer_summary

REPORT_DIR = "report"
"""Default report folder inside the run directory."""
INDEX = "index.html"
_GENERATOR_MARK = 'name="generator" content="goup_probe'


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote."""

    out_dir: Path
    index: Path
    figures: tuple[FigureFile, ...]
    sections: tuple[str, ...]
    """Section headings in page order."""
    notes: dict[str, str] = field(default_factory=dict)
    """Section id -> one-line note for sections whose data the run lacks."""
    findings: Findings | None = None
    detail_layers: tuple[str, ...] = ()
    seconds: float = 0.0


def build_report(
    run: Run | str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    per_side: int = 3,
    layers: Sequence[str] | None = None,
    steps: Sequence[int] | None = None,
    n_steps: int = 3,
    ou: bool = True,
    dpi: int = 100,
    title: str | None = None,
) -> ReportResult:
    """Write the HTML/PNG report of a run directory.

    Reads only the run's Parquet tables (nothing is trained); every figure is
    drawn with :mod:`goup_probe.plots` on the Agg backend and saved as a PNG
    under ``out/figures``; ``out/index.html`` shows them with the findings and
    opens from disk without a server or network.

    Parameters
    ----------
    run : Run or path
        The run (or its directory). Partial runs (interrupted, still running)
        are reported as far as they were captured.
    out : path, optional
        Report folder (default ``RUN_DIR/report``). Earlier reports there are
        replaced; a folder holding anything else keeps it.
    per_side : int
        With more than ``2 * per_side`` tensors, per-layer detail is shown for the
        ``per_side`` most and ``per_side`` least Gaussian ones (others get the
        compact overviews only).
    layers : sequence of str, optional
        Tensors to detail instead of the automatic choice.
    steps : sequence of int, optional
        Captured steps of the per-layer figures (default: ``n_steps`` spread
        from the first to the last captured step).
    n_steps : int
        How many steps the default choice takes (3: first, middle, last).
    ou : bool
        Include the OU section (computed from the trajectories unless stored).
    dpi : int
        Resolution of the PNG files.
    title : str, optional
        Page title (default from the model's class and the run folder).

    Returns
    -------
    ReportResult
        Paths, figure list, section headings, notes and the build time.

    Examples
    --------
    >>> import goup_probe as gp
    >>> result = gp.report("reports/demo")  # doctest: +SKIP
    >>> result.index  # doctest: +SKIP
    PosixPath('reports/demo/report/index.html')
    """
    start = time.perf_counter()
    run = run if isinstance(run, Run) else load_run(run)
    out_dir = Path(out) if out is not None else run.path / REPORT_DIR
    _prepare_out(out_dir)
    writer = FigureWriter(out_dir, dpi=dpi)
    stats = run.stats
    x_rows = stats[stats["quantity"] == schema.THETA_MINUS_GRAD]
    captured = sorted({int(s) for s in x_rows["step"]})

    findings = compute_findings(stats, run.meta)
    selection = choose_layers(stats, per_side=per_side, layers=layers)
    detail_steps = (
        sorted({int(s) for s in steps}) if steps is not None else choose_steps(captured or [0], n_steps)
    )
    figures: list[FigureFile] = []
    notes: dict[str, str] = {}
    ou_table = load_ou(run) if ou else OptionalTable(None, "The OU section was turned off for this report.")
    fidelity = load_fidelity(run)
    extra = analysis_sentences(ou_table, fidelity)

    sections = [_summary_section(run, findings, extra, writer, stats, figures, notes)]
    sections.append(_layers_section(run, stats, selection, detail_steps, writer, figures, notes))
    sections.append(_training_section(stats, selection, writer, figures, notes))
    sections.append(_tensors_section(run, stats, notes))
    sections.append(_ou_section(ou_table, writer, figures, notes))
    highlight = list(selection.least_gaussian[:3]) + list(selection.most_gaussian[:3])
    sections.append(_fidelity_section(fidelity, stats, highlight, writer, figures, notes))
    sections.append(h.Section("glossary", "Glossary", _glossary_body(run.meta)))

    from goup_probe._version import __version__

    elapsed = time.perf_counter() - start
    page = h.page(
        title=title or _default_title(run),
        subtitle=_subtitle(run),
        sections=sections,
        version=__version__,
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=elapsed,
    )
    index = out_dir / INDEX
    atomic_write_text(index, page)
    return ReportResult(
        out_dir=out_dir,
        index=index,
        figures=tuple(figures),
        sections=tuple(s.heading for s in sections),
        notes=notes,
        findings=findings,
        detail_layers=tuple(selection.params),
        seconds=time.perf_counter() - start,
    )


# ----------------------------------------------------------------------------- folder


def _prepare_out(out_dir: Path) -> None:
    """Create the folder; remove the PNGs of an earlier report there (and nothing else)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"report folder {str(out_dir)!r} exists and is not a directory")
    index = out_dir / INDEX
    figures = out_dir / FIGURE_DIR
    earlier = index.is_file() and _GENERATOR_MARK in index.read_text("utf-8", errors="replace")[:2000]
    if earlier and figures.is_dir():
        for png in figures.glob("*.png"):
            png.unlink()
    figures.mkdir(parents=True, exist_ok=True)


# ----------------------------------------------------------------------------- header


def _default_title(run: Run) -> str:
    model = (run.meta.get("model") or {}).get("class")
    kind = "comparison" if run.meta.get("kind") == "compare" else "probe report"
    return f"goup_probe {kind}: {model or 'run'} — {run.path.name}"


def _subtitle(run: Run) -> str:
    status = run.status
    steps = run.meta.get("steps", "?")
    return f"Run folder {run.path} · status {status} · {steps} optimizer steps"


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
            f"{k}={groups[0][k]}"
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


# ----------------------------------------------------------------------------- sections


def analysis_sentences(ou: OptionalTable, fidelity: dict[str, OptionalTable]) -> list[str]:
    """One plain-language line each for the OU validation and the GO-UP comparison, when present."""
    out = []
    if ou.present:
        frame = ou.frame
        parts = []
        if "verdict" in frame.columns:
            counts = frame["verdict"].value_counts()
            parts.append(", ".join(f"{v} for {n} of {len(frame)} tensors" for v, n in counts.items()))
        ratio = _median_of(frame, "k_over_lr")
        if np.isfinite(ratio):
            parts.append(f"median k̂/α = {ratio:.3g} (the seed's derivation assumes 1)")
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


def _summary_section(
    run: Run,
    findings: Findings,
    extra: Sequence[str],
    writer: FigureWriter,
    stats: pd.DataFrame,
    figures: list[FigureFile],
    notes: dict[str, str],
) -> h.Section:
    parts = []
    if run.status != "completed":
        parts.append(
            '<div class="banner">'
            + h.esc(
                f"Partial run: status '{run.status}'. The report shows what was captured up to step "
                f"{run.meta.get('steps', '?')}."
            )
            + "</div>"
        )
    parts.append("<h3>What was run</h3>")
    parts.append(h.key_value_table(run_description(run.meta)))
    parts.append("<h3>Findings</h3>")
    parts.append(h.bullet_list([*findings.sentences, *extra], cls="findings"))
    if findings.steps:
        parts.append(
            h.table(
                findings.table(), caption="Verdicts on X = θ − g at the first, middle and last captured step"
            )
        )
        fig = verdict_figure(writer, stats)
        figures.append(fig)
        parts.append(h.figure(fig))
    else:
        notes["summary"] = "The run holds no normality statistics."
    return h.Section("summary", "Summary", "\n".join(parts))


_DETAIL_COLUMNS = (
    "step",
    "verdict",
    "n_tested",
    "skew",
    "skew_se",
    "excess_kurtosis",
    "kurtosis_se",
    "ks_d",
    "lilliefors_p",
    "shapiro_p",
    "qq_r",
    "qq_r_crit05",
    "w1_sigma",
    "grad_to_param",
)


def _layer_table(stats: pd.DataFrame, param: str, steps: Sequence[int]) -> pd.DataFrame:
    rows = stats[(stats["param"] == param) & stats["step"].isin(steps)]
    x = rows[rows["quantity"] == schema.THETA_MINUS_GRAD].sort_values("step")
    theta = rows[rows["quantity"] == schema.THETA].set_index("step")["verdict"]
    table = x[[c for c in _DETAIL_COLUMNS if c in x.columns]].copy()
    table.insert(2, "verdict of θ", [theta.get(s, "–") for s in table["step"]])
    return table.rename(columns={"verdict": "verdict of X"})


def _layers_section(
    run: Run,
    stats: pd.DataFrame,
    selection: LayerSelection,
    steps: list[int],
    writer: FigureWriter,
    figures: list[FigureFile],
    notes: dict[str, str],
) -> h.Section:
    params = selection.params
    if not params:
        notes["layers"] = "No parameter tensor has captured statistics, so there is no per-layer detail."
        return h.Section("layers", "Per-layer detail", h.paragraph(notes["layers"], cls="note"))
    samples = load_samples(run, params, steps)
    parts = [
        h.paragraph(
            f"Showing {selection.note}, at steps {', '.join(map(str, steps))}. The histogram is the stored "
            "subsample of X = θ − g on the density scale with the normal fitted to it (its own mean and "
            "standard deviation), as in the seed's figure; the QQ plot and the components θ and g sit "
            "beside it. Every other tensor appears in the overviews below."
        )
    ]
    if samples.empty:
        parts.append(
            h.paragraph("This run stored no subsamples (keep_samples=0): panels are empty.", cls="note")
        )
    groups = [("Least Gaussian", selection.least_gaussian), ("Most Gaussian", selection.most_gaussian)]
    if selection.explicit:
        label = "Every tensor" if selection.all_layers else "Tensors chosen for this report"
        groups = [(label, selection.explicit)]
    for label, names in groups:
        if not names:
            continue
        parts.append(f"<h3>{h.esc(label)}</h3>")
        for param in names:
            fig = layer_figure(writer, stats, samples, param, steps)
            figures.append(fig)
            parts.append(f"<h4>{h.esc(param)}</h4>")
            parts.append(h.table(_layer_table(stats, param, steps)))
            parts.append(h.figure(fig))
    return h.Section("layers", "Per-layer detail", "\n".join(parts))


def _training_section(
    stats: pd.DataFrame,
    selection: LayerSelection,
    writer: FigureWriter,
    figures: list[FigureFile],
    notes: dict[str, str],
) -> h.Section:
    x = stats[stats["quantity"] == schema.THETA_MINUS_GRAD]
    if x.empty:
        notes["training"] = "The run holds no captured statistics to follow over training."
        return h.Section("training", "Over training", h.paragraph(notes["training"], cls="note"))
    highlight = list(selection.least_gaussian[:3]) + list(selection.most_gaussian[:3])
    parts = []
    if stats["param"].nunique() > 10:
        parts.append(
            h.paragraph(
                "In the line plots, grey lines are all tensors, the black line their median, and the "
                "coloured lines the tensors shown in per-layer detail."
            )
        )
    new = [heatmap_figure(writer, stats)]
    captions = {
        "skew": "Skewness of X per tensor; 0 for a normal distribution.",
        "excess_kurtosis": "Excess kurtosis of X per tensor: 0 for a normal, −1.2 for a uniform "
        "(PyTorch's default init), positive for heavy tails.",
        "grad_to_param": "‖g‖/‖θ‖ per tensor (log scale): when ≪ 1, X = θ − g is essentially θ.",
    }
    for metric, caption in captions.items():
        new.append(lines_figure(writer, stats, metric=metric, highlight=highlight, caption=caption))
    figures.extend(new)
    parts.extend(h.figure(f) for f in new)
    return h.Section("training", "Over training", "\n".join(parts))


def _tensors_section(run: Run, stats: pd.DataFrame, notes: dict[str, str]) -> h.Section:
    table = layer_summary(stats)
    if table.empty:
        notes["tensors"] = "No tensor has captured statistics."
        return h.Section("tensors", "All tensors", h.paragraph(notes["tensors"], cls="note"))
    intro = h.paragraph(
        "One row per parameter tensor: verdict and excess kurtosis of X at the first and last captured "
        "step, skewness and W1 (in σ) at the last, the share of captured steps judged Gaussian or "
        "negligibly non-Gaussian, and the median ‖g‖/‖θ‖."
    )
    return h.Section("tensors", "All tensors", intro + h.table(table, scroll=len(table) > 25))


_OU_TABLE_COLUMNS = (
    "param",
    "steps",
    "lr",
    "k_pooled",
    "k_pooled_ci_low",
    "k_pooled_ci_high",
    "k_over_lr",
    "half_life_steps",
    "steps_x_k",
    "innovation_acf1",
    "innovation_state_corr",
    "resid_lb_reject",
    "resid_normality_reject",
    "adf_stationary",
    "var_unstable",
    "verdict",
)


def _ou_section(
    ou: OptionalTable, writer: FigureWriter, figures: list[FigureFile], notes: dict[str, str]
) -> h.Section:
    heading = "Ornstein–Uhlenbeck model"
    if not ou.present:
        notes["ou"] = ou.note
        return h.Section("ou", heading, h.paragraph(ou.note, cls="note"))
    frame = ou.frame
    parts = [
        h.paragraph(
            "Does θ follow a discrete OU process θ_{t+1} = θ_t − k(θ_t − μ) + e_t with i.i.d. Gaussian "
            "innovations? For plain SGD the seed's relation with k = α is an identity, so what is tested is "
            "whether η = α(θ − g) behaves like an innovation, and what k the trajectories actually show. "
            f"Source: {ou.source}."
        )
    ]
    if "verdict" in frame.columns:
        counts = frame["verdict"].value_counts()
        parts.append(
            h.paragraph("Verdicts: " + "; ".join(f"{v}: {n} tensor(s)" for v, n in counts.items()) + ".")
        )
    new = ou_figures(writer, frame)
    figures.extend(new)
    parts.extend(h.figure(f) for f in new)
    columns = [c for c in _OU_TABLE_COLUMNS if c in frame.columns]
    parts.append(h.table(frame[columns], scroll=True))
    if "reason" in frame.columns:
        reasons = [f"{p}: {r}" for p, r in zip(frame["param"], frame["reason"], strict=True) if r]
        if reasons:
            parts.append("<details><summary>Evidence behind each verdict</summary>")
            parts.append(h.bullet_list(reasons))
            parts.append("</details>")
    return h.Section("ou", heading, "\n".join(parts))


def _fidelity_section(
    tables: dict[str, OptionalTable],
    stats: pd.DataFrame,
    highlight: Sequence[str],
    writer: FigureWriter,
    figures: list[FigureFile],
    notes: dict[str, str],
) -> h.Section:
    heading = "GO-UP fidelity"
    parts = []
    curves, layers, summary = tables["curves"], tables["layers"], tables["summary"]
    if curves.present or summary.present:
        parts.append("<h3>Twin runs: reference optimizer against GO-UP</h3>")
        parts.append(
            h.paragraph(
                "The same model, data order and seeds trained by the reference optimizer and by GO-UP; "
                "curves show the mean over seeds with a band from the lowest to the highest seed."
            )
        )
        if summary.present:
            parts.append(h.table(_summary_display(summary.frame), caption="Final metrics, one row per arm"))
        new = fidelity_figures(writer, curves.frame, layers.frame, highlight)
        figures.extend(new)
        parts.extend(h.figure(f) for f in new)
    shadow_rows = stats[(stats["quantity"] == schema.UPDATE)]
    has_shadow = "noise_to_signal" in shadow_rows.columns and shadow_rows["noise_to_signal"].notna().any()
    if has_shadow:
        parts.append("<h3>One-step (shadow) fidelity during this run</h3>")
        parts.append(
            h.paragraph(
                "At each captured step the probe compares the actual update with GO-UP's update "
                "θ − αg + α·std(θ − g)·z: the noise it adds relative to the gradient step, and how far the "
                "two updates are apart."
            )
        )
        for metric, caption in (
            (
                "noise_to_signal",
                "σ√N/‖g‖ per tensor: GO-UP's added noise over the gradient's size. "
                "Above 1 the noise dominates the gradient step.",
            ),
            (
                "goup_w2_rel",
                "W2 between the actual update and GO-UP's update distribution, relative to "
                "the size of GO-UP's mean update.",
            ),
        ):
            fig = _shadow_lines(writer, stats, metric, caption, highlight)
            figures.append(fig)
            parts.append(h.figure(fig))
    if not parts:
        notes["fidelity"] = (
            "This run holds no GO-UP comparison (no compare tables, no shadow columns); run a "
            "comparison to fill this section."
        )
        return h.Section("fidelity", heading, h.paragraph(notes["fidelity"], cls="note"))
    return h.Section("fidelity", heading, "\n".join(parts))


def _shadow_lines(
    writer: FigureWriter, stats: pd.DataFrame, metric: str, caption: str, highlight: Sequence[str]
) -> FigureFile:
    from goup_probe import plots

    label = plots.METRIC_LABELS.get(metric, metric)

    def draw(ax: Any) -> None:
        plots.plot_layer_lines(stats, metric=metric, quantity=schema.UPDATE, highlight=highlight, ax=ax)
        ax.set_title(label + " over training", fontsize=10)

    return writer.draw(
        f"shadow-{metric}", f"{metric.replace('_', ' ')} over training", caption, (9.5, 4.0), draw
    )


def _summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    try:
        from goup_probe.fidelity import summary_table
    except ImportError:
        return summary
    try:
        return summary_table(summary)
    except (KeyError, ValueError, TypeError):
        return summary


def _glossary_body(meta: dict[str, Any]) -> str:
    return h.definition_list(glossary_items(meta))
