"""Model order: parameter tensors listed as ``model.named_parameters()`` lists them.

The probe writes ``stats`` rows in the order it reduces tensors (tensors of one
size are stacked into groups), which is not the model's order. Every per-tensor
table and figure lists tensors in model order instead, as recorded in
``run.json`` (``model.tensors``); this module is the one place that knows it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def recorded_order(meta: Mapping[str, Any] | None) -> list[str]:
    """Parameter names in model order as ``run.json`` records them (empty when it does not)."""
    tensors = ((meta or {}).get("model") or {}).get("tensors") or []
    return [str(t["name"]) for t in tensors if isinstance(t, Mapping) and "name" in t]


def model_order(names: Iterable[str], meta: Mapping[str, Any] | None) -> list[str]:
    """Distinct ``names`` in model order; names ``run.json`` does not list follow, as first seen.

    Parameters
    ----------
    names : iterable of str
        Parameter names, in any order, possibly repeated.
    meta : mapping, optional
        The run's ``run.json`` (``run.meta``).

    Returns
    -------
    list of str

    Examples
    --------
    >>> meta = {"model": {"tensors": [{"name": "a.w"}, {"name": "a.b"}, {"name": "b.w"}]}}
    >>> model_order(["b.w", "a.b", "x", "a.w", "b.w"], meta)
    ['a.w', 'a.b', 'b.w', 'x']
    """
    seen = list(dict.fromkeys(str(n) for n in names))
    rank = {name: i for i, name in enumerate(recorded_order(meta))}
    unknown = len(rank)
    return sorted(seen, key=lambda n: rank.get(n, unknown))  # stable: unknown names keep their order


def model_order_permutation(
    names: pd.Series | Sequence[object], meta: Mapping[str, Any] | None
) -> np.ndarray:
    """Row positions that stably sort ``names`` into model order (see :func:`in_model_order`).

    Parameters
    ----------
    names : Series or sequence
        One tensor name per row (repeated; a missing name sorts as its ``str``).
    meta : mapping, optional
        The run's ``run.json``.

    Returns
    -------
    ndarray of int64
        ``take`` these positions to reorder the rows.
    """
    codes, distinct = pd.factorize(pd.Series(names, dtype=object), use_na_sentinel=False)
    labels = [str(n) for n in distinct]
    rank = {name: i for i, name in enumerate(model_order(labels, meta))}
    by_code = np.array([rank[label] for label in labels], dtype=np.int64)
    return np.argsort(by_code[codes], kind="stable")


def in_model_order(
    frame: pd.DataFrame, meta: Mapping[str, Any] | None, column: str = "param"
) -> pd.DataFrame:
    """``frame``'s rows stably sorted so that ``column`` follows model order (other order kept).

    Rows of one tensor keep their relative order (steps stay sorted as they
    were), so "order of first appearance" of the result is model order: what
    :func:`goup_probe.plots.param_order` and the plots built on it then show.

    Parameters
    ----------
    frame : DataFrame
        A per-tensor table (``stats``, an OU table, a summary).
    meta : mapping, optional
        The run's ``run.json``.
    column : str
        Column with the parameter names.

    Returns
    -------
    DataFrame
        The same rows (index kept), reordered; ``frame`` itself when it has no such column.
    """
    if frame.empty or column not in frame.columns:
        return frame
    return frame.iloc[model_order_permutation(frame[column], meta)]
