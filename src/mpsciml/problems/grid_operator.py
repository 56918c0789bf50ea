"""The interface of an operator-learning problem on grids (the FNO's kind): fields to fields.

Where a DeepONet problem gives sensor values and query points, a grid problem gives whole fields
sampled on a regular grid of the unit box: input (N, C_in, *grid) -> output (N, C_out, *grid)
(Darcy: coefficient -> pressure; Burgers: u(., 0) -> u(., 1); Navier-Stokes: vorticity at t0 ->
later). Three datasets, each read once per process (the module and the DataModule both ask):

  * train and test at the training resolution `resolution` (`n_train`, `n_test` samples);
  * zero-shot: `n_zero_shot` samples at the finer `zero_shot_resolution`, where a
    resolution-invariant operator is evaluated without having been trained there (None: none).

By default the samples come from the problem's own seeded generator (`generate`), each split
from its own stream (`operator.dataset_seed(data_seed, "train" | "test" | "zero_shot")`). With
`data_path` they come from the user's file instead (`data.grid_files`): the first `n_train`
samples train, and the test set is `test_data_path` (its first `n_test` samples) or, without
one, the `n_test` samples after the training ones; `zero_shot_data_path` likewise (else no
zero-shot evaluation: our generator's fields would be another distribution than the user's).

`grid_layout` says where the samples sit in the unit box (`grid_metrics.GRID_LAYOUTS`:
periodic, nodes on the walls, or cell centres), which the norms and derivatives follow. Like
every problem, it knows nothing of networks, precisions or Lightning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor

from mpsciml.contract import ModelKind
from mpsciml.data.grid_files import read_grid_file
from mpsciml.grid_metrics import GRID_LOSSES, grid_coordinates
from mpsciml.problems.base import require_counts
from mpsciml.problems.operator import dataset_seed

T = TypeVar("T")

#: the datasets of a grid problem, also the names of their random streams
SPLITS = ("train", "test", "zero_shot")


def generator_params(params_class: type, generator: Mapping[str, Any] | None) -> Any:
    """`problem.generator` as the generator's frozen dataclass; an unknown key or a bad value is
    one line naming `problem.generator.<key>`."""
    given = dict(generator or {})
    allowed = [field.name for field in fields(params_class)]
    unknown = [key for key in given if key not in allowed]
    if unknown:
        raise ValueError(
            f"problem.generator.{unknown[0]} is unknown; allowed: {', '.join(allowed)}"
        )
    try:
        return params_class(**given)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"problem.generator: {exc}") from None


def channel_statistics(fields: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of each channel of (N, C, *grid) over samples and points,
    each (C,) float64; a constant channel gets std 1 (it is only shifted), never a division by 0."""
    flat = fields.double().transpose(0, 1).flatten(1)
    mean, std = flat.mean(1), flat.std(1)
    tiny = 1e-12 * torch.clamp(mean.abs(), min=1.0)
    return mean, torch.where(std > tiny, std, torch.ones_like(std))


@dataclass(frozen=True)
class GridData:
    """Input and output fields on one grid, float64 on the CPU.

    inputs (N, C_in, *grid), outputs (N, C_out, *grid): sample i maps inputs[i] to outputs[i].
    """

    inputs: Tensor
    outputs: Tensor

    def __post_init__(self) -> None:
        x, y = self.inputs, self.outputs
        if x.dim() < 3 or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            raise ValueError(
                f"GridData needs inputs (N, C_in, *grid) and outputs (N, C_out, *grid) on the "
                f"same grid, got {tuple(x.shape)} and {tuple(y.shape)}"
            )

    @property
    def n_samples(self) -> int:
        return self.inputs.shape[0]

    @property
    def grid(self) -> tuple[int, ...]:
        """Points per spatial dimension."""
        return tuple(self.inputs.shape[2:])

    def head(self, n: int) -> GridData:
        """The first n samples."""
        return GridData(self.inputs[:n], self.outputs[:n])


class GridFields:
    """What every problem of fields on a grid (data-fit or data-free) says of itself the same
    way: its name, its number of grid dimensions and the sizes a grid model gets."""

    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    coordinate_names: tuple[str, ...]

    @property
    def name(self) -> str:
        return type(self).__name__.lower()

    @property
    def spatial_dims(self) -> int:
        return len(self.coordinate_names)

    def grid_model_sizes(self, grid: tuple[int, ...]) -> dict[str, Any]:
        """The sizes of an operator-on-grids model (`contract.SIZES`) trained on `grid`."""
        return {
            "in_channels": len(self.input_names),
            "out_channels": len(self.output_names),
            "grid": grid,
        }


class GridOperatorProblem(GridFields, ABC):
    """An operator between fields on a grid, with its datasets.

    Subclasses set `input_names` (input channels), `output_names` (output channels),
    `coordinate_names` (one per spatial dimension) and `grid_layout`, and implement `generate`.
    `batch_size` is the number of training samples per step, `loss` the training loss
    ("l2" | "h1": relative, per sample, averaged; `grid_metrics`).
    """

    #: an FNO-like model maps fields on a grid to fields on a grid (see mpsciml.contract)
    model_kind: ClassVar[ModelKind] = ModelKind.GRID_OPERATOR
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    coordinate_names: tuple[str, ...]
    #: where the samples sit in [0, 1]: "periodic" | "nodes" | "cells" (`grid_metrics`)
    grid_layout: str
    #: the frozen dataclass of the generator's options (`problem.generator`), or None for a
    #: problem without one; its instance is `self.params`
    params_class: ClassVar[type | None] = None

    def __init__(
        self,
        n_train: int = 1000,
        n_test: int = 100,
        resolution: int = 32,
        zero_shot_resolution: int | None = None,
        n_zero_shot: int = 0,
        batch_size: int = 20,
        loss: str = "l2",
        data_seed: int = 0,
        generator: Mapping[str, Any] | None = None,
        data_path: str | None = None,
        test_data_path: str | None = None,
        zero_shot_data_path: str | None = None,
    ) -> None:
        require_counts(n_train=n_train, n_test=n_test, batch_size=batch_size)
        if self.params_class is None and generator:
            raise ValueError(f"problem.generator: {type(self).__name__} has no generator options")
        self.params = generator_params(self.params_class, generator) if self.params_class else None
        require_counts(resolution=resolution)
        if resolution < 3:
            raise ValueError(f"problem.resolution={resolution} is invalid: must be >= 3")
        if zero_shot_resolution is not None:
            require_counts(zero_shot_resolution=zero_shot_resolution)
        if not (isinstance(n_zero_shot, int) and n_zero_shot >= 0):
            raise ValueError(f"problem.n_zero_shot={n_zero_shot!r} must be an integer >= 0")
        if loss not in GRID_LOSSES:
            raise ValueError(f"problem.loss={loss!r} is unknown; allowed: {', '.join(GRID_LOSSES)}")
        if data_path is None and (test_data_path or zero_shot_data_path):
            raise ValueError(
                "problem.test_data_path and problem.zero_shot_data_path need problem.data_path "
                "(the training file)"
            )
        self.n_train, self.n_test, self.resolution = n_train, n_test, resolution
        self.zero_shot_resolution, self.n_zero_shot = zero_shot_resolution, n_zero_shot
        self.batch_size, self.loss, self.data_seed = batch_size, loss, data_seed
        self.data_path, self.test_data_path = data_path, test_data_path
        self.zero_shot_data_path = zero_shot_data_path
        self._datasets: dict[tuple[object, ...], object] = {}

    # --------------------------------------------------------- subclass API
    @abstractmethod
    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        """n samples at `resolution` points per dimension from the stream `seed` (cached)."""

    # ------------------------------------------------------------- datasets
    def model_sizes(self) -> dict[str, Any]:
        """The sizes of an operator-on-grids model; `grid` is the training grid (read from the
        user's file when there is one)."""
        grid = self.train_data().grid if self.data_path else (self.resolution,) * self.spatial_dims
        return self.grid_model_sizes(grid)

    def read_once(self, key: tuple[object, ...], read: Callable[[], T]) -> T:
        """`read()` the first time `key` is asked for, the same object after."""
        if key not in self._datasets:
            self._datasets[key] = read()
        return self._datasets[key]  # type: ignore[return-value]

    def train_data(self) -> GridData:
        if self.data_path:
            return self._from_file("data_path", 0, self.n_train)
        return self._generated("train", self.n_train, self.resolution)

    def test_data(self) -> GridData:
        if self.test_data_path:
            return self._from_file("test_data_path", 0, self.n_test)
        if self.data_path:
            return self._from_file("data_path", self.n_train, self.n_test)
        return self._generated("test", self.n_test, self.resolution)

    def zero_shot_data(self) -> GridData | None:
        """Samples at a finer grid than the training one, or None (no zero-shot evaluation)."""
        if self.zero_shot_data_path:
            data = self._file("zero_shot_data_path")
            return data.head(self.n_zero_shot) if self.n_zero_shot else data
        if self.data_path or not self.n_zero_shot or self.zero_shot_resolution is None:
            return None
        return self._generated("zero_shot", self.n_zero_shot, self.zero_shot_resolution)

    def normalisation(self) -> dict[str, tuple[Tensor, Tensor]]:
        """{"input": (mean, std), "output": (mean, std)}, each (C,), of the training set: the
        unit-Gaussian normalisation (neuraloperator's UnitGaussianNormalizer) a module applies
        to the model's inputs and outputs. Per channel over samples and grid points, not per
        point, so it holds at any resolution (zero-shot)."""
        train = self.train_data()
        return self.read_once(
            ("normalisation", id(train)),
            lambda: {
                "input": channel_statistics(train.inputs),
                "output": channel_statistics(train.outputs),
            },
        )

    def _generated(self, split: str, n: int, resolution: int) -> GridData:
        seed = dataset_seed(self.data_seed, split)
        return self.read_once(
            (split, n, resolution, seed), lambda: self.generate(n, resolution, seed)
        )

    def _file(self, key: str) -> GridData:
        path = getattr(self, key)
        channels = (len(self.input_names), len(self.output_names))

        def read() -> GridData:
            x, y = read_grid_file(path, f"problem.{key}", channels, self.spatial_dims)
            return GridData(x, y)

        return self.read_once(("file", key, path), read)

    def _from_file(self, key: str, start: int, n: int) -> GridData:
        """Samples start..start+n of the file `problem.<key>`, or one line saying it is short."""
        data = self._file(key)
        if data.n_samples < start + n:
            raise ValueError(
                f"problem.{key}={getattr(self, key)} holds {data.n_samples} samples, fewer than "
                f"the {start + n} asked for (problem.n_train={self.n_train}, "
                f"problem.n_test={self.n_test})"
            )
        return GridData(data.inputs[start : start + n], data.outputs[start : start + n])

    # ----------------------------------------------------------------- grid
    def coordinates(self, grid: tuple[int, ...]) -> list[Tensor]:
        """The 1-D coordinates of each dimension of `grid` in [0, 1], for plots."""
        return [grid_coordinates(n, self.grid_layout) for n in grid]
