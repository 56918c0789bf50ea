"""Dynamic loss scaling for pure fp16, where `torch.amp.GradScaler` cannot be used.

GradScaler refuses to unscale fp16 gradients (it assumes fp32 master weights). With weights,
gradients and optimizer state all in fp16 we still want what it does: multiply the loss by S so
small gradients survive the fp16 backward, divide the gradients by S before the update, halve S
and skip the step when anything overflowed, and double S after a run of clean steps.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


class DynamicLossScaler:
    def __init__(
        self,
        init_scale: float = 2.0**16,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 2000,
        min_scale: float = 2.0**-24,
    ) -> None:
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval, self.min_scale = growth_interval, min_scale
        self._clean_steps = 0

    def scale_loss(self, loss: Tensor) -> Tensor:
        return loss * self.scale

    def unscale_(self, params: Iterable[Tensor]) -> bool:
        """Divide every gradient by the scale in place; True if all of them are finite.

        The check comes first so that an overflowed step is not also divided (inf / S is inf).
        """
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return True
        finite = bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if finite:
            inverse = 1.0 / self.scale
            for grad in grads:
                grad.mul_(inverse)
        return finite

    def update(self, found_nonfinite: bool) -> None:
        if found_nonfinite:
            self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            self._clean_steps = 0
            return
        self._clean_steps += 1
        if self._clean_steps >= self.growth_interval:
            self.scale *= self.growth_factor
            self._clean_steps = 0

    def get_scale(self) -> float:
        return self.scale

    def state_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale, "clean_steps": self._clean_steps}

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        self.scale = float(state["scale"])
        self._clean_steps = int(state["clean_steps"])
