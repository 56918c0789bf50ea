"""Dynamic loss scaling for pure fp16, where `torch.amp.GradScaler` cannot be used.

GradScaler refuses to unscale fp16 gradients (it assumes fp32 master weights). With weights,
gradients and optimizer state all in fp16 we still want what it does: multiply the loss by S so
small gradients survive the fp16 backward, divide the gradients by S before the update, halve S
and skip the step when anything overflowed, and double S after a run of clean steps.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import Tensor


@functools.cache
def _scale(value: float, device: torch.device) -> Tensor:
    """The kernel's scale as a one-element fp32 tensor, made once per value and device (the
    kernel only reads it; in practice 1.0 per device: the fp32 check)."""
    return torch.full((1,), value, device=device, dtype=torch.float32)


def unscale_and_check(grads: Iterable[Tensor], inverse_scale: float = 1.0) -> bool:
    """Multiply every gradient by `inverse_scale` in place; True when all of them are finite.

    Why this and not `torch.isfinite(g).all()` per gradient: that is two operators per parameter
    plus a stack, ~0.35 ms of dispatch for an 8-tensor MLP on a busy CPU core, every step of an
    fp32 run too. Here it is one call of torch's own GradScaler kernel per (device, dtype) group
    (`_amp_foreach_non_finite_check_and_unscale_`, on CPU and CUDA, fp16/bf16/fp32/fp64) and one
    host read. It writes `g * inverse_scale`, so with the default 1.0 the values are unchanged
    bit for bit (x * 1.0 == x in IEEE arithmetic, infinities and NaNs included). Complex
    gradients are checked as their (real, imag) view, which the kernel takes.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for grad in grads:
        real = torch.view_as_real(grad) if grad.is_complex() else grad
        groups.setdefault((real.device, real.dtype), []).append(real)
    found: Tensor | None = None
    for (device, _), group in groups.items():
        flag = torch.zeros(1, device=device, dtype=torch.float32)
        torch._amp_foreach_non_finite_check_and_unscale_(group, flag, _scale(inverse_scale, device))
        found = flag if found is None else found + flag.to(found.device)
    return found is None or not bool(found.item())


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
        finite = unscale_and_check(grads)  # checks only (x 1.0)
        if finite and grads:
            torch._foreach_mul_(grads, 1.0 / self.scale)
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
