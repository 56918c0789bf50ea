"""The six precisions a user can ask for, and how each becomes Lightning trainer arguments.

The point of this file is that `precision=mixed` means fp16 compute on every device. Lightning's
`precision="16-mixed"` silently becomes bf16 on the CPU; we hand it an explicit fp16
`MixedPrecision` plugin with a CPU `GradScaler` instead, so fp16 behaviour can be studied on a
laptop and what ran is what was asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning.plugins.precision import MixedPrecision


@dataclass(frozen=True)
class PrecisionSpec:
    """What a precision promises: the dtype of the weights, of the compute, and scaler use."""

    name: str
    lightning: str
    param_dtype: torch.dtype
    compute_dtype: torch.dtype
    uses_scaler: bool


PRECISIONS: dict[str, PrecisionSpec] = {
    spec.name: spec
    for spec in (
        PrecisionSpec("fp64", "64-true", torch.float64, torch.float64, False),
        PrecisionSpec("fp32", "32-true", torch.float32, torch.float32, False),
        PrecisionSpec("mixed", "16-mixed", torch.float32, torch.float16, True),
        PrecisionSpec("bf16_mixed", "bf16-mixed", torch.float32, torch.bfloat16, False),
        PrecisionSpec("fp16", "16-true", torch.float16, torch.float16, False),
        PrecisionSpec("bf16", "bf16-true", torch.bfloat16, torch.bfloat16, False),
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


def trainer_precision_kwargs(name: str, device: str, allow_tf32: bool = False) -> dict[str, Any]:
    """Keyword arguments for `pytorch_lightning.Trainer` that realise precision `name` on `device`.

    Also sets the global TF32 switches: fp32 means IEEE fp32 unless the user opts into TF32.
    """
    spec = get_spec(name)
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")
    if spec.name == "mixed" and device == "cpu":
        plugin = MixedPrecision("16-mixed", device="cpu", scaler=torch.amp.GradScaler("cpu"))
        return {"plugins": [plugin]}
    return {"precision": spec.lightning}
