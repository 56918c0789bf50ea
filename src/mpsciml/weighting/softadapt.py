"""SoftAdapt (Heydari, Thompson & Mehmood 2019, "SoftAdapt: techniques for adaptive loss
weighting of neural networks with multi-part loss functions").

A term whose loss rises (or falls slowest) gets more weight, through a softmax of the rates of
change measured between two updates:

    s_i      = L_i(t) - L_i(t - update_every)
    s_i     <- s_i / (sum_j |s_j| + eps)                         (normalized: true)
    lambda_i = m * w_i exp(beta s_i) / sum_j w_j exp(beta s_j)   (w_i = L_i(t) with
                                                                  loss_weighted: true, else 1)

scaled to sum to m (as fixed weights of 1 do). The normalized rates lie in [-1, 1], so beta
alone sets how far apart the weights can go (at most a factor exp(2 beta) without loss
weighting). The losses are the global unweighted terms of the step just taken.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from mpsciml.weighting.method import (
    EPS,
    WeightingMethod,
    check_positive,
    finite,
    softmax_times_count,
)


class SoftAdapt(WeightingMethod):
    name = "softadapt"
    uses_gradients = False

    def __init__(
        self,
        terms: Sequence[str],
        beta: float = 1.0,
        normalized: bool = True,
        loss_weighted: bool = False,
    ) -> None:
        super().__init__(terms)
        self.beta = check_positive("beta", beta)
        for key, value in (("normalized", normalized), ("loss_weighted", loss_weighted)):
            if not isinstance(value, bool):
                raise ValueError(f"weighting.{key}={value!r} is invalid: must be true or false")
        self.normalized = normalized
        self.loss_weighted = loss_weighted
        self.previous: dict[str, float] | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "beta": self.beta,
            "normalized": self.normalized,
            "loss_weighted": self.loss_weighted,
        }

    def update(
        self, losses: Mapping[str, float], gradients: Mapping[str, Tensor] | None, step: int
    ) -> bool:
        if not finite(losses):
            return False
        now = {t: float(losses[t]) for t in self.terms}
        previous, self.previous = self.previous, now
        if previous is None:
            return True  # a rate needs two observations; multipliers stay 1
        rates = {t: now[t] - previous[t] for t in self.terms}
        if self.normalized:
            scale = sum(abs(r) for r in rates.values()) + EPS
            rates = {t: r / scale for t, r in rates.items()}
        multipliers = softmax_times_count(
            {t: self.beta * rates[t] for t in self.terms}, now if self.loss_weighted else None
        )
        if multipliers is None:
            return False  # every loss exactly 0 under loss weighting: nothing to balance
        self.multipliers = multipliers
        return True

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous": self.previous}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.previous = None if state["previous"] is None else dict(state["previous"])
