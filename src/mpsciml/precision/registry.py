"""The six precisions a user can ask for: what each promises, in one table.

`lightning` names the nearest Lightning precision string, for reference and display only: the
run itself uses our `SciMLPrecision` plugin, which keeps these promises on every device
(Lightning's `16-mixed` silently becomes bf16 on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrecisionSpec:
    """What a precision promises: the dtype of the weights and of the compute. (Whether a loss
    scaler runs is the plugin's decision: `precision.loss_scaling` for mixed and fp16.)"""

    name: str
    lightning: str
    param_dtype: torch.dtype
    compute_dtype: torch.dtype


PRECISIONS: dict[str, PrecisionSpec] = {
    spec.name: spec
    for spec in (
        PrecisionSpec("fp64", "64-true", torch.float64, torch.float64),
        PrecisionSpec("fp32", "32-true", torch.float32, torch.float32),
        PrecisionSpec("mixed", "16-mixed", torch.float32, torch.float16),
        PrecisionSpec("bf16_mixed", "bf16-mixed", torch.float32, torch.bfloat16),
        PrecisionSpec("fp16", "16-true", torch.float16, torch.float16),
        PrecisionSpec("bf16", "bf16-true", torch.bfloat16, torch.bfloat16),
    )
}


def get_spec(name: str) -> PrecisionSpec:
    if name not in PRECISIONS:
        raise ValueError(
            f"precision.name={name!r} is not a precision; allowed: {', '.join(PRECISIONS)}"
        )
    return PRECISIONS[name]


def resolve_device(accelerator: str) -> str:
    """The device type Lightning will pick for `accelerator`, needed before the Trainer exists."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"
