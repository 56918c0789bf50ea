"""The named coefficients of a problem's equations, and which of them are unknown.

An inverse problem writes its residual with symbols (`C1 * (u u_x + v u_y)`), reads each one
through `coefficients(name, like)` and declares the values the symbols have in truth. With
`problem.unknowns={C1: 0.0}` a symbol becomes a trainable parameter starting at the given value;
the PINN module makes the parameters (`modules.unknowns`, kept in fp32 master precision in every
run precision) and binds them here, so the problem stays free of networks and Lightning and the
residual reads the same whether a coefficient is known or learned. The names the equations use
are checked when the problem is built: a typo (`C3`) is one line naming the allowed ones, not a
parameter that silently never moves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor


class Coefficients:
    """`true`: name -> the true value (None where it is not known, e.g. a user's data file);
    `unknowns`: name -> initial value of the ones to learn (`problem.unknowns`)."""

    def __init__(
        self, problem: str, true: Mapping[str, float | None], unknowns: Mapping[str, Any] | None
    ) -> None:
        self.true = dict(true)
        self.initial = check_unknowns(problem, self.true, unknowns)
        self._bound: Mapping[str, Tensor] = {}

    def bind(self, parameters: Mapping[str, Tensor]) -> None:
        """The trainable tensors of the unknowns (name -> scalar parameter), read from now on."""
        if missing := set(self.initial) - set(parameters):
            raise ValueError(f"no parameter for the unknown coefficient(s) {sorted(missing)}")
        self._bound = parameters

    def __call__(self, name: str, like: Tensor) -> Tensor | float:
        """The coefficient `name` for a residual assembled in `like`'s dtype: the learned
        parameter cast to it (its gradient flows back in fp32), else the fixed true value
        (an unknown not bound yet, outside a PINN module, stands at its initial value)."""
        if name in self._bound:
            return self._bound[name].to(like.dtype)
        if name in self.initial:
            return self.initial[name]
        value = self.true[name]
        if value is None:
            raise ValueError(f"coefficient {name} has no known value: list it in problem.unknowns")
        return value

    def value(self, name: str) -> float:
        """The current value as a float: the learned one, else the initial or true one."""
        if name in self._bound:
            return float(self._bound[name].detach())
        current = self.initial.get(name, self.true[name])
        return math.nan if current is None else float(current)


def check_unknowns(
    problem: str, true: Mapping[str, float | None], unknowns: Mapping[str, Any] | None
) -> dict[str, float]:
    """`problem.unknowns` as name -> float: a mapping, names the equations use, finite numbers."""
    if unknowns is None:
        return {}
    allowed = ", ".join(true) or "none"
    if not isinstance(unknowns, Mapping):
        raise ValueError(
            f"problem.unknowns={unknowns!r} is invalid: must be a mapping of coefficient name "
            f"-> initial value, e.g. {{C1: 0.0}}; coefficients of {problem}: {allowed}"
        )
    initial: dict[str, float] = {}
    for name, value in unknowns.items():
        if name not in true:
            raise ValueError(
                f"problem.unknowns.{name} is not a coefficient of {problem}'s equations; "
                f"allowed: {allowed}"
            )
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(float(value)):
            raise ValueError(
                f"problem.unknowns.{name}={value!r} is invalid: the initial value must be a "
                "finite number"
            )
        initial[str(name)] = float(value)
    return initial


def relative_error(value: float, true: float | None) -> float | None:
    """|value - true| / |true| (the absolute error for a true 0; None for an unknown truth)."""
    if true is None:
        return None
    return abs(value - true) / abs(true) if true != 0 else abs(value - true)
