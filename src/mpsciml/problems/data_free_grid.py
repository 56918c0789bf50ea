"""The interface of a data-free PDE problem on a grid (DiffNet, Botelho et al.): parameter field
-> solution field, trained on the discretised PDE residual alone, with no solution data.

Where a `GridOperatorProblem` hands out (input, output) pairs, a data-free problem hands out only
inputs, the PDE's parameter fields (Poisson: the diffusivity nu; Burgers: the initial condition),
and says how wrong an output is for them (`residual_terms`). The solver module (H2,
`modules/data_free_grid.py`) then trains

    outputs = problem.impose(inputs, model(problem.network_inputs(inputs)))
    term    = per_sample_term.sum() / problem.batch_size          (each of `term_names`)

and reports relative L2/H1 errors against `test_data()`: held-out fields solved by OUR reference
solver, never by the network.

Why the pieces are split this way:

* `parameter_fields(seed, step, slots)` is a pure function of (seed, step, slot): item `slot` of
  training step `step` is drawn from its own stream `seeding.seed_stream(seed,
  "parameter_fields", step, slot)`. Under DDP each rank asks only for its own slots (rank r of
  W: r, r + W, ...), and a resumed run asks again for step s; both get exactly the fields a
  1-process run drew, with no field ever generated and thrown away (`sample_parameters` draws
  one item from one stream; this class loops).
* `network_inputs` is what the network sees (log nu, centred): a conv net trains poorly on a
  positive field spanning a decade, while the residual needs nu itself.
* `impose` writes hard constraints (Dirichlet values on boundary nodes) into the raw output, so
  the loss never has to learn them and the reference comparison sees exactly imposed walls.
* `residual_terms` returns PER-SAMPLE terms (N,): the module divides the sum by the global
  `batch_size`, which makes each rank's loss its share of the full-batch loss (loss integrity,
  whatever the split). They are assembled in >= fp32 (`derivatives.autograd.assembly_dtype`,
  `stencils`), whatever the network's dtype: stencil second derivatives lose ~h^2 relative
  digits, which bf16/fp16 do not have at 64x64 (scripts/bench_stencil_precision.py).
* `test_data` solves held-out fields (stream `(data_seed, "test_fields", i)`, never a training
  stream) once per key through the dataset cache (`data.cache`), with a progress bar.

A subclass sets the names, `grid_layout`, `term_names`, `default_loss_weights`, and implements
`sample_parameters`, `residual_terms`, `solve_reference` and `reference_params` (what the cache
key needs beyond the grid and the fields' seed). Like every problem, it knows nothing of networks,
precisions or Lightning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import Tensor

from mpsciml.contract import ModelKind
from mpsciml.data.cache import cached
from mpsciml.derivatives.autograd import assembly_dtype
from mpsciml.grid_metrics import GRID_LAYOUTS, grid_coordinates, grid_spacing
from mpsciml.problems.base import require_counts
from mpsciml.problems.grid_operator import GridData, GridFields
from mpsciml.problems.operator import as_tensor
from mpsciml.seeding import int_seed, numpy_generator

T = TypeVar("T")

#: the fewest grid points per dimension: a second difference with a one-sided end needs 4, and
#: anything below 5 nodes has no interior worth a network
MIN_GRID_POINTS = 5


def parse_grid(grid: int | Sequence[int], dims: int, key: str = "problem.grid") -> tuple[int, ...]:
    """`grid` (an int for every dimension, or one int per dimension) as a tuple of `dims` ints
    >= MIN_GRID_POINTS, or one line naming the key."""
    sizes = [grid] * dims if isinstance(grid, int) and not isinstance(grid, bool) else grid
    try:
        sizes = list(sizes)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{key}={grid!r} must be an integer or a list of {dims}") from None
    if len(sizes) != dims or not all(
        isinstance(n, int | np.integer) and not isinstance(n, bool) for n in sizes
    ):
        raise ValueError(f"{key}={grid!r} must be an integer or a list of {dims} integers")
    if min(sizes) < MIN_GRID_POINTS:
        raise ValueError(
            f"{key}={grid!r} is too small: need >= {MIN_GRID_POINTS} points per dimension"
        )
    return tuple(int(n) for n in sizes)


class DataFreeGridProblem(GridFields, ABC):
    """A PDE on a grid whose network maps parameter fields to solution fields, trained on the
    residual alone. See the module docstring for the contract of each method."""

    #: grid fields -> grid fields, like the FNO's problems (the same models fit)
    model_kind: ClassVar[ModelKind] = ModelKind.GRID_OPERATOR
    #: the factory picks the data-free solver module for it
    data_free: ClassVar[bool] = True
    #: bump whenever the reference solver's numbers change (the test set's cache key)
    reference_version: ClassVar[int] = 1
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    coordinate_names: tuple[str, ...]
    #: one of grid_metrics.GRID_LAYOUTS (where the samples sit in each dimension)
    grid_layout: str
    term_names: ClassVar[tuple[str, ...]]
    default_loss_weights: ClassVar[dict[str, float]]

    def __init__(
        self,
        grid: int | Sequence[int] = 64,
        batch_size: int = 8,
        n_test: int = 16,
        data_seed: int = 0,
    ) -> None:
        require_counts(batch_size=batch_size, n_test=n_test)
        if self.grid_layout not in GRID_LAYOUTS:
            raise ValueError(f"grid_layout={self.grid_layout!r}; allowed: {GRID_LAYOUTS}")
        if isinstance(data_seed, bool) or not isinstance(data_seed, int) or data_seed < 0:
            raise ValueError(f"problem.data_seed={data_seed!r} must be an integer >= 0")
        self.grid = parse_grid(grid, len(self.coordinate_names))
        self.batch_size, self.n_test, self.data_seed = batch_size, n_test, data_seed
        self._read: dict[tuple[object, ...], object] = {}

    # --------------------------------------------------------- subclass API
    @abstractmethod
    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        """One parameter field (C_in, *self.grid), float64, drawn from `rng` alone (so an item
        is a function of its stream, whatever else is drawn in the same batch)."""

    @abstractmethod
    def residual_terms(self, inputs: Tensor, outputs: Tensor) -> dict[str, Tensor]:
        """{term: (N,)} per-sample terms (one per `term_names`) for parameter fields `inputs`
        (N, C_in, *grid) and imposed outputs (N, C_out, *grid), in `assembly_dtype(outputs)`,
        differentiable w.r.t. `outputs`."""

    @abstractmethod
    def solve_reference(self, inputs: np.ndarray, progress: bool = True) -> np.ndarray:
        """Our solver's solution (N, C_out, *grid) float64 for parameter fields (N, C_in, *grid)
        on the training grid; shows a progress bar if asked."""

    @abstractmethod
    def reference_params(self) -> dict[str, Any]:
        """Every option the parameter fields and the reference depend on, beyond the grid, the
        test count and the seed (part of the test set's cache key)."""

    # ------------------------------------------------------------ training
    def model_sizes(self) -> dict[str, Any]:
        """The sizes of an operator-on-grids model (`contract.SIZES`)."""
        return self.grid_model_sizes(self.grid)

    def parameter_fields(self, seed: int, step: int, slots: Tensor) -> Tensor:
        """(len(slots), C_in, *grid) float64 CPU: items `slots` of training step `step`, each
        from the stream (seed, "parameter_fields", step, slot): a pure function of the three."""
        slot_list = self._slot_list(slots)
        fields = [
            self._checked(
                self.sample_parameters(numpy_generator(seed, "parameter_fields", step, s))
            )
            for s in slot_list
        ]
        if not fields:
            return torch.empty((0, len(self.input_names), *self.grid), dtype=torch.float64)
        return as_tensor(np.stack(fields))

    def network_inputs(self, inputs: Tensor) -> Tensor:
        """What the network sees of the parameter fields; the fields themselves by default."""
        return inputs

    def impose(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        """The raw network output with the hard constraints written in; unchanged by default."""
        return outputs

    def weighted_loss(
        self, terms: Mapping[str, Tensor], weights: Mapping[str, float] | None = None
    ) -> Tensor:
        """sum_term weight * term.sum() / batch_size: the loss of these items as their share of
        the global batch (for tests and tools; the module applies its own resolved weights)."""
        weights = {**self.default_loss_weights, **(weights or {})}
        return sum(weights.get(k, 1.0) * v.sum() / self.batch_size for k, v in terms.items())

    # ---------------------------------------------------------------- data
    def test_fields(self, n: int | None = None) -> np.ndarray:
        """(n, C_in, *grid) held-out parameter fields: item i from (data_seed, "test_fields", i),
        a stream no training step ever uses."""
        n = self.n_test if n is None else n
        return np.stack(
            [
                self._checked(
                    self.sample_parameters(numpy_generator(self.data_seed, "test_fields", i))
                )
                for i in range(n)
            ]
        )

    def test_data(self) -> GridData:
        """The held-out fields and our solver's solutions, built once per key (cached on disk)."""
        return self.read_once(("test", self.n_test), self._cached_test_data)

    def _cached_test_data(self) -> GridData:
        key = {
            "grid": list(self.grid),
            "n": self.n_test,
            "seed": int_seed(self.data_seed, "test_fields"),
            "version": self.reference_version,
            **self.reference_params(),
        }

        def build() -> dict[str, np.ndarray]:
            inputs = self.test_fields()
            return {"inputs": inputs, "outputs": self.solve_reference(inputs, progress=True)}

        arrays = cached(f"{self.name}_test", key, build)
        return GridData(as_tensor(arrays["inputs"]), as_tensor(arrays["outputs"]))

    def read_once(self, key: tuple[object, ...], read: Callable[[], T]) -> T:
        """`read()` the first time `key` is asked for, the same object after."""
        if key not in self._read:
            self._read[key] = read()
        return self._read[key]  # type: ignore[return-value]

    # ---------------------------------------------------------------- grid
    def domain_lengths(self) -> tuple[float, ...]:
        """The physical length of each dimension (the unit box by default)."""
        return (1.0,) * self.spatial_dims

    def spacings(self, grid: tuple[int, ...] | None = None) -> tuple[float, ...]:
        """The physical distance between neighbouring points along each dimension."""
        grid = self.grid if grid is None else grid
        return tuple(
            length * grid_spacing(n, self.grid_layout)
            for n, length in zip(grid, self.domain_lengths(), strict=True)
        )

    def coordinates(self, grid: tuple[int, ...]) -> list[Tensor]:
        """The 1-D physical coordinates of each dimension of `grid`, for plots."""
        return [
            grid_coordinates(n, self.grid_layout) * length
            for n, length in zip(grid, self.domain_lengths(), strict=True)
        ]

    # ------------------------------------------------------------- helpers
    def assembled(self, *tensors: Tensor) -> tuple[Tensor, ...]:
        """The tensors cast to the assembly dtype of the first (>= fp32, fp64 for fp64): every
        residual is formed there, whatever precision the network ran in."""
        dtype = assembly_dtype(tensors[0])
        return tuple(t.to(dtype) for t in tensors)

    def check_fields(self, inputs: Tensor, outputs: Tensor) -> None:
        """Shapes (N, C_in, *grid) and (N, C_out, *grid) on one grid, or one line saying not."""
        c_in, c_out = len(self.input_names), len(self.output_names)
        if (
            inputs.dim() != 2 + self.spatial_dims
            or inputs.shape[1] != c_in
            or outputs.shape != (inputs.shape[0], c_out, *inputs.shape[2:])
        ):
            raise ValueError(
                f"{self.name}: need inputs (N, {c_in}, *grid) and outputs (N, {c_out}, *grid); "
                f"got {tuple(inputs.shape)} and {tuple(outputs.shape)}"
            )

    def _checked(self, field: np.ndarray) -> np.ndarray:
        expected = (len(self.input_names), *self.grid)
        if field.shape != expected:
            raise RuntimeError(f"{self.name}.sample_parameters gave {field.shape}, not {expected}")
        return np.asarray(field, dtype=np.float64)

    @staticmethod
    def _slot_list(slots: Tensor | Sequence[int]) -> list[int]:
        values = torch.as_tensor(slots)
        if values.dim() != 1 or values.is_floating_point() or values.is_complex():
            raise ValueError(f"slots must be a 1-D integer tensor, got {values}")
        out = [int(s) for s in values.tolist()]
        if any(s < 0 for s in out):
            raise ValueError(f"slots must be >= 0, got {out}")
        return out
