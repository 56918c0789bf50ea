"""What low precision does to a training step, measured on the tensors themselves.

Two failure modes of pure fp16 named by Hayford et al.: gradients that underflow to zero, and
weight updates smaller than half a unit in the last place of the weight, which round away so the
weight never moves. Both are measured on demand (every N steps) because they read every parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

# Below half the smallest fp16 subnormal (2^-24) a value rounds to zero when cast to fp16.
FP16_UNDERFLOW = 2.0**-25


def gradient_underflow_fraction(grads: Sequence[Tensor | None]) -> float:
    """Fraction of gradient entries that are zero in fp16 or would round to zero in fp16.

    For fp16 gradients this is the fraction that did underflow (exact zeros); for the fp32
    gradients of fp32 or mixed runs it is what fp16 without loss scaling would have lost.
    """
    present = [g.detach() for g in grads if g is not None]
    if not present:
        return 0.0
    small = sum(int(torch.count_nonzero(g.abs() < FP16_UNDERFLOW)) for g in present)
    return small / sum(g.numel() for g in present)


def lost_update_fraction(
    before: Sequence[Tensor], after: Sequence[Tensor], grads: Sequence[Tensor | None]
) -> float:
    """Fraction of weights with a non-zero gradient that the optimizer step left unchanged.

    An optimizer moves every weight whose gradient is non-zero (Adam by lr-sized amounts); if the
    weight is bit-for-bit the same afterwards, the update was below half an ulp and rounded away.
    """
    lost = total = 0
    for old, new, grad in zip(before, after, grads, strict=True):
        if grad is None:
            continue
        moving = grad.detach() != 0
        total += int(torch.count_nonzero(moving))
        lost += int(torch.count_nonzero(moving & (old == new.detach())))
    return lost / total if total else 0.0


def count_nonfinite(tensors: Sequence[Tensor | None]) -> int:
    return sum(int(torch.count_nonzero(~torch.isfinite(t))) for t in tensors if t is not None)
