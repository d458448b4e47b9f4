"""Quantities: what the probe records per parameter tensor, each declared once.

A :class:`Quantity` names a tensor-valued function of what the capture core
hands it at one capture point (:class:`QuantityInputs`): θ and g before the
optimizer step, θ after it, the optimizer's state for the tensor, the learning
rate, or one micro-batch's gradient contribution during backward. Every
quantity is reduced on the device to moments plus the seeded subsample,
optionally tested, stored and reported the same way, whichever strategy
(local, grouped, sharded) reduces its tensor.

The four built-ins are declared here too. The strategies reduce them with fused
kernels (θ, g and X in one pass; the update with Σ Δ·g in another); their
``fn`` states what those kernels compute and serves the generic path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from goup_probe import schema
from goup_probe.schedule import Schedule

PHASE_BEFORE = "before"
"""At the step's capture point, with the final gradient (before ``optimizer.step``)."""
PHASE_AFTER = "after"
"""After the optimizer step: θ before and after are both available."""
PHASE_BACKWARD = "backward"
"""During backward, once per micro-batch: ``grad`` is that micro-batch's contribution."""
PHASES = (PHASE_BEFORE, PHASE_AFTER, PHASE_BACKWARD)

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class QuantityInputs:
    """What the capture core hands a quantity's ``fn`` for one tensor.

    Tensors are flat (1-D, logical row-major order) and detached; under FSDP2
    they are the calling rank's local shard.
    """

    name: str
    """Qualified parameter name."""
    theta: torch.Tensor
    """θ at the capture point (θ_{t+1} in the after phase)."""
    grad: torch.Tensor | None
    """The gradient the optimizer uses (one micro-batch's contribution in the backward phase)."""
    lr: float
    """Learning rate of the tensor's param group (NaN when unknown)."""
    state: Mapping[str, Any] = field(default_factory=dict)
    """``optimizer.state[param]`` (empty without an optimizer)."""
    theta_before: torch.Tensor | None = None
    """θ_t, in the after phase only."""
    micro_batch: int | None = None
    """Index of the micro-batch within the step, in the backward phase only."""


@dataclass(frozen=True)
class Quantity:
    """A per-tensor quantity the probe records.

    Parameters
    ----------
    name : str
        Identifier stored in the ``quantity`` column (letters, digits, ``_``).
    fn : callable
        ``QuantityInputs -> Tensor`` with one value per element of the parameter
        (any shape; it is flattened). Called on the device, without gradients.
    phase : {"before", "after", "backward"}
        The capture point it needs (see :data:`PHASES`).
    needs_grad : bool
        Whether it uses ``inputs.grad``; without a gradient the row records
        status ``no_grad`` instead of calling ``fn``.
    schedule : callable, optional
        ``step -> bool``, its own schedule; default: the probe's.
    elementwise : bool
        Whether ``fn`` acts coordinate by coordinate, so it can be computed on
        each rank's shard of a sharded (FSDP2) tensor. A quantity that is not is
        refused on sharded tensors.
    tested : bool
        Run the test battery on it (as if named in ``tested=``).
    description : str
        One line for the glossary and ``run.json``.

    Examples
    --------
    >>> import torch, goup_probe as gp
    >>> sign = gp.Quantity("sign_grad", lambda i: torch.sign(i.grad), description="sign(g)")
    >>> sign.phase
    'before'
    """

    name: str
    fn: Callable[[QuantityInputs], torch.Tensor]
    phase: str = PHASE_BEFORE
    needs_grad: bool = True
    schedule: Schedule | None = None
    elementwise: bool = True
    tested: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"Quantity name must be an identifier, got {self.name!r}")
        if not callable(self.fn):
            raise TypeError(f"Quantity {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if self.phase not in PHASES:
            raise ValueError(f"Quantity {self.name!r}: phase must be one of {PHASES}, got {self.phase!r}")
        if self.schedule is not None and not callable(self.schedule):
            raise TypeError(f"Quantity {self.name!r}: schedule must be callable step -> bool")
        if self.phase == PHASE_BACKWARD and not self.needs_grad:
            raise ValueError(f"Quantity {self.name!r}: a backward-phase quantity needs the gradient")

    @property
    def builtin(self) -> bool:
        """Whether this is one of the built-ins (the fused four, or an opt-in one such as ``grad_noise``)."""
        return BUILTINS.get(self.name) is self or OPT_IN.get(self.name) is self

    def compute(self, inputs: QuantityInputs) -> torch.Tensor:
        """``fn(inputs)`` as a flat tensor with one value per element of θ.

        Raises
        ------
        ValueError
            When ``fn`` returns a tensor of another size.
        """
        with torch.no_grad():
            values = self.fn(inputs)
        if not isinstance(values, torch.Tensor):
            raise TypeError(f"quantity {self.name!r} returned {type(values).__name__}, not a Tensor")
        flat = values.detach().reshape(-1)
        if flat.numel() != inputs.theta.numel():
            raise ValueError(
                f"quantity {self.name!r} returned {flat.numel()} values for a tensor of "
                f"{inputs.theta.numel()} elements"
            )
        return flat


def _theta_minus_grad(i: QuantityInputs) -> torch.Tensor:
    return i.theta - i.grad


def _update(i: QuantityInputs) -> torch.Tensor:
    return i.theta - i.theta_before


THETA_MINUS_GRAD = Quantity(
    schema.THETA_MINUS_GRAD, _theta_minus_grad, description="X = θ − g, the seed's quantity"
)
THETA = Quantity(schema.THETA, lambda i: i.theta, needs_grad=False, description="θ, the parameter")
GRAD = Quantity(schema.GRAD, lambda i: i.grad, description="g, the gradient the optimizer uses")
UPDATE = Quantity(
    schema.UPDATE,
    _update,
    phase=PHASE_AFTER,
    needs_grad=False,
    description="Δθ = θ_{t+1} − θ_t, the update the optimizer applied",
)
BUILTINS: dict[str, Quantity] = {q.name: q for q in (THETA_MINUS_GRAD, THETA, GRAD, UPDATE)}
"""The built-in quantities by name, in the order of :data:`goup_probe.schema.QUANTITIES`."""
GRAD_NOISE = Quantity(
    schema.GRAD_NOISE,
    lambda i: i.grad,
    phase=PHASE_BACKWARD,
    tested=True,
    description=(
        "ξ_i = g_i − mean_j g_j, micro-batch i's gradient noise (g_i = k × its contribution), "
        "at steps that accumulate k >= 2 micro-batches"
    ),
)
"""The opt-in built-in ``quantities=[..., "grad_noise"]``: the in-run mini-batch gradient noise.

Its ``fn`` is never called: :class:`goup_probe.capture.backward.MicroBatchCapture` keeps each
micro-batch's contribution c_i of a captured step and, when the step ends, records one row per
micro-batch of ξ_i = k·c_i − Σ_j c_j (plus a ``noise`` table row per tensor). Memory: k
gradient-sized buffers per tensor during a captured step (k − 1 more than other backward-phase
quantities); off unless named."""
OPT_IN: dict[str, Quantity] = {GRAD_NOISE.name: GRAD_NOISE}
"""Built-in quantities recorded only when named in ``quantities=`` (never by default)."""
COMPONENTS = (schema.THETA_MINUS_GRAD, schema.THETA, schema.GRAD)
"""The built-ins reduced together before the step."""
FUSED = frozenset((*COMPONENTS, schema.UPDATE))
"""Quantities the strategies reduce with fused kernels; every other declared quantity (a user's,
or a built-in added to :data:`BUILTINS`) takes the generic path: ``fn``, then one reduction."""


def resolve_quantities(items: Iterable[str | Quantity]) -> tuple[Quantity, ...]:
    """Turn ``quantities=`` (built-in names and :class:`Quantity` objects) into Quantity objects.

    Built-ins come first, in their fixed order, then the opt-in built-ins named
    (:data:`OPT_IN`), then user quantities in the order given.

    Raises
    ------
    ValueError
        On an unknown name, a duplicate name, a user quantity named like a
        built-in, or an empty selection.
    """
    items = list(items) if not isinstance(items, str | Quantity) else [items]
    builtin, custom, seen = set(), [], set()
    for item in items:
        known = {**BUILTINS, **OPT_IN}
        if isinstance(item, str):
            if item not in known:
                raise ValueError(
                    f"quantities: unknown quantity {item!r}; built-ins are {(*schema.QUANTITIES, *OPT_IN)}, "
                    "or pass a goup_probe.Quantity"
                )
            name = item
            builtin.add(name)
        elif isinstance(item, Quantity):
            name = item.name
            if name in known and item is not known[name]:
                raise ValueError(f"quantities: {name!r} is a built-in quantity; give yours another name")
            (builtin.add(name) if name in known else custom.append(item))
        else:
            raise TypeError(f"quantities: expected names or goup_probe.Quantity, got {type(item).__name__}")
        if name in seen:
            raise ValueError(f"quantities: {name!r} is given twice")
        seen.add(name)
    if not seen:
        raise ValueError(f"quantities must be a non-empty subset of {schema.QUANTITIES} or Quantity objects")
    fixed = tuple(BUILTINS[n] for n in schema.QUANTITIES if n in builtin)
    return fixed + tuple(q for n, q in OPT_IN.items() if n in builtin) + tuple(custom)


def describe(quantities: Iterable[Quantity]) -> list[dict[str, Any]]:
    """JSON-ready declaration of the quantities, for ``run.json``."""
    return [
        {
            "name": q.name,
            "phase": q.phase,
            "builtin": q.builtin,
            "description": q.description,
            "schedule": None if q.schedule is None else repr(q.schedule),
        }
        for q in quantities
    ]
