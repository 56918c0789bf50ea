"""Learning-rate annealing (Wang, Teng & Perdikaris 2021, "Understanding and mitigating gradient
flow pathologies in physics-informed neural networks", Algorithm 1).

A term whose gradient is small next to the PDE residual's gets too little of each step; the
rule scales it up until its gradients are as large as the residual's largest:

    lambda_hat_i = max_theta |grad L_ref| / mean_theta |grad L_i|
    lambda_i    <- (1 - alpha) * lambda_i + alpha * lambda_hat_i      (paper: alpha = 0.9)

for every term i that is not a reference term; the reference terms (the PDE residual(s)) keep
multiplier 1. With several reference terms (Navier-Stokes: pde_momentum_x, ...), the max runs
over all of their gradients together. Gradients are of the unweighted terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from mpsciml.weighting.method import WeightingMethod, check_fraction


def matches(term: str, reference: str) -> bool:
    """`pde` names the term `pde` and the equations of condition `pde` (`pde_continuity`)."""
    return term == reference or term.startswith(f"{reference}_")


class LearningRateAnnealing(WeightingMethod):
    name = "lr_annealing"
    uses_gradients = True

    def __init__(self, terms: Sequence[str], alpha: float = 0.9, reference: str = "pde") -> None:
        super().__init__(terms)
        self.alpha = check_fraction("alpha", alpha)
        self.reference = str(reference)
        self.reference_terms = [t for t in self.terms if matches(t, self.reference)]
        if not self.reference_terms:
            raise ValueError(
                f"weighting.reference={self.reference!r} names no loss term; terms: "
                f"{', '.join(self.terms)}"
            )
        if len(self.reference_terms) == len(self.terms):
            raise ValueError(
                f"weighting.reference={self.reference!r} names every loss term "
                f"({', '.join(self.terms)}): nothing is left to balance against it"
            )

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "reference": self.reference}

    def update(
        self, losses: Mapping[str, float], gradients: Mapping[str, Tensor] | None, step: int
    ) -> bool:
        assert gradients is not None
        largest = max(float(gradients[t].abs().max()) for t in self.reference_terms)
        means = {
            t: float(gradients[t].abs().mean()) for t in self.terms if t not in self.reference_terms
        }
        if not math.isfinite(largest) or not all(math.isfinite(m) for m in means.values()):
            return False
        for term, mean in means.items():
            if mean > 0.0:  # a term no parameter reaches keeps its multiplier
                estimate = largest / mean
                self.multipliers[term] = (1.0 - self.alpha) * self.multipliers[
                    term
                ] + self.alpha * estimate
        return True
