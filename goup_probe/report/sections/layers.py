"""The per-layer detail: histograms, QQ plots and test results of the chosen tensors."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from goup_probe import schema
from goup_probe.report import html as h
from goup_probe.report.data import load_samples
from goup_probe.report.figures import layer_figure
from goup_probe.report.sections.base import ReportContext, Requirement, Section, SectionOutput, SectionSkipped

NO_LAYERS = "No parameter tensor has captured statistics, so there is no per-layer detail."


class LayersSection(Section):
    """For each chosen tensor: its test results at the chosen steps and the figure of X, θ and g."""

    name = "layers"
    title = "Per-layer detail"
    requires = (Requirement("stats", note=NO_LAYERS),)

    def build(self, ctx: ReportContext) -> SectionOutput:
        """One table and one figure per chosen tensor, least Gaussian first."""
        selection, steps, stats = ctx.selection, ctx.steps, ctx.stats
        params = selection.params
        if not params:
            raise SectionSkipped(NO_LAYERS)
        samples = load_samples(ctx.run, params, steps)
        parts = [
            h.paragraph(
                f"Showing {selection.note}, at steps {', '.join(map(str, steps))}. The histogram is the "
                "stored subsample of X = θ − g on the density scale with the normal fitted to it (its own "
                "mean and standard deviation), as in the seed's figure; the QQ plot and the components θ "
                "and g sit beside it. Every other tensor appears in the overviews below."
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
        figures = []
        for label, names in groups:
            if not names:
                continue
            parts.append(f"<h3>{h.esc(label)}</h3>")
            for param in names:
                fig = layer_figure(ctx.writer, stats, samples, param, steps)
                figures.append(fig)
                parts.append(f"<h4>{h.esc(param)}</h4>")
                parts.append(h.table(_layer_table(stats, param, steps)))
                parts.append(h.figure(fig))
        return SectionOutput("\n".join(parts), tuple(figures))


_DETAIL_COLUMNS = (
    "step",
    "verdict",
    "shape",
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
    table.insert(
        3 if "shape" in table.columns else 2, "verdict of θ", [theta.get(s, "–") for s in table["step"]]
    )
    return table.rename(columns={"verdict": "verdict of X", "shape": "shape of X"})
