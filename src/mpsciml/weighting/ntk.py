"""NTK-based weights (Wang, Yu & Perdikaris 2022, "When and why PINNs fail to train: a neural
tangent kernel perspective"), with the kernel traces ESTIMATED from per-term gradients.

The paper sets lambda_i = Tr(K) / Tr(K_ii), Tr(K) = sum_j Tr(K_jj), where K_ii = J_i J_i^T is
the NTK block of term i (J_i: the Jacobian of that term's residuals at its N_i points w.r.t.
the parameters), so that every term converges at the same rate. The exact trace needs one
gradient per collocation point; a SciMLModule exposes its loss terms (mean squared residuals
L_i = |r_i|^2 / N_i), so this rule uses instead

    T_i = |grad_theta L_i|^2 / L_i = (4 / N_i) * r_i^T K_ii r_i / |r_i|^2,

the Rayleigh quotient of the term's NTK block along its current residual, times 4 / N_i. It is
exactly the term's relative convergence rate under gradient flow on its own loss:
dL_i/dt = -|grad L_i|^2, so -(dL_i/dt) / L_i = T_i; it does not depend on the residual's size
(|grad L_i|^2 alone would: it falls with L_i, and its inverse, the weight, would run away as a
term is met, which we measured on Burgers: pde weight 1e11, relative L2 0.99). For a residual
spread evenly over the block's eigenvectors its mean is 4 Tr(K_ii) / N_i^2: the paper's trace,
scaled by 4 / N_i^2 (terms with different point counts are weighed per point, as mean squares
are). Then

    lambda_hat_i = sum_j T_j / T_i,   lambda_i <- (1 - alpha) lambda_i + alpha lambda_hat_i

(alpha = 1: the paper's plain recomputation at each update), which makes lambda_i T_i, the
weighted relative convergence rates, equal across the terms. Every multiplier is >= 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from mpsciml.weighting.method import WeightingMethod, check_fraction


class NTKWeighting(WeightingMethod):
    name = "ntk"
    uses_gradients = True

    def __init__(self, terms: Sequence[str], alpha: float = 1.0) -> None:
        super().__init__(terms)
        self.alpha = check_fraction("alpha", alpha)

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "trace_estimate": "|grad L_i|^2 / L_i"}

    def update(
        self, losses: Mapping[str, float], gradients: Mapping[str, Tensor] | None, step: int
    ) -> bool:
        assert gradients is not None
        rates = {
            t: float(gradients[t].double().square().sum()) / losses[t]
            for t in self.terms
            if losses[t] > 0.0  # a term met exactly (or reached by nothing) keeps its multiplier
        }
        total = sum(rates.values())
        if not math.isfinite(total) or total == 0.0:
            return False
        for term, rate in rates.items():
            if rate > 0.0:
                estimate = total / rate
                self.multipliers[term] = (1.0 - self.alpha) * self.multipliers[
                    term
                ] + self.alpha * estimate
        return True
