"""Observations: a PINN fitted to measured values of its outputs at given points.

An inverse problem learns what its equations leave open (a coefficient, `problems.coefficients`)
from data; the data enter the loss as one more condition whose residual is the network minus
the observed value, field by field. The values belong to their points: they sit next to them in
the `Condition` (`values`), travel with them through the step's batch (under
`base.values_key(name)`), are sliced with them under DDP (rank r keeps points and values
r, r + W, ...), stay in fp32 when the points are cast to a half input dtype
(`PINNModule.batch_in_input_dtype`) and reach the residual as its second argument, also in the
compiled Taylor step. So the residual never looks data up by index, which a resample, a shard or
a shuffle would break.

Noise (`add_noise`) is Gaussian, a fraction of each field's standard deviation, drawn from its
own seeded stream, so `problem.noise=0.01` is "1% noise" in the sense of Raissi et al. and the
same seed gives the same noisy data on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import Condition, values_key
from mpsciml.seeding import Seed


def is_values_key(key: str) -> bool:
    """Whether a batch key holds a data condition's observed values (`base.values_key`)."""
    return key.endswith(values_key(""))


def first_values(condition: Condition, count: int = 2) -> Tensor | None:
    """The observed values at the condition's first `count` points (None: not a data condition):
    what a residual probed on those points needs (the loss terms and Taylor mode's streams are
    found on two points before training)."""
    return None if condition.values is None else condition.values[:count]


@dataclass(frozen=True)
class ObservationResidual:
    """network - observed value for each observed field: one loss term per field
    (`<condition>_<field>`), so each field's misfit is logged and can be weighted on its own."""

    fields: tuple[str, ...]

    def __call__(self, d: Derivatives, values: Tensor) -> dict[str, Tensor]:
        return {
            field: d[field] - values[:, i].to(d[field].dtype) for i, field in enumerate(self.fields)
        }


def observation_condition(points: Tensor, values: Tensor, fields: Sequence[str]) -> Condition:
    """A data condition: the outputs `fields` must match `values` (N, len(fields)) at `points`."""
    if points.ndim != 2 or values.shape != (points.shape[0], len(fields)):
        raise ValueError(
            f"observations: values of shape {tuple(values.shape)} do not fit "
            f"{points.shape[0]} points and fields {list(fields)}"
        )
    return Condition(
        points.to(torch.float64), ObservationResidual(tuple(fields)), values.to(torch.float64)
    )


def check_noise(noise: object) -> float:
    """`problem.noise` as a float in [0, 1) (a fraction of each field's std)."""
    ok = isinstance(noise, int | float) and not isinstance(noise, bool)
    if not ok or not (0 <= float(noise) < 1) or not math.isfinite(float(noise)):  # type: ignore[arg-type]
        raise ValueError(
            f"problem.noise={noise!r} is invalid: must be a number in [0, 1), the noise's "
            "standard deviation as a fraction of each observed field's (0.01 = 1%)"
        )
    return float(noise)  # type: ignore[arg-type]


def add_noise(values: Tensor, level: float, seed: Seed) -> Tensor:
    """`values` (N, k) plus Gaussian noise of std `level` x each column's std, from `seed`."""
    if level == 0:
        return values
    rng = np.random.default_rng(seed)  # a SeedSequence or an int
    draws = torch.from_numpy(rng.standard_normal(tuple(values.shape)))
    return values + level * values.std(dim=0, keepdim=True) * draws.to(values.dtype)
