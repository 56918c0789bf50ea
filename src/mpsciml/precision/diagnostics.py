"""What low precision does to a training step, measured on the tensors themselves.

Two failure modes of pure fp16 named by Hayford et al.: gradients that underflow to zero, and
weight updates smaller than half a unit in the last place of the weight, which round away so the
weight never moves. Both are measured on demand (every N steps) because they read every parameter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: The yardstick of every gradient whose layer has no precision policy: fp16, the narrowest range.
#: In fp16 and mixed runs it is what happens; in the others, what fp16 would have done.
YARDSTICK = torch.float16


def underflow_threshold(dtype: torch.dtype) -> float:
    """Half the smallest subnormal of `dtype`: a value below it rounds to zero in `dtype`."""
    info = torch.finfo(dtype)
    return info.tiny * info.eps / 2


def gradient_underflow_fraction(
    grads: Sequence[Tensor | None], yardsticks: Sequence[torch.dtype] | None = None
) -> float:
    """Fraction of gradient entries that are zero, or would round to zero in their yardstick.

    Each gradient is measured against its own yardstick dtype (fp16 unless given): a layer that a
    precision policy keeps in fp32 is measured against fp32, where its gradients live, not against
    fp16, which they never pass through. The comparison runs in float64, where the thresholds of
    fp16, bf16 and fp32 are representable (2^-25 is 0 in fp16: compared in fp16, not even an fp16
    gradient's zeros would count).
    """
    if yardsticks is None:
        yardsticks = [YARDSTICK] * len(grads)
    small = total = 0
    for grad, yardstick in zip(grads, yardsticks, strict=True):
        if grad is None:
            continue
        magnitude = grad.detach().abs().to(torch.float64)
        small += int(torch.count_nonzero(magnitude < underflow_threshold(yardstick)))
        total += grad.numel()
    return small / total if total else 0.0


def lost_update_fraction(
    before: Sequence[Tensor], after: Sequence[Tensor], grads: Sequence[Tensor | None]
) -> float:
    """Fraction of weights with a non-zero gradient that the optimizer step left unchanged.

    An optimizer moves every weight whose gradient is non-zero (Adam by lr-sized amounts); if the
    weight is bit-for-bit the same afterwards, the update was below half an ulp and rounded away.
    Bitwise, so each weight is judged in its own dtype (an fp32 layer of an fp16 run in fp32).
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
