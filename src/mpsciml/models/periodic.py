"""Periodic inputs: a network that is periodic in a coordinate by construction.

A PINN on a periodic domain usually gets the periodicity as a loss term (u(-1) = u(1),
u_x(-1) = u_x(1)), which holds only as well as the loss is small. Feeding the network
cos(2 pi h x / P) and sin(2 pi h x / P) (h = 1..harmonics) instead of x makes every output and
every derivative exactly P-periodic in x, so the boundary condition leaves the loss
(`model.periodic`, the problem's `periodic_inputs`).

The coordinate is first wrapped into [0, P) (x mod P): x = -1 and x = 1 with P = 2 then give the
same phase bit for bit, so the periodic images agree exactly, not only to the rounding of
sin(pi). The features are computed in fp32 (fp64 in an fp64 run) whatever the run's precision and
handed to the first Linear in the dtype the coordinates came in: the phase 2 pi h x / P reaches
2 pi h, where fp16's spacing is 2^-8 h, so fp16 phases would be off by ~4e-3 h before the network
even starts. The layer holds no tensors, so it changes neither the dtype the inputs arrive in nor
anything a precision policy would have to keep; Taylor mode runs through it (`taylor_columns`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mpsciml.derivatives.jets import Column, Jet


def wrap(column: Column, period: float) -> Column:
    """column mod period: the value wraps, the derivatives are those of the identity."""
    if isinstance(column, Jet):
        return Jet(torch.remainder(column.value, period), column.first, column.second, column.k2)
    return torch.remainder(column, period)


class PeriodicEmbedding(nn.Module):
    """x (N, D) -> (N, D + P (2 harmonics - 1)): each periodic input j (period L_j) replaced by
    cos(2 pi h x_j / L_j), sin(2 pi h x_j / L_j), h = 1..harmonics; the others pass through, in
    input order."""

    def __init__(self, in_features: int, periods: Mapping[int, float], harmonics: int = 1) -> None:
        super().__init__()
        self.in_features = in_features
        self.periods = {int(j): float(p) for j, p in periods.items()}
        self.harmonics = harmonics
        self.out_features = in_features + len(self.periods) * (2 * harmonics - 1)

    def extra_repr(self) -> str:
        return f"periods={self.periods}, harmonics={self.harmonics}"

    def columns(self, inputs: Sequence[Column]) -> list[Column]:
        """The embedding on columns (tensors or jets): one formula for forward and Taylor."""
        out: list[Column] = []
        for j, column in enumerate(inputs):
            period = self.periods.get(j)
            if period is None:
                out.append(column)
                continue
            wrapped = wrap(column, period)
            for h in range(1, self.harmonics + 1):
                phase = (2 * math.pi * h / period) * wrapped
                out.extend([phase.cos(), phase.sin()])
        return out

    def forward(self, x: Tensor) -> Tensor:
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            columns = self.columns([x[:, j].to(dtype) for j in range(x.shape[-1])])
            return torch.stack(list(columns), dim=-1).to(x.dtype)


def check_periods(periods: Mapping[int, float], in_features: int, harmonics: int) -> None:
    """Indices inside the inputs, periods > 0, harmonics >= 1: one line each."""
    for j, period in periods.items():
        if not 0 <= j < in_features:
            raise ValueError(
                f"model.periodic: input {j} does not exist (the model has {in_features} inputs)"
            )
        if not (isinstance(period, int | float) and math.isfinite(period) and period > 0):
            raise ValueError(f"model.periodic: the period of input {j} is {period!r}; must be > 0")
    if not (isinstance(harmonics, int) and not isinstance(harmonics, bool) and harmonics >= 1):
        raise ValueError(f"model.harmonics={harmonics!r} is invalid: must be an integer >= 1")


def resolve_periodic(spec: Any, problem: Any) -> dict[int, float] | None:
    """`model.periodic` as {input index: period}. Accepted: null (off), "problem" (the
    problem's declared `periodic_inputs`), or a mapping of input name or index -> period."""
    if spec is None or spec is False:
        return None
    names = list(getattr(problem, "input_names", ()))
    declared = dict(getattr(problem, "periodic_inputs", {}) or {})
    if spec == "problem":
        if not declared:
            raise ValueError(
                f"model.periodic=problem: problem {problem.name} declares no periodic inputs; "
                "give {input: period}, e.g. model.periodic={x: 2.0}"
            )
        spec = declared
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"model.periodic={spec!r} is invalid: null, problem, or {{input name or index: "
            "period}, e.g. {x: 2.0}"
        )
    resolved: dict[int, float] = {}
    for key, period in spec.items():
        if isinstance(key, str) and not key.isdigit():
            if key not in names:
                raise ValueError(
                    f"model.periodic.{key}: no such input; inputs are {', '.join(names)}"
                )
            index = names.index(key)
        else:
            index = int(key)
        resolved[index] = period
    return resolved
