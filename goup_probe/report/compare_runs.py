"""One page overlaying several runs: ``goup-probe compare-runs RUN_DIR... --out DIR``.

Runs are matched by parameter name: a tensor name present in two runs or more
(the same model trained twice, or two models sharing layer names) is a *shared
layer*, and its effect size, excess kurtosis and ‖g‖/‖θ‖ are drawn over training
with one line per run. Verdict shares and OU rates are shown per run, and a table
lists the run-level columns of :func:`goup_probe.runs.load_runs`.

The page uses the report's template and HTML helpers
(:mod:`goup_probe.report.html`) and its figure writer
(:class:`~goup_probe.report.figures.FigureWriter`); the figures are drawn by
:mod:`goup_probe.report.compare_figures`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.order import model_order
from goup_probe.plots.tables import ou_ratio
from goup_probe.report import html as h
from goup_probe.report.compare_figures import LOG_METRICS, lines_figure, ou_figure, run_colors, verdict_figure
from goup_probe.report.figures import FigureWriter
from goup_probe.report.findings import shape_counts, shape_list
from goup_probe.report.folder import _GENERATOR_MARK, INDEX, FigureFile, prepare_report_dir, write_index
from goup_probe.runs import RUN_COLUMN, load_runs, resolve_runs
from goup_probe.store import list_tables, read_meta, utc_now
from goup_probe.store.paths import RUN_JSON

__all__ = ["CompareRunsResult", "check_out_dir", "compare_runs", "shared_layers"]

X = schema.THETA_MINUS_GRAD
OU_TABLE = "ou"
STATS_COLUMNS = (
    "step",
    "param",
    "quantity",
    "axis",
    "status",
    "verdict",
    "shape",
    "numel",
    "w1_sigma",
    "excess_kurtosis",
    "grad_norm",
    "param_norm",
    "grad_to_param",
)
"""Columns of ``stats`` the page reads (projection pushed into the Parquet reader)."""

LINE_METRICS: tuple[tuple[str, str, str], ...] = (
    (
        "w1_sigma",
        "Effect size W1/σ of X over training",
        "Wasserstein-1 distance between X = θ − g and its fitted normal, in units of its standard "
        "deviation (0 for a normal; the verdict's margin for 'close' is 0.05, on an upper bound).",
    ),
    (
        "excess_kurtosis",
        "Excess kurtosis of X over training",
        "0 for a normal distribution, −1.2 for a uniform one (PyTorch's default init), positive for "
        "heavy tails.",
    ),
    (
        "grad_to_param",
        "‖g‖/‖θ‖ over training",
        "Gradient norm over parameter norm (log scale): when ≪ 1, X = θ − g is essentially θ and its "
        "shape is inherited from the weights.",
    ),
)
"""Stats column, figure title and caption of each over-training figure."""

SUMMARY_NOTE = (
    "Per run, on X = θ − g: tensors and captured steps; gaussian_share, the share of (tensor, step) rows "
    "with a decided verdict judged Gaussian or close to Gaussian (gaussian_share_last: at the last "
    "captured step); non_gaussian_shapes_last, the non-Gaussian tensors at the last captured step and "
    "how many of them show each shape (a tensor can show several); medians over tensors of W1/σ and "
    "excess kurtosis at the last captured step, and of "
    "‖g‖/‖θ‖ over all rows."
)


@dataclass(frozen=True)
class CompareRunsResult:
    """What :func:`compare_runs` wrote."""

    out_dir: Path
    index: Path
    figures: tuple[FigureFile, ...]
    runs: tuple[str, ...]
    """Run names, in the order given (the ``run`` column of :func:`~goup_probe.runs.load_runs`)."""
    shared: tuple[str, ...]
    """Parameter names present in at least two runs, in model order."""
    layers: tuple[str, ...]
    """Shared layers drawn over training (at most ``max_layers``)."""
    seconds: float


def check_out_dir(out: Path, *, overwrite: bool) -> None:
    """Refuse an output folder that would lose something: the rule of ``--out`` and ``--overwrite``.

    A folder that does not exist or is empty is fine. A non-empty one needs
    ``overwrite``, and then may only hold an earlier goup_probe page: its
    ``index.html`` must carry goup_probe's generator mark (a page of anyone else
    is never replaced), and only that page and the PNGs under ``figures/`` are
    replaced; other files stay. A run directory is never a report folder.

    Raises
    ------
    ValueError
        Naming the folder and what is in the way.
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} exists and is not a directory")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if (out / RUN_JSON).exists():
        raise ValueError(
            f"--out {str(out)!r} is a run directory (it holds {RUN_JSON}); choose another folder"
        )
    if not overwrite:
        raise ValueError(
            f"--out {str(out)!r} is not empty; choose a new folder, or pass --overwrite to replace an "
            "earlier page there (only its index.html and figures/*.png are replaced)"
        )
    index = out / INDEX
    if index.exists() and (
        not index.is_file() or _GENERATOR_MARK not in index.read_text("utf-8", errors="replace")[:2000]
    ):
        raise ValueError(
            f"--out {str(out)!r} holds an {INDEX} that goup_probe did not write; refusing to replace it "
            "even with --overwrite: choose another folder"
        )


def shared_layers(stats: pd.DataFrame, metas: dict[str, dict]) -> list[str]:
    """Parameter names that at least two runs captured, in model order (first run's order first).

    Parameters
    ----------
    stats : DataFrame
        Rows of :func:`~goup_probe.runs.load_runs` (columns ``run`` and ``param``).
    metas : dict
        ``run.json`` of each run, by run name, in the runs' order.
    """
    if stats.empty:
        return []
    per_param = stats.groupby("param", sort=False)[RUN_COLUMN].nunique()
    shared = set(per_param[per_param >= 2].index.astype(str))
    return [p for p in _combined_order(stats, metas) if p in shared]


def _combined_order(stats: pd.DataFrame, metas: dict[str, dict]) -> list[str]:
    """Every parameter name in model order: the first run's, then names only later runs have."""
    order: dict[str, None] = {}
    for run, meta in metas.items():
        names = stats.loc[stats[RUN_COLUMN] == run, "param"].astype(str)
        order.update(dict.fromkeys(model_order(names, meta)))
    return list(order)


def _choose_layers(stats: pd.DataFrame, shared: list[str], max_layers: int) -> list[str]:
    """The ``max_layers`` shared layers with most captured (run, step) pairs, shown in model order."""
    if not shared:
        return []
    sub = stats[stats["param"].isin(shared)]
    captured = sub.groupby("param")[[RUN_COLUMN, "step"]].apply(lambda f: len(f.drop_duplicates()))
    rank = {p: i for i, p in enumerate(shared)}
    best = sorted(shared, key=lambda p: (-int(captured.get(p, 0)), rank[p]))[:max_layers]
    return sorted(best, key=rank.__getitem__)


# ----------------------------------------------------------------------------- tables


def _run_summary(stats: pd.DataFrame, runs: Sequence[str]) -> pd.DataFrame:
    """Per run: tensors, captured steps, Gaussian shares and medians of X at the last captured step."""
    out = []
    for run in runs:
        rows = stats[stats[RUN_COLUMN] == run]
        row: dict[str, object] = {"run": run, "tensors": rows["param"].nunique(), "captured": 0}
        if not rows.empty:
            last = rows[rows["step"] == rows["step"].max()]
            row.update(
                captured=rows["step"].nunique(),
                last_step=int(rows["step"].max()),
                gaussian_share=_gaussian_share(rows),
                gaussian_share_last=_gaussian_share(last),
                non_gaussian_shapes_last=_non_gaussian_shapes(rows, int(rows["step"].max())),
                w1_sigma_last=_median(last["w1_sigma"]),
                kurt_last=_median(last["excess_kurtosis"]),
                grad_to_param=_median(rows["grad_to_param"]),
            )
        out.append(row)
    columns = [
        "run",
        "tensors",
        "captured",
        "last_step",
        "gaussian_share",
        "gaussian_share_last",
        "non_gaussian_shapes_last",
        "w1_sigma_last",
        "kurt_last",
        "grad_to_param",
    ]
    return pd.DataFrame(out).reindex(columns=columns)


_DECIDED = (schema.VERDICT_GAUSSIAN, schema.VERDICT_CLOSE, schema.VERDICT_NON_GAUSSIAN)


def _gaussian_share(rows: pd.DataFrame) -> float:
    """Share of rows with a decided verdict that are Gaussian or close to Gaussian (as the summary)."""
    decided = rows[rows["verdict"].isin(_DECIDED)]
    if decided.empty:
        return np.nan
    return float(decided["verdict"].isin(_DECIDED[:2]).mean())


def _non_gaussian_shapes(rows: pd.DataFrame, step: int) -> str:
    """``"12: 9 heavy-tailed, 3 light-tailed"``: the non-Gaussian tensors at ``step`` and their shapes."""
    for verdict, total, counts in shape_counts(rows, step):
        if verdict == schema.VERDICT_NON_GAUSSIAN:
            return f"{total}: {shape_list(counts)}" if counts else str(total)
    return "0"


def _median(series: pd.Series) -> float:
    values = series.astype(np.float64).to_numpy()
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else np.nan


def _info_table(info: pd.DataFrame) -> pd.DataFrame:
    """The run-level columns, without those no run fills (``run_path`` last: it is long)."""
    frame = info.dropna(axis=1, how="all")
    order = [c for c in frame.columns if c != "run_path"] + (["run_path"] if "run_path" in frame else [])
    return frame[order]


# ----------------------------------------------------------------------------- the page


def compare_runs(
    runs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    max_layers: int = 6,
    dpi: int = 100,
) -> CompareRunsResult:
    """Write one HTML page (and its PNGs) overlaying several runs, into the folder ``out``.

    Parameters
    ----------
    runs : path, glob pattern or sequence of them
        Run directories, as in :func:`goup_probe.runs.load_runs`.
    out : path
        Report folder: ``index.html`` and ``figures/*.png``. It must be empty or
        new, unless ``overwrite`` (see :func:`check_out_dir`).
    overwrite : bool
        Replace an earlier goup_probe page in ``out`` (never anything else).
    max_layers : int
        At most this many shared layers are drawn over training: those with most
        captured steps, shown in model order.
    dpi : int
        Resolution of the PNG files.

    Returns
    -------
    CompareRunsResult

    Raises
    ------
    ValueError
        If ``out`` is in the way (:func:`check_out_dir`), a glob matches nothing,
        or ``max_layers`` is below 1. Nothing is written then.
    RunDirectoryError
        If a path is not a run directory, naming it.
    """
    start = time.perf_counter()
    if isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1:
        raise ValueError(f"max_layers must be a positive integer, got {max_layers!r}")
    out_dir = Path(out)
    paths = resolve_runs(runs)
    check_out_dir(out_dir, overwrite=overwrite)  # before anything is read or written
    stats = load_runs(paths, columns=STATS_COLUMNS, filters=[("quantity", "==", X)])
    info = stats.attrs["runs"]
    stats = stats[stats["axis"].fillna(schema.AXIS_POOLED) == schema.AXIS_POOLED]
    names = list(info[RUN_COLUMN])
    metas = {name: read_meta(path) for name, path in zip(names, paths, strict=True)}
    shared = shared_layers(stats, metas)
    layers = _choose_layers(stats, shared, max_layers)
    with_ou = [p for p in paths if OU_TABLE in list_tables(p)]
    ou = load_runs(with_ou, table=OU_TABLE) if with_ou else pd.DataFrame()
    if not ou.empty:  # names as among all runs (a subset can disambiguate differently)
        ou[RUN_COLUMN] = ou["run_path"].map(dict(zip(info["run_path"], names, strict=True)))

    prepare_report_dir(out_dir)
    writer = FigureWriter(out_dir, dpi=dpi)
    colors = run_colors(names)
    figures: list[FigureFile] = []
    sections = [h.Section("runs", "Runs", _runs_body(info, stats, names))]

    verdict_fig = verdict_figure(writer, stats, names)
    figures.append(verdict_fig)
    sections.append(
        h.Section(
            "verdicts",
            "Verdicts",
            h.figure(verdict_fig) + h.paragraph(SUMMARY_NOTE) + h.table(_run_summary(stats, names)),
        )
    )

    body, new = _training_body(writer, stats, shared, layers, names, colors)
    figures.extend(new)
    sections.append(h.Section("training", "Shared layers over training", body))

    body, new = _ou_body(writer, ou, layers or shared, names, colors, paths, with_ou)
    figures.extend(new)
    sections.append(h.Section("ou", "OU rates", body))

    from goup_probe._version import __version__

    page = h.page(
        title=f"goup_probe run comparison: {len(names)} runs",
        subtitle=f"Runs {', '.join(names)} · matched by parameter name · built from their Parquet tables",
        sections=sections,
        version=__version__,
        built_at=utc_now(),
        build_seconds=time.perf_counter() - start,
    )
    return CompareRunsResult(
        out_dir=out_dir,
        index=write_index(out_dir, page),
        figures=tuple(figures),
        runs=tuple(names),
        shared=tuple(shared),
        layers=tuple(layers),
        seconds=time.perf_counter() - start,
    )


def _runs_body(info: pd.DataFrame, stats: pd.DataFrame, runs: Sequence[str]) -> str:
    models = info["run_model"].dropna().unique() if "run_model" in info else []
    lead = (
        f"{len(runs)} runs; run-level columns as gp.load_runs adds them to every row "
        "(run_meta_<key>: the metadata passed to gp.attach(metadata=...)). "
    )
    if len(models) > 1:
        lead += (
            f"The runs train different models ({', '.join(map(str, models))}); layers are matched by name."
        )
    empty = [r for r in runs if stats[stats[RUN_COLUMN] == r].empty]
    parts = [h.paragraph(lead), h.table(_info_table(info), scroll=True)]
    if empty:
        parts.append(h.paragraph(f"No captured rows of X in: {', '.join(empty)}.", cls="note"))
    return "\n".join(parts)


def _training_body(
    writer: FigureWriter,
    stats: pd.DataFrame,
    shared: Sequence[str],
    layers: Sequence[str],
    runs: Sequence[str],
    colors: dict,
) -> tuple[str, list[FigureFile]]:
    if len(runs) < 2:
        return h.paragraph("Only one run was given: there is nothing to overlay.", cls="note"), []
    if not shared:
        text = (
            "The runs share no layer: no parameter name was captured in two runs or more, so nothing is "
            "overlaid. The per-run summaries above still compare them."
        )
        return h.paragraph(text, cls="note"), []
    lead = (
        f"{len(shared)} parameter names were captured in two runs or more; "
        + (
            f"shown: the {len(layers)} with most captured steps, in model order. "
            if len(layers) < len(shared)
            else "all are shown, in model order. "
        )
        + "One colour and marker per run; a run lacking a layer has no line in its panel."
    )
    parts = [h.paragraph(lead)]
    figures = []
    for metric, title, caption in LINE_METRICS:
        if metric not in stats.columns:
            continue
        values = stats[metric].astype(np.float64)
        finite = stats.loc[np.isfinite(values) & ((values > 0) if metric in LOG_METRICS else True), "param"]
        present = set(pd.unique(finite))  # once: a set per layer was 3.5 s of 12 on 2 × 328 000 rows
        drawn = [p for p in layers if p in present]
        if len(drawn) < len(layers):
            left_out = ", ".join(p for p in layers if p not in drawn)
            caption = f"{caption} Not drawn, having no finite value in any run: {left_out}."
        if not drawn:
            parts.append(h.paragraph(f"{title}: no shared layer has a finite value.", cls="note"))
            continue
        fig = lines_figure(writer, stats, drawn, runs, colors, metric, title, caption)
        figures.append(fig)
        parts.append(h.figure(fig))
    return "\n".join(parts), figures


def _ou_body(
    writer: FigureWriter,
    ou: pd.DataFrame,
    layers: Sequence[str],
    runs: Sequence[str],
    colors: dict,
    paths: Sequence[Path],
    with_ou: Sequence[Path],
) -> tuple[str, list[FigureFile]]:
    if ou.empty or "param" not in ou.columns:
        text = (
            "None of the runs has an ou table. Write one per run with goup-probe ou RUN_DIR --write "
            "(it needs tracer trajectories: gp.attach(..., tracers=N))."
        )
        return h.paragraph(text, cls="note"), []
    names = dict(zip(map(str, paths), runs, strict=True))
    missing = [names[str(p)] for p in paths if p not in with_ou]
    ou_runs = [r for r in runs if r in set(ou[RUN_COLUMN])]
    rows = layers if layers else list(dict.fromkeys(ou["param"].astype(str)))[:12]
    rows = [p for p in rows if p in set(ou["param"].astype(str))]
    parts = []
    if missing:
        parts.append(h.paragraph(f"No ou table in: {', '.join(missing)}.", cls="note"))
    figures = []
    if rows and ou_ratio(ou) is not None:
        fig = ou_figure(writer, ou, rows, ou_runs, colors)
        figures.append(fig)
        parts.append(h.figure(fig))
    value = "k_pooled" if "k_pooled" in ou.columns else None
    if value is not None and rows:
        pivot = ou[ou["param"].isin(rows)].pivot_table(
            index="param", columns=RUN_COLUMN, values=value, aggfunc="first"
        )
        pivot = pivot.reindex(index=rows, columns=ou_runs).reset_index()
        parts.append(
            h.paragraph(f"{value}: the mean-reversion rate k̂ per optimizer step, per layer and run.")
        )
        parts.append(h.table(pivot))
    if not parts:
        parts.append(h.paragraph("The ou tables hold no layer to show.", cls="note"))
    return "\n".join(parts), figures
