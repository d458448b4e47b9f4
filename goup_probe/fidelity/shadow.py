"""Shadow (one-step) fidelity of a probed run: GO-UP's would-be update beside the actual one.

The probe writes, on every captured ``update`` row of the stats table,
``noise_to_signal`` (σ√N/‖g‖), ``goup_cosine`` (cos(Δθ, −αg)) and ``goup_fit_p``
(the p-value of the update being a draw from GO-UP's update distribution,
:func:`goup_probe.capture.shadow.goup_fit`). This module only summarises those
columns per parameter tensor; a run written before ``goup_fit_p`` existed reads
it as NaN.
"""

from __future__ import annotations

import pandas as pd

from goup_probe import schema
from goup_probe.store import Run

SHADOW_COLUMNS = ("noise_to_signal", "goup_cosine", "goup_fit_p")
FIT_LEVEL = 0.05
"""Level at which :func:`shadow_summary` counts a rejected ``goup_fit_p``."""


def shadow_summary(run: Run | pd.DataFrame) -> pd.DataFrame:
    """Per parameter tensor: median, first and last value of the shadow-fidelity columns.

    Parameters
    ----------
    run : Run or DataFrame
        A probed run (or its ``stats`` table) captured with an optimizer.

    Returns
    -------
    DataFrame
        ``param``, ``steps`` (captured update rows with a finite noise-to-signal),
        then ``<column>_median``, ``<column>_first`` and ``<column>_last`` for
        each of :data:`SHADOW_COLUMNS`, and ``goup_fit_rejected``: the share of
        rows with ``goup_fit_p`` below :data:`FIT_LEVEL` (about 0.05 when the
        optimizer is GO-UP; NaN without a finite p). Empty when the run holds no update rows.
    """
    stats = run.stats if isinstance(run, Run) else run
    columns = ["param", "steps"] + [f"{c}_{k}" for c in SHADOW_COLUMNS for k in ("median", "first", "last")]
    columns.append("goup_fit_rejected")
    rows = stats[(stats["quantity"] == schema.UPDATE) & stats["noise_to_signal"].notna()]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    out = []
    for param, sub in rows.sort_values("step", kind="stable").groupby("param", sort=False):
        entry = {"param": param, "steps": len(sub)}
        for column in SHADOW_COLUMNS:
            values = (
                sub[column].astype(float) if column in sub.columns else pd.Series(float("nan"), sub.index)
            )
            entry[f"{column}_median"] = float(values.median())
            entry[f"{column}_first"] = float(values.iloc[0])
            entry[f"{column}_last"] = float(values.iloc[-1])
        p = (
            sub["goup_fit_p"].astype(float).dropna()
            if "goup_fit_p" in sub.columns
            else pd.Series(dtype=float)
        )
        entry["goup_fit_rejected"] = float((p < FIT_LEVEL).mean()) if len(p) else float("nan")
        out.append(entry)
    return pd.DataFrame(out, columns=columns)
