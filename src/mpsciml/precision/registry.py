"""The six precisions a user can ask for, and everything each one promises, in one table.

This table is the one source of truth: the plugin asks a spec which loss scaler runs, whether
derivatives are seeded, what L-BFGS falls back to, and never compares names; the order of
`PRECISIONS` is the order every report, figure and test lists precisions in.

`lightning` names the nearest Lightning precision string, for reference and display only: the
run itself uses our `SciMLPrecision` plugin, which keeps these promises on every device
(Lightning's `16-mixed` silently becomes bf16 on the CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch


class LossScaler(StrEnum):
    """Which loss scaler a precision needs (it runs while `precision.loss_scaling` is on)."""

    #: no scaler: the gradients have fp32's range (or more)
    NONE = "none"
    #: `torch.amp.GradScaler`: fp16 compute with fp32 master weights and gradients
    GRAD_SCALER = "grad_scaler"
    #: our `DynamicLossScaler`: fp16 gradients, which GradScaler refuses to unscale
    DYNAMIC = "dynamic"


@dataclass(frozen=True)
class PrecisionSpec:
    """What a precision promises.

    `seeds_derivatives`: the compute has fp16's narrow range, so input derivatives are seeded
    per order (see `DerivativeScaler`) while `precision.derivative_scaling` is on.
    `full_precision`: the precision this one falls back to where low precision cannot serve
    (L-BFGS's line search, layers whose policy keeps them full): itself for fp32 and fp64.
    """

    name: str
    lightning: str
    param_dtype: torch.dtype
    compute_dtype: torch.dtype
    scaler: LossScaler
    seeds_derivatives: bool
    full_precision: str

    def __post_init__(self) -> None:
        fp32_grads = self.param_dtype == torch.float32
        if self.scaler is LossScaler.GRAD_SCALER and not fp32_grads:
            raise ValueError(f"{self.name}: GradScaler needs fp32 weights, not {self.param_dtype}")
        if self.scaler is LossScaler.DYNAMIC and self.param_dtype != torch.float16:
            raise ValueError(f"{self.name}: the dynamic scaler is for fp16 weights")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast runs in, for the mixed modes (weights stay high, matmuls low)."""
        return self.compute_dtype if self.compute_dtype != self.param_dtype else None

    @property
    def is_full(self) -> bool:
        """Whether this precision is its own full precision (L-BFGS may run in it)."""
        return self.full_precision == self.name

    @property
    def full_dtype(self) -> torch.dtype:
        """The dtype of the full precision: what layers that stay full keep (fp64 in fp64)."""
        return PRECISIONS[self.full_precision].param_dtype


_F64, _F32, _F16, _BF16 = torch.float64, torch.float32, torch.float16, torch.bfloat16
_NONE, _GRAD, _DYNAMIC = LossScaler.NONE, LossScaler.GRAD_SCALER, LossScaler.DYNAMIC

#: THE order of precisions: highest first, then mixed before pure, fp16 before bf16.
PRECISIONS: dict[str, PrecisionSpec] = {
    spec.name: spec
    for spec in (
        PrecisionSpec("fp64", "64-true", _F64, _F64, _NONE, False, "fp64"),
        PrecisionSpec("fp32", "32-true", _F32, _F32, _NONE, False, "fp32"),
        PrecisionSpec("mixed", "16-mixed", _F32, _F16, _GRAD, True, "fp32"),
        PrecisionSpec("bf16_mixed", "bf16-mixed", _F32, _BF16, _NONE, False, "fp32"),
        PrecisionSpec("fp16", "16-true", _F16, _F16, _DYNAMIC, True, "fp32"),
        PrecisionSpec("bf16", "bf16-true", _BF16, _BF16, _NONE, False, "fp32"),
    )
}
for _spec in PRECISIONS.values():  # a fallback that is not itself full would chain fallbacks
    if not PRECISIONS[_spec.full_precision].is_full:
        raise ValueError(f"{_spec.name}: full_precision={_spec.full_precision!r} is not full")


#: `precision=auto`: not a precision but a request to measure the candidates and pick one
#: (`precision.auto_probe`). It never reaches this table: compose.build replaces it by the chosen
#: precision before anything asks for a spec, so `get_spec("auto")` is an error like any typo.
AUTO = "auto"


def get_spec(name: str) -> PrecisionSpec:
    if name not in PRECISIONS:
        raise ValueError(
            f"precision.name={name!r} is not a precision; allowed: {', '.join(PRECISIONS)}"
        )
    return PRECISIONS[name]


def precision_rank(name: str) -> tuple[int, str]:
    """Sort key in the registry's order; names it does not know come last, alphabetically."""
    order = list(PRECISIONS)
    return (order.index(name) if name in order else len(order), name)


def resolve_device(accelerator: str) -> str:
    """The device type Lightning will pick for `accelerator`, needed before the Trainer exists."""
    if accelerator in ("gpu", "cuda"):
        return "cuda"
    if accelerator == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"
