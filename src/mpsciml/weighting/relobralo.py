"""ReLoBRaLo, relative loss balancing with random lookback (Bischof & Kraus 2021, "Multi-objective
loss balancing for physics-informed deep learning").

Each term is weighted by how slowly it falls relative to the others, measured against the
previous update and, through a random lookback, against the first observation:

    bal_i(t, t') = m * softmax_i( L_i(t) / (T * L_i(t') + eps) )          (m terms)
    rho ~ Bernoulli(E[rho])                  (the "saudade": usually remember, rarely restart)
    lambda_i(t)  = alpha * (rho * lambda_i(t-1) + (1 - rho) * bal_i(t, 0))
                   + (1 - alpha) * bal_i(t, t-1)

The multipliers sum to m (as fixed weights of 1 do), so the loss keeps its scale. The losses
are the global unweighted terms of the step just taken; t-1 is the previous update (update_every
steps back), 0 the first. rho is drawn from a generator seeded by (run seed, step): the same on
every rank and after a resume, with no generator state to save.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from mpsciml.weighting.method import (
    EPS,
    WeightingMethod,
    check_fraction,
    check_positive,
    finite,
    softmax_times_count,
)


class ReLoBRaLo(WeightingMethod):
    name = "relobralo"
    uses_gradients = False

    def __init__(
        self,
        terms: Sequence[str],
        alpha: float = 0.999,
        expected_rho: float = 0.999,
        temperature: float = 1.0,
        seed: int = 0,
    ) -> None:
        super().__init__(terms)
        self.alpha = check_fraction("alpha", alpha)
        self.expected_rho = check_fraction("expected_rho", expected_rho)
        self.temperature = check_positive("temperature", temperature)
        self.seed = int(seed)
        self.first: dict[str, float] | None = None
        self.previous: dict[str, float] | None = None

    def settings(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "expected_rho": self.expected_rho,
            "temperature": self.temperature,
        }

    def balance(self, now: Mapping[str, float], then: Mapping[str, float]) -> dict[str, float]:
        balanced = softmax_times_count(
            {t: now[t] / (self.temperature * then[t] + EPS) for t in self.terms}
        )
        assert balanced is not None  # without prefactors the sum is at least 1
        return balanced

    def update(
        self, losses: Mapping[str, float], gradients: Mapping[str, Tensor] | None, step: int
    ) -> bool:
        if not finite(losses):
            return False
        now = {t: float(losses[t]) for t in self.terms}
        if self.first is None or self.previous is None:
            self.first = self.previous = now  # the lookbacks start here; multipliers stay 1
            return True
        rho = float(np.random.default_rng([self.seed, step]).random() < self.expected_rho)
        from_start, from_last = self.balance(now, self.first), self.balance(now, self.previous)
        self.multipliers = {
            t: self.alpha * (rho * self.multipliers[t] + (1.0 - rho) * from_start[t])
            + (1.0 - self.alpha) * from_last[t]
            for t in self.terms
        }
        self.previous = now
        return True

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "first": self.first, "previous": self.previous}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.first = None if state["first"] is None else dict(state["first"])
        self.previous = None if state["previous"] is None else dict(state["previous"])
