"""The small interface every PDE problem implements.

A problem is a domain, a few conditions (a point set plus the residual that must vanish there,
as in PINA) and a reference solution. It knows nothing of networks, precisions or Lightning: the
PINN module evaluates the network on each condition's points, wraps the result in `Derivatives`
and asks the condition for its residual.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from mpsciml.contract import ModelKind
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.sampling import SAMPLING_METHODS, Box
from mpsciml.problems.transforms import OutputTransform, hard_constraint_conditions
from mpsciml.seeding import Seed, seed_stream

Residual = Callable[[Derivatives], Tensor | Mapping[str, Tensor]]
#: the residual of a data condition: derivatives and the observed values at the points
DataResidual = Callable[[Derivatives, Tensor], Tensor | Mapping[str, Tensor]]


@dataclass(frozen=True)
class Condition:
    """Points (float64, CPU) and the residual to drive to zero on them.

    A residual returns one tensor, or a mapping of equation name -> tensor when a condition holds
    several equations (the momentum and continuity equations of Navier-Stokes); each becomes its
    own loss term, named `<condition>_<equation>`.
    """

    points: Tensor
    residual: Residual | DataResidual
    #: observed output values at the points, (N, k) float64, for a data condition
    #: (`problems.observations`): they travel with their points through the batch (under
    #: `values_key(name)`, sliced with them under DDP) and reach the residual as its 2nd argument
    values: Tensor | None = None

    def evaluate(self, d: Derivatives, values: Tensor | None = None) -> Any:
        """The residual at `d`; a data condition's with the observed values at those points."""
        return self.residual(d) if self.values is None else self.residual(d, values)  # type: ignore[call-arg]


def values_key(condition: str) -> str:
    """The batch key of a data condition's observed values (next to its points' key)."""
    return f"{condition}/values"


@dataclass(frozen=True)
class EvaluationGrid:
    """A fixed tensor-product grid on which errors are measured and fields are plotted."""

    points: Tensor  # (prod(shape), dim), float64
    shape: tuple[int, ...]  # grid counts in input order, last input fastest
    axes: list[Tensor]  # 1-D coordinates per input
    # (prod(shape),) bool: the points in the domain when it is not a box (an L-shape); errors
    # are measured on those only and plots blank the rest. None: every point counts.
    mask: Tensor | None = None


def require_counts(**counts: Any) -> None:
    """Point and function counts must be integers > 0: 0 or -1 would otherwise fail deep inside
    torch ("negative dimension") and a float would be truncated without a word."""
    for key, value in counts.items():
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise ValueError(f"problem.{key}={value!r} is invalid: must be an integer > 0")


class Problem(ABC):
    """A PDE with its conditions and reference solution.

    Subclasses set `input_names`, `output_names` and `domain`, and implement `conditions` and
    `reference`. `sampling` chooses how collocation points are drawn (see `SAMPLING_METHODS`).
    """

    #: a PINN's network maps coordinates to fields (see mpsciml.contract)
    model_kind: ClassVar[ModelKind] = ModelKind.POINTWISE
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    domain: Box
    #: inputs the solution is periodic in, name -> period, and the condition standing for that
    #: periodicity, which a periodic network (`model.periodic`) makes exact (`problems.transforms`)
    periodic_inputs: ClassVar[Mapping[str, float]] = {}
    periodic_condition: ClassVar[str | None] = None

    def __init__(
        self,
        sampling: str = "sobol",
        evaluation_grid: tuple[int, ...] = (),
        hard_constraints: bool = False,
    ) -> None:
        if sampling not in SAMPLING_METHODS:
            raise ValueError(
                f"problem.sampling={sampling!r} is not a sampling method; allowed: "
                f"{', '.join(SAMPLING_METHODS)}"
            )
        self.sampling = sampling
        self._grid_counts = tuple(evaluation_grid)
        #: conditions met by construction, name -> why: they leave the loss (`training_conditions`)
        self.exact_conditions: dict[str, str] = {}
        self.hard_constraints = bool(hard_constraints)
        if self.hard_constraints:
            self.exact_conditions |= hard_constraint_conditions(self)

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    def model_sizes(self) -> dict[str, int]:
        """The sizes of a pointwise model (`contract.SIZES`): coordinates in, fields out."""
        return {"in_features": len(self.input_names), "out_features": len(self.output_names)}

    @abstractmethod
    def conditions(self, seed: Seed) -> dict[str, Condition]:
        """The conditions with their collocation points, drawn deterministically from `seed`
        (an int or a stream of `mpsciml.seeding`; give each condition its own stream,
        `seed_stream(seed, name)`). Called once per draw of points (`data.points`)."""

    @abstractmethod
    def reference(self, points: Tensor) -> Tensor:
        """The reference solution (exact or from our own solver) at float64 points, (N, outputs)."""

    def output_transform(self) -> OutputTransform | None:
        """A formula u = transform(x, N(x)) meeting some conditions exactly whatever the network
        N is, used with `problem.hard_constraints=true` (`problems.transforms`); None: none."""
        return None

    def training_conditions(self, seed: Seed) -> dict[str, Condition]:
        """`conditions` without those met by construction (hard constraints, periodic inputs)."""
        drawn = self.conditions(seed)
        return {name: c for name, c in drawn.items() if name not in self.exact_conditions}

    def evolution_conditions(
        self, seed: Seed, pde: Residual, boundary: Residual, initial: Residual
    ) -> dict[str, Condition]:
        """The conditions of an evolution equation with time the last input: `pde` inside,
        `boundary` on the faces of every space axis, `initial` on the face at the first time;
        `n_domain`, `n_boundary`, `n_initial` points, each condition from its own stream."""
        box, method, time = self.domain, self.sampling, len(self.input_names) - 1
        streams = {name: seed_stream(seed, name) for name in ("pde", "bc", "ic")}
        counts: Any = self  # the subclass holds the point counts
        return {
            "pde": Condition(box.interior(counts.n_domain, method, streams["pde"]), pde),
            "bc": Condition(
                box.faces(counts.n_boundary, method, streams["bc"], axes=list(range(time))),
                boundary,
            ),
            "ic": Condition(
                box.face(time, "low", counts.n_initial, method, streams["ic"]), initial
            ),
        }

    def evaluation_grid(self) -> EvaluationGrid:
        points, axes = self.domain.grid(self._grid_counts)
        return EvaluationGrid(points=points, shape=self._grid_counts, axes=axes)

    def fix_gauge(self, prediction: Tensor, grid: EvaluationGrid, reference: Tensor) -> Tensor:
        """The prediction on the evaluation grid with what the equations leave free (a pressure
        level no condition fixes) set as the reference's, so the error measures the rest; the
        prediction as it is unless a problem says otherwise (`ns_inverse`)."""
        return prediction
