"""The "Gradient noise" section: the in-run micro-batch noise ξ_i = g_i − ḡ, per layer and over training."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from goup_probe.noise.inrun import VERDICTS, b_simple_over_training, noise_layers, why_no_noise
from goup_probe.report import html as h
from goup_probe.report.sections.base import ReportContext, Section, SectionOutput

__all__ = ["NoiseSection"]


def _interval(low: float, high: float) -> str:
    if not (math.isfinite(low) or math.isfinite(high)):
        return "–"
    return f"[{h.fmt_value(low)}, {h.fmt_value(high)}]"


def layer_table(layers: pd.DataFrame) -> pd.DataFrame:
    """The per-layer table as shown (page and CLI): verdict counts, shape, tail index with interval."""
    shown = pd.DataFrame(
        {
            "param": layers["param"],
            "steps": layers["steps"],
            "k": layers["n_micro"],
            **{v: layers[v] for v in VERDICTS},
            "excess kurtosis": layers["excess_kurtosis"],
            "skew": layers["skew"],
            "α̂ median": layers["tail_alpha"],
            "α̂ last": layers["tail_alpha_last"],
            "α 95% CI (last)": [
                _interval(lo, hi) for lo, hi in zip(layers["tail_low"], layers["tail_high"], strict=True)
            ],
            "noise var": layers["noise_var"],
            "B_simple (micro-batches)": layers["b_simple"],
        }
    )
    return shown


class NoiseSection(Section):
    """Per-layer verdicts and shape of the micro-batch gradient noise, tail index, B_simple in training."""

    name = "noise"
    title = "Gradient noise"

    def missing(self, ctx: ReportContext) -> str | None:
        """One sentence (how to record it) when the run holds no in-run noise."""
        reason = why_no_noise(ctx.run)
        return None if reason is None else f"{self.title}: {reason}."

    def build(self, ctx: ReportContext) -> SectionOutput:
        """Intro, the per-layer table, and B_simple over training."""
        layers = noise_layers(ctx.run)
        curve = b_simple_over_training(ctx.run)
        k = int(layers["n_micro"].median())
        parts = [
            h.paragraph(
                f"At each captured step the loop accumulated k = {k} micro-batches (median). For "
                "micro-batch i, g_i = k × its gradient contribution estimates the step's gradient ḡ, and "
                "ξ_i = g_i − ḡ is its noise; each ξ_i is one row of the battery (verdict counts below are "
                "over those rows). The tail index α is Mohammadi et al.'s estimator for a symmetric α-stable "
                "law on the subsample of ξ pooled over a step's micro-batches (α = 2: Gaussian; a non-stable "
                "law gives α̂ near 2 or above). B_simple = tr Σ / |G|² (McCandlish et al. 2018) is in "
                "micro-batches: multiply by the micro-batch size for samples; per layer it is "
                "Σ_steps tr Σ / Σ_steps |G|²."
            ),
            h.table(layer_table(layers), scroll=True),
        ]
        figures = []
        finite = curve[np.isfinite(curve["b_simple_window"])]
        if len(finite):

            def draw(ax: Any) -> None:
                ax.plot(curve["step"], curve["b_simple"], ".", color="0.6", label="per step")
                ax.plot(finite["step"], finite["b_simple_window"], "-", color="C0", label="moving window")
                ax.set_xlabel("step")
                ax.set_ylabel("B_simple (micro-batches)")
                if (finite["b_simple_window"] > 0).all() and (curve["b_simple"].dropna() > 0).all():
                    ax.set_yscale("log")
                ax.legend(loc="best", fontsize=8)

            figures.append(
                ctx.writer.draw(
                    "noise_b_simple",
                    "B_simple over training",
                    "Noise scale of all the probed tensors together: per step (grey; noisy, since |G|² is "
                    "estimated from k micro-batches) and the ratio of tr Σ and |G|² summed over a moving "
                    "window of steps (blue).",
                    (7.5, 3.0),
                    draw,
                )
            )
            parts.extend(h.figure(f) for f in figures)
            last = finite.iloc[-1]
            parts.append(
                h.paragraph(
                    f"B_simple at step {int(last['step'])} (window): {h.fmt_value(last['b_simple_window'])} "
                    "micro-batches."
                    + (
                        " A negative value means |G|² is estimated below zero: the noise dominates the "
                        "gradient at these batch sizes."
                        if (curve["b_simple"] < 0).any()
                        else ""
                    )
                )
            )
        if "curvature" in ctx.tables:
            parts.append(h.table(ctx.table("curvature"), scroll=True, caption="Curvature (as measured)"))
        else:
            parts.append(
                h.paragraph(
                    "No curvature in this run: gp.curvature measures it on demand, and "
                    "gp.attach(..., noise=gp.NoiseProbe(..., curvature=True)) during training.",
                    cls="note",
                )
            )
        return SectionOutput("\n".join(parts), tuple(figures))
