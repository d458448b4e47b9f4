"""What the report reads from a run: only the needed subsamples, and optional analysis tables."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from goup_probe import schema
from goup_probe.order import in_model_order, model_order_permutation
from goup_probe.ou import validate_ou
from goup_probe.store import Run, RunDirectoryError, read_table, table_columns
from goup_probe.store.columns import TableColumns, columns_to_frame, fits_column_reads

SAMPLE_QUANTITIES = (schema.THETA_MINUS_GRAD, schema.THETA, schema.GRAD)
"""Quantities whose stored subsamples the per-layer figures draw."""


def load_samples(run: Run, params: Sequence[str], steps: Sequence[int]) -> pd.DataFrame:
    """Stored subsamples of X, θ and g for some tensors and steps, without reading the whole table.

    Reads ``samples`` through :func:`goup_probe.store.read_table` with a row
    filter on the ``(step, param, quantity)`` drawn pushed into the Parquet
    reader (the row groups of other steps, which the parts hold in step order,
    are skipped on their statistics), so a run with hundreds of tensors ×
    thousands of steps costs only the rows drawn. Uses
    the already-loaded ``run.samples`` when it is in memory. Damaged parts
    follow ``run.on_error`` as in :meth:`Run.table`.

    Parameters
    ----------
    run : Run
        The loaded run.
    params, steps : sequence
        Tensors and captured steps wanted.

    Returns
    -------
    DataFrame
        Columns of :data:`goup_probe.schema.SAMPLES_SCHEMA`.
    """
    params, steps = [str(p) for p in params], [int(s) for s in steps]
    if run.is_read("samples"):
        s = run.samples
        return s[s["param"].isin(params) & s["step"].isin(steps) & s["quantity"].isin(SAMPLE_QUANTITIES)]
    if not params or not steps:
        return schema.SAMPLES_SCHEMA.empty_table().to_pandas()
    filters = [("param", "in", params), ("step", "in", steps), ("quantity", "in", list(SAMPLE_QUANTITIES))]
    return read_table(run.path, "samples", filters=filters, on_error=run.on_error, skipped=run.skipped_files)


UNDRAWN_STATS_COLUMNS = (
    "global_step",
    "nonfinite",
    "min",
    "max",
    "param_norm",
    "grad_norm",
    "skew_se_null",
    "kurtosis_se_null",
    "lilliefors_p_floor",
    "shapiro_w",
    "anderson_a2",
    "anderson_p",
    "dagostino_p",
    "jarque_bera_p",
    "shapiro_francia_p",
)
"""Columns of ``stats`` that no built-in section reads: the report leaves them on disk.

Every other column is read, a user statistic's included (a custom section may draw it).
"""


def load_stats(run: Run) -> pd.DataFrame:
    """The ``stats`` table as the report reads it: all but :data:`UNDRAWN_STATS_COLUMNS`, in model order.

    Only those columns are decoded (listed from the parts' footers), a column at
    a time (:class:`goup_probe.store.columns.TableColumns`): each is put in model
    order (:func:`goup_probe.order.in_model_order`) while still in Arrow and
    converted to pandas before the next is read, so the peak is the DataFrame
    and one column (a 328 000-row table: 165 MB; reading it whole, then
    reordering and converting it, peaked 280 MB above the floor). A table of
    more than :data:`~goup_probe.store.columns.MAX_OPEN_PARTS` parts (a run not
    yet compacted) is read whole, a part at a time. Uses the already-loaded
    ``run.stats`` when it is in memory.

    Parameters
    ----------
    run : Run
        The loaded run.

    Returns
    -------
    DataFrame
        Rows as in ``run.stats``, stably sorted into model order.
    """
    if run.is_read("stats"):
        return in_model_order(run.stats, run.meta)
    undrawn = set(UNDRAWN_STATS_COLUMNS)
    columns = [c for c in table_columns(run.path, "stats") if c not in undrawn]
    if not columns:  # absent: typed, empty
        return run.table("stats")
    if not fits_column_reads(run.path, "stats"):  # a run not compacted: read whole, a part at a time
        return _whole_in_model_order(run, columns)
    frame = _read_in_model_order(run, columns)
    return run.table("stats", columns=columns) if frame is None else frame


def _read_in_model_order(run: Run, columns: list[str]) -> pd.DataFrame | None:
    """``columns`` of ``stats`` in model order, read and converted one at a time; None if it has no rows."""
    skipped: list[str] = []  # the run's list takes them only from the read whose rows are returned
    try:
        with TableColumns(run.path, "stats", on_error=run.on_error, skipped=skipped) as parts:
            frame = _model_ordered(parts, columns, run.meta)
    except RunDirectoryError:
        if run.on_error != "skip":
            raise
        # A part that opened but failed mid-read: the whole read skips it (a warning, skipped_files).
        return _whole_in_model_order(run, columns)
    run.skipped_files.extend(skipped)
    return frame


def _model_ordered(parts: TableColumns, columns: list[str], meta: dict) -> pd.DataFrame | None:
    """``columns`` of the open parts, each taken into model order and converted before the next is read."""
    params = parts.column("param")
    if params is None or len(params) == 0:
        return None
    positions = model_order_permutation(params.to_pandas(), meta)
    del params
    # each column taken into model order inside the call, so no name here holds the untaken one
    taken = ((name, _taken(parts, name, positions)) for name in columns)
    return columns_to_frame((name, column) for name, column in taken if column is not None)


def _whole_in_model_order(run: Run, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``stats`` read whole, in model order, indexed 0…n−1 as the column-wise read."""
    return in_model_order(run.table("stats", columns=columns), run.meta).reset_index(drop=True)


def _taken(parts: TableColumns, name: str, positions: np.ndarray) -> pa.ChunkedArray | None:
    column = parts.column(name)
    return None if column is None else column.take(positions)


@dataclass(frozen=True)
class OptionalTable:
    """An optional analysis table for the report, or the reason it is absent."""

    frame: pd.DataFrame | None
    note: str
    source: str = ""

    @property
    def present(self) -> bool:
        """Whether there is something to show."""
        return self.frame is not None and not self.frame.empty


def _stored(run: Run, names: Sequence[str]) -> tuple[str, pd.DataFrame] | None:
    present = set(run.tables)
    for name in names:
        if name in present:
            frame = run.table(name)
            if not frame.empty:
                return name, frame
    return None


OU_TABLES = ("ou", "ou_validation", "ou_layers")
"""Table names under which an OU validation may be stored in a run directory."""


def load_ou(run: Run) -> OptionalTable:
    """The per-tensor OU validation: a stored table, else computed from the tracer trajectories.

    Returns an :class:`OptionalTable` whose ``note`` says why it is absent: no tracer
    trajectories were recorded, or the analysis failed (the error message is
    kept; the report is still written).
    """
    stored = _stored(run, OU_TABLES)
    if stored is not None:
        return OptionalTable(in_model_order(stored[1], run.meta), "", f"table '{stored[0]}' of the run")
    if "trajectories" not in run.tables:
        return OptionalTable(
            None, "This run recorded no tracer trajectories (tracers=0), so the OU model cannot be checked."
        )
    try:
        frame = validate_ou(run)
    except Exception as exc:  # an analysis bug must not cost the user the whole report
        return OptionalTable(None, f"The OU analysis failed on this run: {type(exc).__name__}: {exc}")
    if frame.empty:
        return OptionalTable(None, "The OU analysis returned no rows for this run.")
    return OptionalTable(in_model_order(frame, run.meta), "", "goup_probe.ou.validate_ou(run)")


def _schema_name(attr: str, default: str) -> str:
    return str(getattr(schema, attr, default))


def load_fidelity(run: Run) -> dict[str, OptionalTable]:
    """Tables written by a GO-UP comparison (curves, per-layer distances, summary), when present.

    Returns
    -------
    dict
        ``"curves"``, ``"layers"`` and ``"summary"`` entries; each an :class:`OptionalTable`.
    """
    names = {
        "curves": (_schema_name("COMPARE_CURVES", "compare_curves"), "fidelity_curves", "curves"),
        "layers": (_schema_name("COMPARE_LAYERS", "compare_layers"), "fidelity_layers"),
        "summary": (_schema_name("COMPARE_SUMMARY", "compare_summary"), "fidelity_summary"),
    }
    out = {}
    for key, candidates in names.items():
        stored = _stored(run, candidates)
        if stored is None:
            out[key] = OptionalTable(None, f"no {key} table")
        else:
            out[key] = OptionalTable(stored[1], "", f"table '{stored[0]}' of the run")
    return out
