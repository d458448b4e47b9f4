"""The OU section's curvature part: k̂ beside α(h + λ), where a NoiseProbe measured the curvature.

Called from the OU section; it adds nothing when the run holds no curvature
(:mod:`goup_probe.noise.ou_rate` has the rule).
"""

from __future__ import annotations

import pandas as pd

from goup_probe import schema
from goup_probe.noise.ou_rate import ou_rate_vs_curvature
from goup_probe.report import html as h
from goup_probe.report.sections.base import ReportContext

__all__ = ["curvature_parts", "curvature_sentence"]

SHOWN = {
    "param": "param",
    "curv_steps": "steps measured",
    "h_mean": "h = tr H / N",
    "h_top": "h_top",
    "weight_decay": "λ",
    "lr": "α",
    "k_pooled": "k̂",
    "k_predicted": "α(h + λ)",
    "k_ratio": "k̂ / α(h + λ)",
    "k_within_ci": "α(h + λ) in k̂'s CI",
    "k_top": "α(h_top + λ)",
}
"""Columns of the comparison table and their headings."""


def curvature_sentence(table: pd.DataFrame) -> str:
    """One sentence on how k̂ compares with α(h + λ) over the tensors of ``table``."""
    n = len(table)
    within = int((table["k_within_ci"] == True).sum())  # noqa: E712 (NaN: no interval)
    ratios = table["k_ratio"].dropna()
    above_top = int((table["k_pooled"] > table["k_top"]).sum())
    median = f"{h.fmt_value(float(ratios.median()))}" if len(ratios) else "–"
    return (
        f"Near a quadratic minimum SGD reverts at k ≈ α(h + λ) (Mandt, Hoffman & Blei 2017), with h the "
        f"mean diagonal curvature tr(H)/N of the tensor's Hessian block and λ its weight decay: for "
        f"{within} of {n} tensor(s) α(h + λ) lies inside k̂'s interval, the median of k̂ / α(h + λ) is "
        f"{median}, and {above_top} tensor(s) revert faster than the block's top eigenvalue allows "
        "(k̂ > α(h_top + λ)). The curvature is the median over the NoiseProbe's measured steps; far from a "
        "minimum, or for an optimizer whose update is not −α(g + λθ), the prediction need not hold."
    )


def curvature_parts(ctx: ReportContext, ou: pd.DataFrame) -> list[str]:
    """The heading, sentence and table of the comparison; empty when no curvature was measured."""
    if schema.NOISE_PROBE not in ctx.tables:
        return []
    table = ou_rate_vs_curvature(ou, ctx.table(schema.NOISE_PROBE))
    if table.empty:
        return []
    shown = table[list(SHOWN)].rename(columns=SHOWN)
    return [
        "<h3>OU rate and curvature</h3>",
        h.paragraph(curvature_sentence(table)),
        h.table(shown, scroll=True),
    ]
