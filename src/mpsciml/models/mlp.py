"""A fully connected network, the workhorse of PINNs.

Knows nothing of PDEs or precision: input (N, in_features) -> output (N, out_features).
`periodic` ({input index: period}) puts a `PeriodicEmbedding` first, so the network is exactly
periodic in those inputs (`models/periodic.py`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mpsciml.contract import ModelKind
from mpsciml.models.periodic import PeriodicEmbedding, check_periods


class Sine(nn.Module):
    """sin(x): periodic features (SIREN-style) for oscillatory solutions."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(x)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "sin": Sine,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
}

INITIALIZERS = {
    "glorot_normal": nn.init.xavier_normal_,
    "glorot_uniform": nn.init.xavier_uniform_,
    "he_normal": nn.init.kaiming_normal_,
    "default": None,
}


def integer_widths(name: str, hidden: Any) -> list[int]:
    """`model.<name>` as a list of int widths. A whole number written as a float (6.0) counts,
    but not `abc` (int() would read it as letters) nor 1.5 (int() would truncate it silently)."""
    is_list = isinstance(hidden, Iterable) and not isinstance(hidden, str)
    widths = list(hidden) if is_list else []
    whole = all(
        isinstance(w, int | float) and not isinstance(w, bool) and float(w).is_integer()
        for w in widths
    )
    if not widths or not whole or min(widths) <= 0:
        raise ValueError(
            f"model.{name}={widths if is_list else hidden!r} is invalid: must be a non-empty "
            "list of integer widths > 0, e.g. [32, 32, 32]"
        )
    return [int(w) for w in widths]


class MLP(nn.Module):
    """in -> [hidden]* -> out with one activation; smooth activations keep u_xx meaningful."""

    accepts: ClassVar[tuple[ModelKind, ...]] = (ModelKind.POINTWISE,)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: Sequence[int] = (32, 32, 32),
        activation: str = "tanh",
        init: str = "glorot_normal",
        periodic: Mapping[int, float] | None = None,
        harmonics: int = 1,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}"
            )
        if init not in INITIALIZERS:
            raise ValueError(f"model.init={init!r} is unknown; allowed: {', '.join(INITIALIZERS)}")
        widths = [in_features, *integer_widths("hidden", hidden), out_features]
        layers: list[nn.Module] = []
        if periodic:
            check_periods(periodic, in_features, harmonics)
            embedding = PeriodicEmbedding(in_features, periodic, harmonics)
            layers.append(embedding)
            widths[0] = embedding.out_features
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
            linear = nn.Linear(fan_in, fan_out)
            if INITIALIZERS[init] is not None:
                INITIALIZERS[init](linear.weight)
                nn.init.zeros_(linear.bias)
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
