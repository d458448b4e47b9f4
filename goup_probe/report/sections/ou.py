"""The Ornstein–Uhlenbeck section: the OU validation of the tracer trajectories, per tensor."""

from __future__ import annotations

from goup_probe.ou import verdict_kind
from goup_probe.report import html as h
from goup_probe.report.data import OU_TABLES
from goup_probe.report.figures import ou_figures
from goup_probe.report.sections.base import ReportContext, Requirement, Section, SectionOutput, SectionSkipped
from goup_probe.report.sections.ou_curvature import curvature_parts
from goup_probe.update_rule import ou_rule, rate_sentence

NO_TRAJECTORIES = "This run recorded no tracer trajectories (tracers=0), so the OU model cannot be checked."
TURNED_OFF = "The OU section was turned off for this report."


class OUSection(Section):
    """k̂/α, innovation autocorrelation and residual diagnostics of :func:`goup_probe.validate_ou`.

    Reads a stored OU table when the run has one, else computes it from the
    ``trajectories`` table.
    """

    name = "ou"
    title = "Ornstein–Uhlenbeck model"
    requires = (Requirement((*OU_TABLES, "trajectories"), note=NO_TRAJECTORIES),)

    def missing(self, ctx: ReportContext) -> str | None:
        """Turned off by ``ou=False``, or no trajectories (nor a stored OU table)."""
        return TURNED_OFF if not ctx.include_ou else super().missing(ctx)

    def build(self, ctx: ReportContext) -> SectionOutput:
        """Verdict counts, the OU figures, the per-tensor table and the evidence behind each verdict."""
        ou = ctx.ou
        if not ou.present:
            raise SectionSkipped(ou.note)
        frame = ou.frame
        parts = [
            h.paragraph(
                "Does θ follow a discrete OU process θ_{t+1} = θ_t − k(θ_t − μ) + e_t with i.i.d. Gaussian "
                "innovations? For plain SGD the seed's relation with k = α is an identity, so what is "
                "tested is whether η = α(θ − g) behaves like an innovation, and what k the trajectories "
                f"actually show. Source: {ou.source}."
            )
        ]
        rate = rate_sentence(ou_rule(ctx.run.meta, frame), frame)
        if rate:
            parts.append(h.paragraph(f"The rate k̂ against the learning rate: {rate}."))
        if "verdict" in frame.columns:
            counts = frame["verdict"].map(verdict_kind).value_counts()
            parts.append(
                h.paragraph("Verdicts: " + "; ".join(f"{v}: {n} tensor(s)" for v, n in counts.items()) + ".")
            )
        new = ou_figures(ctx.writer, frame)
        parts.extend(h.figure(f) for f in new)
        columns = [c for c in TABLE_COLUMNS if c in frame.columns]
        parts.append(h.table(frame[columns], scroll=True))
        parts.extend(curvature_parts(ctx, frame))  # nothing unless a NoiseProbe measured the curvature
        if "reason" in frame.columns:
            reasons = [f"{p}: {r}" for p, r in zip(frame["param"], frame["reason"], strict=True) if r]
            if reasons:
                parts.append("<details><summary>Evidence behind each verdict</summary>")
                parts.append(h.bullet_list(reasons))
                parts.append("</details>")
        return SectionOutput("\n".join(parts), tuple(new))


TABLE_COLUMNS = (
    "param",
    "steps",
    "lr",
    "lr_min",
    "lr_max",
    "eff_step",
    "k_pooled",
    "k_pooled_ci_low",
    "k_pooled_ci_high",
    "k_over_lr",
    "k_over_eff_step",
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
"""Columns of the OU table shown on the page, when present."""
