"""The contract between problems and models: which kind of model a problem needs.

A problem declares `model_kind` (one of `ModelKind`) and the sizes it provides for that kind
(`model_sizes()`); a model class declares the kinds it `accepts`. The factory compares the two
declarations, so adding a problem or a model never means teaching the factory class names.

Sizes by kind (the keyword arguments a model class receives from the problem):
  * POINTWISE: in_features (coordinates), out_features (fields).
  * SENSOR_OPERATOR: n_sensors (values of v per function), coord_dim (query coordinates),
    out_features (fields of G(v)).
  * GRID_OPERATOR (FNO): in_channels, out_channels and grid (the training grid's point
    counts, one per dimension, e.g. (64, 64)); the model must also take other grid sizes at
    forward time (zero-shot evaluation at a finer grid).

A model of the SENSOR_OPERATOR kind implements the `SensorOperator` protocol (subclass
`SensorOperatorBase` to get the aligned form for free). A model class may also offer the optional
hook `build_with_training_data` (`TrainingDataBuilder`) when its construction needs the problem's
training data, as POD-DeepONet's trunk does; the factory calls it instead of the constructor.
Shared by problems, models and the factory; imports nothing else of ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn


class ModelKind(StrEnum):
    """What a problem asks of its model, and the sizes it hands over for it."""

    #: u(x): coordinates (N, in_features) -> fields (N, out_features); a PINN's network
    POINTWISE = "pointwise"
    #: G(v)(y): v at n_sensors sensors, query points of coord_dim -> out_features (DeepONet)
    SENSOR_OPERATOR = "operator on sensors"
    #: grid fields (N, in_channels, *grid) -> (N, out_channels, *grid) (FNO)
    GRID_OPERATOR = "operator on grids"

    @property
    def what(self) -> str:
        """What a model of this kind computes, for error messages."""
        return _WHAT[self]


_WHAT = {
    ModelKind.POINTWISE: "u(x) at points",
    ModelKind.SENSOR_OPERATOR: "G(v)(y) from v at sensors",
    ModelKind.GRID_OPERATOR: "fields on a grid to fields on a grid",
}

#: the keyword arguments `model_sizes()` returns for each kind
SIZES: dict[ModelKind, tuple[str, ...]] = {
    ModelKind.POINTWISE: ("in_features", "out_features"),
    ModelKind.SENSOR_OPERATOR: ("n_sensors", "coord_dim", "out_features"),
    ModelKind.GRID_OPERATOR: ("in_channels", "out_channels", "grid"),
}


def accepted_kinds(model_class: type) -> tuple[ModelKind, ...] | None:
    """The kinds a model class declares in `accepts`, or None when it declares none."""
    accepts = getattr(model_class, "accepts", None)
    if accepts is None:
        return None
    return tuple(ModelKind(kind) for kind in accepts)


@runtime_checkable
class SensorOperator(Protocol):
    """What operator learning calls on a model of the SENSOR_OPERATOR kind.

    Two forms because operator data comes in two layouts: scattered points of given functions
    (unaligned data, physics-informed collocation, where derivatives are taken w.r.t. `points`)
    and every function on one shared set of points (aligned data, evaluation).
    """

    def forward_indexed(self, branch: Tensor, points: Tensor, index: Tensor) -> Tensor:
        """branch (N, n_sensors), points (B, coord_dim), index (B,) -> (B, out_features):
        row i is function index[i] at points[i]."""
        ...

    def forward_aligned(self, branch: Tensor, trunk: Tensor) -> Tensor:
        """branch (N, n_sensors), trunk (P, coord_dim) -> (N, P, out_features)."""
        ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...


class SensorOperatorBase(nn.Module):
    """A base for SENSOR_OPERATOR models: implement `forward_indexed`, inherit the rest.

    The aligned form defaults to the indexed form on every (function, point) pair; a model
    with a cheaper product form (DeepONet: one branch pass per function, one trunk pass per
    point) overrides it.
    """

    accepts: tuple[ModelKind, ...] = (ModelKind.SENSOR_OPERATOR,)

    def forward_indexed(self, branch: Tensor, points: Tensor, index: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement forward_indexed")

    def forward_aligned(self, branch: Tensor, trunk: Tensor) -> Tensor:
        n_functions, n_points = branch.shape[0], trunk.shape[0]
        index = torch.arange(n_functions, device=branch.device).repeat_interleave(n_points)
        points = trunk.repeat(n_functions, 1)
        return self.forward_indexed(branch, points, index).unflatten(0, (n_functions, n_points))

    def forward(self, branch: Tensor, points: Tensor) -> Tensor:
        """Row i of branch paired with row i of points (DeepONet's pointwise form)."""
        index = torch.arange(points.shape[0], device=points.device)
        return self.forward_indexed(branch, points, index)


#: the values of `model.spectral_precision` (Tu et al. 2024): FFT, contraction, inverse FFT all in
#: the weights' precision | FFT in full, contraction in half | all three in half where the device
#: can (the CPU has no half FFT: there the FFT stays fp32 and the run's record says so)
SPECTRAL_PRECISIONS = ("full", "mixed", "half")


@runtime_checkable
class SpectralPrecisionControl(Protocol):
    """What a model with spectral layers (our FNO, the neuraloperator wrapper) offers the run:
    a precision of its own for the spectral path that a schedule can change mid-run, a record of
    what really ran, and a check against the device before any training starts."""

    spectral_precision: str

    def set_spectral_precision(self, mode: str) -> None:
        """Switch every spectral layer to `mode` (one of SPECTRAL_PRECISIONS); ValueError else."""
        ...

    def spectral_report(self) -> dict[str, Any]:
        """What ran in the forwards so far: {"spectral_precision": requested now, "ran": [one
        dict per distinct combination seen, with keys spectral_precision, device, fft_dtype,
        contraction_dtype, inverse_fft_dtype, padding, note]} (dtypes as "float16" etc.)."""
        ...

    def check_device(self, device_type: str, input_dtype: torch.dtype | None = None) -> None:
        """ValueError (one line naming the model.* key and the way out) when the configuration
        cannot run as asked on `device_type` ("cpu" | "cuda"), e.g. a half FFT of a grid that is
        not a power of two on CUDA; called before training, so it becomes a clean exit 2.
        input_dtype: the dtype the network's activations run in (None: assume fp16, the strict
        case)."""
        ...


#: a zero-argument callable giving the problem's training data on one fixed grid (an
#: `OperatorData` with aligned layout, for a problem without physics terms), or None when the
#: problem has no such data; called only by a hook that needs it, since loading costs time
AlignedTrainingData = Callable[[], Any]


class TrainingDataBuilder(Protocol):
    """The optional model-class hook for models whose construction needs training data.

    `build_with_training_data(aligned_training_data, **sizes_and_options)` is called by the
    factory instead of the class itself, with the problem's sizes and the model config's keys.
    It returns the model; it calls `aligned_training_data()` only when its options ask for data
    (POD-DeepONet: `pod_modes`), and raises ValueError naming the option when that gives None.
    """

    def build_with_training_data(
        self, aligned_training_data: AlignedTrainingData, **kwargs: Any
    ) -> nn.Module: ...
