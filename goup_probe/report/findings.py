"""The report's findings in plain words, with the numbers behind them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from goup_probe import schema
from goup_probe.report.select import MIN_RANKED_N, choose_steps
from goup_probe.rows import quantity_rows

UNIFORM_EXCESS_KURTOSIS = -1.2
"""Excess kurtosis of a uniform distribution (PyTorch's default Kaiming-uniform init)."""
SMALL_RATIO = 0.1
"""‖g‖/‖θ‖ below this is called "much smaller than 1"."""
KURTOSIS_SHIFT = 0.25
"""A change of the median excess kurtosis at least this large counts as a change of shape."""


@dataclass(frozen=True)
class StepVerdicts:
    """How many tensors got each verdict for X at one captured step."""

    step: int
    label: str
    gaussian: int
    close: int
    non_gaussian: int
    not_tested: int
    inconclusive: int
    median_one_minus_qq_r: float
    median_excess_kurtosis: float
    median_grad_to_param: float
    large_total: int = 0
    large_gaussian_or_close: int = 0

    @property
    def total(self) -> int:
        """All tensors with a row at this step."""
        return self.gaussian + self.close + self.non_gaussian + self.inconclusive + self.not_tested


@dataclass(frozen=True)
class Findings:
    """Numbers the summary states, and the sentences that state them."""

    n_tensors: int
    captured_steps: tuple[int, ...]
    steps: tuple[StepVerdicts, ...]
    grad_to_param_median: float
    grad_to_param_q10: float
    grad_to_param_q90: float
    same_verdict_first_last: int
    compared_first_last: int
    same_verdict_x_theta: int
    compared_x_theta: int
    low_power_tensors: int
    sentences: tuple[str, ...] = field(default_factory=tuple)
    shapes_last: tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...] = ()
    """At the last captured step, per verdict with a shape (non-Gaussian, close to Gaussian):
    (verdict, tensors with it, ((shape, tensors showing it), ...)); a tensor may show several shapes."""

    def table(self) -> pd.DataFrame:
        """The per-step verdict counts as a DataFrame (one row per chosen step)."""
        return pd.DataFrame(
            [
                {
                    "step": s.step,
                    "when": s.label,
                    schema.VERDICT_GAUSSIAN: s.gaussian,
                    schema.VERDICT_CLOSE: s.close,
                    schema.VERDICT_NON_GAUSSIAN: s.non_gaussian,
                    schema.VERDICT_INCONCLUSIVE: s.inconclusive,
                    schema.VERDICT_NOT_TESTED: s.not_tested,
                    "median 1 − qq_r": s.median_one_minus_qq_r,
                    "median excess kurtosis": s.median_excess_kurtosis,
                    "median ‖g‖/‖θ‖": s.median_grad_to_param,
                }
                for s in self.steps
            ]
        )


def _median(values: pd.Series) -> float:
    arr = values.astype(np.float64).to_numpy()
    arr = arr[np.isfinite(arr)]
    return float(np.median(arr)) if arr.size else float("nan")


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.{digits}g}"


def _step_labels(chosen: list[int], all_steps: list[int]) -> dict[int, str]:
    labels = {}
    for s in chosen:
        if s == all_steps[0]:
            labels[s] = "first"
        elif s == all_steps[-1]:
            labels[s] = "last"
        else:
            labels[s] = "middle"
    return labels


def _step_verdicts(x_rows: pd.DataFrame, step: int, label: str) -> StepVerdicts:
    at = x_rows[x_rows["step"] == step]
    verdicts = at["verdict"].fillna(schema.VERDICT_NOT_TESTED)
    big = at[at["n_tested"].fillna(0) >= MIN_RANKED_N]
    return StepVerdicts(
        step=int(step),
        label=label,
        gaussian=int((verdicts == schema.VERDICT_GAUSSIAN).sum()),
        close=int((verdicts == schema.VERDICT_CLOSE).sum()),
        non_gaussian=int((verdicts == schema.VERDICT_NON_GAUSSIAN).sum()),
        not_tested=int((verdicts == schema.VERDICT_NOT_TESTED).sum()),
        inconclusive=int((verdicts == schema.VERDICT_INCONCLUSIVE).sum()),
        median_one_minus_qq_r=_median(1.0 - at["qq_r"]),
        median_excess_kurtosis=_median((big if len(big) else at)["excess_kurtosis"]),
        median_grad_to_param=_median(at["grad_to_param"]),
        large_total=len(big),
        large_gaussian_or_close=int(
            big["verdict"].isin([schema.VERDICT_GAUSSIAN, schema.VERDICT_CLOSE]).sum()
        ),
    )


def _verdict_by_param(rows: pd.DataFrame, step: int) -> pd.Series:
    at = rows[rows["step"] == step]
    return at.drop_duplicates("param").set_index("param")["verdict"]


@dataclass(frozen=True)
class _Agreement:
    """How far X's verdicts agree over training and with θ's (tested rows only)."""

    same_first_last: int
    compared_first_last: int
    changed_low_power: int
    same_x_theta: int
    compared_x_theta: int
    low_power: int


FINDINGS_COLUMNS = (
    "step",
    "param",
    "verdict",
    "n_tested",
    "qq_r",
    "excess_kurtosis",
    "grad_to_param",
    "shape",
)
"""The columns of X's rows the findings read."""


def _ratio_quantiles(x_all: pd.DataFrame) -> tuple[float, float, float]:
    """10%, 50% and 90% quantiles of ‖g‖/‖θ‖ over all rows of X (NaN when none is finite)."""
    ratio = x_all["grad_to_param"].astype(np.float64).to_numpy()
    ratio = ratio[np.isfinite(ratio)]
    q10, med, q90 = np.quantile(ratio, [0.1, 0.5, 0.9]) if ratio.size else (np.nan,) * 3
    return float(q10), float(med), float(q90)


def _agreement(stats: pd.DataFrame, captured: list[int]) -> _Agreement:
    columns = ["param", "step", "verdict", "n_tested"]
    tested = quantity_rows(stats, schema.THETA_MINUS_GRAD, columns, tested=True)
    first_v = _verdict_by_param(tested, captured[0])
    last_v = _verdict_by_param(tested, captured[-1])
    common = first_v.index.intersection(last_v.index)
    n_by_param = tested.groupby("param")["n_tested"].median()
    changed_names = common[(first_v[common] != last_v[common]).to_numpy()]
    theta_v = _verdict_by_param(quantity_rows(stats, schema.THETA, columns, tested=True), captured[-1])
    common_xt = last_v.index.intersection(theta_v.index)
    return _Agreement(
        same_first_last=int((first_v[common] == last_v[common]).sum()),
        compared_first_last=len(common),
        changed_low_power=int((n_by_param.reindex(changed_names) < MIN_RANKED_N).sum()),
        same_x_theta=int((last_v[common_xt] == theta_v[common_xt]).sum()),
        compared_x_theta=len(common_xt),
        low_power=int((n_by_param < MIN_RANKED_N).sum()),
    )


def _step_sentence(s: StepVerdicts) -> str:
    return (
        f"At the {s.label} captured step ({s.step}): {s.gaussian} Gaussian, {s.close} close to "
        f"Gaussian, {s.non_gaussian} non-Gaussian"
        + (f", {s.inconclusive} inconclusive (closeness not shown)" if s.inconclusive else "")
        + (f", {s.not_tested} not tested" if s.not_tested else "")
        + f" (of {s.total}); median effect size 1 − qq_r = {_fmt(s.median_one_minus_qq_r)}"
        + (
            f"; of the {s.large_total} tensors tested on at least {MIN_RANKED_N} values, "
            f"{s.large_gaussian_or_close} are Gaussian or close to Gaussian."
            if s.large_total and s.large_total < s.total
            else "."
        )
    )


def _verdict_sentences(per_step: tuple[StepVerdicts, ...], captured: list[int], n_tensors: int) -> list[str]:
    """What was captured, the verdict counts at each chosen step, and first vs last."""
    out = [
        f"The probe captured {len(captured)} step(s), from step {captured[0]} to step {captured[-1]}, "
        f"for {n_tensors} parameter tensor(s)."
    ]
    out.extend(_step_sentence(s) for s in per_step)
    if len(per_step) > 1:
        a, b = per_step[0], per_step[-1]
        out.append(
            f"Tensors judged Gaussian or close to Gaussian: {a.gaussian + a.close} of {a.total} "
            f"at step {a.step}, {b.gaussian + b.close} of {b.total} at step {b.step}."
        )
    return out


def _low_power_sentence(low_power: int) -> list[str]:
    if not low_power:
        return []
    return [
        f"{low_power} tensor(s) were tested on fewer than {MIN_RANKED_N} values (typically biases and "
        "normalisation scales); for them a Gaussian verdict means only that normality was not "
        "rejected on a handful of values."
    ]


def _multiplicity_sentences(stats: pd.DataFrame, meta: dict[str, Any], step: int) -> list[str]:
    """At the last captured step: rejections at level α, and at false discovery rate α (BH q-values)."""
    from goup_probe.stats.multiplicity import step_rejections
    from goup_probe.summary import recorded_alpha

    if "shapiro_p" not in stats.columns:  # a table without the verdict's p-value: nothing to count
        return []
    alpha = recorded_alpha(meta)
    counts = step_rejections(stats, alpha)
    at = counts[counts["step"] == step]
    if at.empty or int(at["tested"].iloc[0]) == 0:
        return []
    tested, raw, fdr = (int(at[c].iloc[0]) for c in ("tested", "rejected", "rejected_fdr"))
    resample = (meta.get("capture") or {}).get("resample", "fixed")
    repeat = (
        " Each tensor's subsample is the same at every step (resample='fixed'), so the steps repeat one "
        "test of it rather than adding independent evidence."
        if resample == "fixed" and len(counts) > 1
        else ""
    )
    return [
        f"At step {step}, normality is rejected for {raw} of {tested} tested tensors at level α = {alpha:g} "
        f"one by one, and for {fdr} of {tested} with the false discovery rate held at {alpha:g} across "
        f"the step's tensors (Benjamini–Hochberg q-values, column q_value).{repeat}"
    ]


SHAPE_ORDER = (
    schema.SHAPE_HEAVY_TAILED,
    schema.SHAPE_LIGHT_TAILED,
    schema.SHAPE_SKEWED,
    schema.SHAPE_DISCRETE,
    schema.SHAPE_OTHER,
)
"""The shapes a rejected row can name, in the order the findings list them."""


def shape_counts(x_rows: pd.DataFrame, step: int) -> tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...]:
    """Tensors of each shape among the non-Gaussian and close-to-Gaussian rows of X at ``step``.

    A comma-joined shape ("heavy-tailed, skewed") counts once for each shape it
    names. A table without the ``shape`` column (a run written before it) gives ``()``.
    """
    if "shape" not in x_rows.columns:
        return ()
    at = x_rows[x_rows["step"] == step].drop_duplicates("param")
    out = []
    for verdict in (schema.VERDICT_NON_GAUSSIAN, schema.VERDICT_CLOSE):
        shapes = at.loc[at["verdict"] == verdict, "shape"].fillna("").astype(str)
        if shapes.empty:
            continue
        named = [set(filter(None, (part.strip() for part in s.split(",")))) for s in shapes]
        counts = tuple((shape, sum(shape in n for n in named)) for shape in SHAPE_ORDER)
        out.append((verdict, len(shapes), tuple((s, c) for s, c in counts if c)))
    return tuple(out)


_SHAPE_LABELS = {schema.SHAPE_OTHER: "other (no significant tail, asymmetry or lattice)"}


def shape_list(counts: tuple[tuple[str, int], ...]) -> str:
    """``"9 heavy-tailed, 3 light-tailed"``: the counts of one verdict of :func:`shape_counts`."""
    return ", ".join(f"{c} {_SHAPE_LABELS.get(shape, shape)}" for shape, c in counts)


def _shape_sentences(
    shapes: tuple[tuple[str, int, tuple[tuple[str, int], ...]], ...], step: int
) -> list[str]:
    """Sentences like 'Of the 12 non-Gaussian tensors at step 90, 9 heavy-tailed, 3 light-tailed.'."""
    out = []
    for verdict, total, counts in shapes:
        if not counts:
            continue
        several = " (a tensor can show more than one shape)" if sum(c for _, c in counts) > total else ""
        out.append(f"Of the {total} {verdict} tensors at step {step}: {shape_list(counts)}{several}.")
    return out


def _empty_findings(status_sentence: str) -> Findings:
    sentences = ("The run holds no captured statistics of X = θ − g, so there is nothing to report yet.",)
    if status_sentence:
        sentences = (status_sentence, *sentences)
    nan = float("nan")
    return Findings(0, (), (), nan, nan, nan, 0, 0, 0, 0, 0, sentences)


def compute_findings(stats: pd.DataFrame, meta: dict[str, Any]) -> Findings:
    """Count verdicts, measure ‖g‖/‖θ‖ and judge what the initialisation explains.

    Parameters
    ----------
    stats : DataFrame
        ``run.stats``.
    meta : dict
        ``run.meta`` (status and step count, for partial runs).

    Returns
    -------
    Findings
        Numbers and plain-language sentences; empty-run safe. A comparison whose
        data was not computed (θ not tested, the default) gets no sentence.
    """
    x_all = quantity_rows(stats, schema.THETA_MINUS_GRAD, FINDINGS_COLUMNS)
    captured = sorted({int(s) for s in x_all["step"]})
    n_tensors = int(x_all["param"].nunique())
    status_sentence = _status_sentence(meta, captured)
    if not captured:
        return _empty_findings(status_sentence)

    chosen = choose_steps(captured, 3)
    labels = _step_labels(chosen, captured)
    per_step = tuple(_step_verdicts(x_all, s, labels[s]) for s in chosen)
    q10, med, q90 = _ratio_quantiles(x_all)
    agree = _agreement(stats, captured)

    sentences = [status_sentence] if status_sentence else []
    sentences.extend(_verdict_sentences(per_step, captured, n_tensors))
    sentences.append(_ratio_sentence(med, q10, q90))
    sentences.extend(
        _inheritance_sentences(
            per_step,
            captured,
            med,
            (agree.same_first_last, agree.compared_first_last, agree.changed_low_power),
            (agree.same_x_theta, agree.compared_x_theta),
        )
    )
    sentences.extend(_low_power_sentence(agree.low_power))
    shapes = shape_counts(x_all, captured[-1])
    sentences.extend(_shape_sentences(shapes, captured[-1]))
    sentences.extend(_multiplicity_sentences(stats, meta, captured[-1]))
    return Findings(
        n_tensors=n_tensors,
        captured_steps=tuple(captured),
        steps=per_step,
        grad_to_param_median=med,
        grad_to_param_q10=q10,
        grad_to_param_q90=q90,
        same_verdict_first_last=agree.same_first_last,
        compared_first_last=agree.compared_first_last,
        same_verdict_x_theta=agree.same_x_theta,
        compared_x_theta=agree.compared_x_theta,
        low_power_tensors=agree.low_power,
        sentences=tuple(sentences),
        shapes_last=shapes,
    )


def _status_sentence(meta: dict[str, Any], captured: list[int]) -> str:
    status = str(meta.get("status", "unknown"))
    if status == "completed":
        return ""
    reason = str(meta.get("status_reason") or "").strip()
    steps = meta.get("steps", "?")
    detail = f" ({reason})" if reason else ""
    if status == "running":
        return (
            f"The run was still running when this report was built (status 'running', {steps} steps so "
            f"far); it shows the {len(captured)} step(s) captured until then."
        )
    return (
        f"The run did not complete: status '{status}'{detail} after {steps} optimizer step(s). "
        f"This report shows the {len(captured)} step(s) captured before it stopped."
    )


def _ratio_sentence(med: float, q10: float, q90: float) -> str:
    if not np.isfinite(med):
        return "No gradient norms were recorded, so ‖g‖/‖θ‖ is unknown."
    if med < SMALL_RATIO:
        meaning = "≪ 1: X = θ − g is dominated by the weights θ, not by the gradient"
    elif med < 1:
        meaning = "below 1: θ contributes more to X than the gradient does"
    else:
        meaning = "at least 1: the gradient contributes as much to X as θ, or more"
    return (
        f"Typical ‖g‖/‖θ‖ (median over all tensors and captured steps) is {_fmt(med)} "
        f"(10–90% range {_fmt(q10)}–{_fmt(q90)}), {meaning}."
    )


def _kurtosis_sentence(first: StepVerdicts, last: StepVerdicts, captured: list[int]) -> str:
    start = (
        "the initialisation (step 0)" if captured[0] == 0 else f"step {captured[0]} (not the initialisation)"
    )
    return (
        f"At {start}, the median excess kurtosis of X (tensors tested on ≥ {MIN_RANKED_N} values) is "
        f"{_fmt(first.median_excess_kurtosis)} (a uniform, PyTorch's default Kaiming-uniform init, gives "
        f"{UNIFORM_EXCESS_KURTOSIS}; a normal gives 0); at step {last.step} it is "
        f"{_fmt(last.median_excess_kurtosis)}."
    )


def _stability_sentence(
    first: StepVerdicts, last: StepVerdicts, first_last: tuple[int, int, int], x_theta: tuple[int, int]
) -> str:
    """First vs last verdicts, and X vs θ only where θ was tested (no 'for 0 of 0')."""
    same_first_last, n_first_last, _ = first_last
    same_x_theta, n_x_theta = x_theta
    text = (
        f"The verdict at step {last.step} equals the verdict at step {first.step} for {same_first_last} of "
        f"{n_first_last} tensors"
    )
    if not n_x_theta:
        return text + "."
    return text + f", and X gets the same verdict as θ at step {last.step} for {same_x_theta} of {n_x_theta}."


def _inherited_sentence(first: StepVerdicts, last: StepVerdicts) -> str:
    shift = last.median_excess_kurtosis - first.median_excess_kurtosis
    detail = (
        f" Training does reshape θ (median excess kurtosis {_fmt(first.median_excess_kurtosis)} → "
        f"{_fmt(last.median_excess_kurtosis)}), but not enough to change most verdicts."
        if np.isfinite(shift) and abs(shift) >= KURTOSIS_SHIFT
        else " Its shape has barely changed over the captured steps."
    )
    return (
        "So the verdicts are largely inherited from the initialisation: X is mostly θ, and the tests "
        "judge θ's distribution, which started as the initial weights'." + detail
    )


def _stable_sentence(ratio: float, n_x_theta: int) -> str:
    if not n_x_theta:  # θ was not tested: say nothing about how X and θ compare
        return (
            f"The verdicts are mostly stable over training, but with ‖g‖/‖θ‖ = {_fmt(ratio)} and θ not "
            "tested on its own, stability alone does not show they are inherited from the initialisation."
        )
    return (
        f"The verdicts are mostly stable over training, but with ‖g‖/‖θ‖ = {_fmt(ratio)} or with X "
        "and θ judged differently, stability alone does not show they are inherited from the "
        "initialisation."
    )


def _changed_sentences(ratio: float, first_last: tuple[int, int, int], x_theta: tuple[int, int]) -> list[str]:
    same_first_last, n_first_last, changed_low_power = first_last
    same_x_theta, n_x_theta = x_theta
    changed = n_first_last - same_first_last
    low = (
        f" ({changed_low_power} of them tested on fewer than {MIN_RANKED_N} values)"
        if changed_low_power
        else ""
    )
    out = [
        f"The verdict changed between the first and last captured step for {changed} of {n_first_last} "
        f"tensors{low}, so the verdicts are not simply those of the initial weights."
    ]
    if np.isfinite(ratio) and ratio < SMALL_RATIO and n_x_theta and same_x_theta >= 0.75 * n_x_theta:
        out.append(
            f"X still follows θ (same verdict in {same_x_theta} of {n_x_theta}): what changed is the "
            "distribution of the weights themselves, not the gradient's share of X."
        )
    return out


def _inheritance_sentences(
    per_step: tuple[StepVerdicts, ...],
    captured: list[int],
    ratio: float,
    first_last: tuple[int, int, int],
    x_theta: tuple[int, int],
) -> list[str]:
    """Sentences on whether X's verdicts are those of the initial weights.

    ``first_last`` is (same verdict at first and last step, tensors compared,
    changed ones tested on few values); ``x_theta`` is (X and θ share the
    verdict at the last step, tensors compared; 0 compared when θ was not tested).
    """
    same_first_last, n_first_last, _ = first_last
    same_x_theta, n_x_theta = x_theta
    first, last = per_step[0], per_step[-1]
    out = [_kurtosis_sentence(first, last, captured)]
    if len(captured) < 2 or n_first_last == 0:
        return out
    out.append(_stability_sentence(first, last, first_last, x_theta))
    stable = same_first_last >= 0.75 * n_first_last
    inherited = (
        captured[0] == 0
        and np.isfinite(ratio)
        and ratio < SMALL_RATIO
        and stable
        and n_x_theta > 0
        and same_x_theta >= 0.75 * n_x_theta
    )
    if inherited:
        out.append(_inherited_sentence(first, last))
    elif stable:
        out.append(_stable_sentence(ratio, n_x_theta))
    else:
        out.extend(_changed_sentences(ratio, first_last, x_theta))
    return out
