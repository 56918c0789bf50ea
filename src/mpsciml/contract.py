"""The contract between problems and models: which kind of model a problem needs.

A problem declares `model_kind` (one of `ModelKind`) and the sizes it provides for that kind
(`model_sizes()`); a model class declares the kinds it `accepts`. The factory compares the two
declarations, so adding a problem or a model never means teaching the factory class names.
Shared by problems, models and the factory; imports nothing else of ours.
"""

from __future__ import annotations

from enum import StrEnum


class ModelKind(StrEnum):
    """What a problem asks of its model, and the sizes it hands over for it."""

    #: u(x): coordinates (N, in_features) -> fields (N, out_features); a PINN's network
    POINTWISE = "pointwise"
    #: G(v)(y): v at n_sensors sensors, query points of coord_dim -> out_features (DeepONet)
    SENSOR_OPERATOR = "operator on sensors"
    #: grid fields (N, in_channels, *grid) -> (N, out_channels, *grid) (FNO)
    GRID_OPERATOR = "operator on grids"
