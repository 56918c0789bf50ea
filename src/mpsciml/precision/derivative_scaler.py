"""Per-order scaling of input derivatives, the fp16 safety a GradScaler cannot give.

A GradScaler scales the loss, so it protects the backward pass to the *parameters*. The PDE
residual also needs du/dx and d2u/dx2, which `torch.autograd.grad` computes through the same fp16
matmuls, before any loss exists. Near Burgers' shock u_xx reaches ~1e5 > 65504: the backward pass
that computes it overflows, and lowering the loss scale cannot help. Backward passes are linear in
their seed, so we seed the pass for order k with s_k instead of 1 and divide the (fp32) result by
s_k: every fp16 intermediate is scaled by s_k, the result is unchanged. s_k is dynamic like a loss
scale: halved (and the step skipped) when an order-k derivative was non-finite, doubled back after
`growth_interval` clean steps, never above `max_scale`.
"""

from __future__ import annotations


class DerivativeScaler:
    def __init__(
        self,
        init_scale: float = 1.0,
        max_scale: float = 1.0,
        backoff_factor: float = 0.5,
        growth_factor: float = 2.0,
        growth_interval: int = 500,
        min_scale: float = 2.0**-24,
    ) -> None:
        self.init_scale, self.max_scale = init_scale, max_scale
        self.backoff_factor, self.growth_factor = backoff_factor, growth_factor
        self.growth_interval, self.min_scale = growth_interval, min_scale
        self.scales: dict[int, float] = {}
        self._clean_steps: dict[int, int] = {}
        self.overflow_steps = 0

    def seed(self, order: int) -> float:
        """The seed for the backward pass that produces derivatives of this order."""
        return self.scales.get(order, self.init_scale)

    def update(self, nonfinite_orders: set[int], orders_seen: set[int]) -> None:
        """Back off the orders that overflowed in this step, grow the others after a clean run."""
        if nonfinite_orders:
            self.overflow_steps += 1
        for order in orders_seen:
            if order in nonfinite_orders:
                self.scales[order] = max(self.seed(order) * self.backoff_factor, self.min_scale)
                self._clean_steps[order] = 0
                continue
            self._clean_steps[order] = self._clean_steps.get(order, 0) + 1
            if self._clean_steps[order] >= self.growth_interval:
                self.scales[order] = min(self.seed(order) * self.growth_factor, self.max_scale)
                self._clean_steps[order] = 0

    def state_dict(self) -> dict[str, object]:
        return {"scales": dict(self.scales), "clean_steps": dict(self._clean_steps)}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.scales = {int(k): float(v) for k, v in dict(state["scales"]).items()}  # type: ignore[arg-type]
        self._clean_steps = {int(k): int(v) for k, v in dict(state["clean_steps"]).items()}  # type: ignore[arg-type]
