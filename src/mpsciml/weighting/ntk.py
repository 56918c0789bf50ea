"""NTK-based weights (Wang, Yu & Perdikaris 2022, "When and why PINNs fail to train: a neural
tangent kernel perspective"), with the kernel traces ESTIMATED from per-term gradients.

The paper sets lambda_i = Tr(K) / Tr(K_ii), Tr(K) = sum_j Tr(K_jj), where K_ii = J_i J_i^T is
the NTK block of term i (J_i: the Jacobian of that term's residuals at its points w.r.t. the
parameters), so that every term's block converges at the same rate. Its exact trace needs one
gradient per collocation point; what a SciMLModule exposes is its loss terms (mean squared
residuals), so this rule uses instead

    T_i = |grad_theta L_i|^2,   L_i = mean_x r_i(x)^2,

which is exactly (4 / N_i^2) r_i^T K_ii r_i: the quadratic form of the NTK block in the
direction of the current residual (the block's "trace along the residual"), not its trace.
For a residual spread evenly over K_ii's eigenvectors (E[r r^T] = L_i I) its mean is
Tr(K_ii) * 4 L_i / N_i^2; in general it weighs the block by where the residual actually is,
which is what the gradient flow of the loss sees. Then

    lambda_hat_i = sum_j T_j / T_i,   lambda_i <- (1 - alpha) lambda_i + alpha lambda_hat_i

(alpha = 1: the paper's plain recomputation at each update). Every multiplier is >= 1.
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
        return {"alpha": self.alpha, "trace_estimate": "|grad L_i|^2 = (4/N_i^2) r_i^T K_ii r_i"}

    def update(
        self, losses: Mapping[str, float], gradients: Mapping[str, Tensor] | None, step: int
    ) -> bool:
        assert gradients is not None
        traces = {t: float(gradients[t].double().square().sum()) for t in self.terms}
        total = sum(traces.values())
        if not math.isfinite(total) or total == 0.0:
            return False
        for term, trace in traces.items():
            if trace > 0.0:  # a term no parameter reaches keeps its multiplier
                estimate = total / trace
                self.multipliers[term] = (1.0 - self.alpha) * self.multipliers[
                    term
                ] + self.alpha * estimate
        return True
