"""Which derivative engine a run asked for and which one it runs, decided once and recorded.

Taylor mode propagates through plain stacks of Linear layers and known activations only; any
other model, and every operator problem (derivatives through the model's query-point input), takes
autograd instead. That substitution changes speed, not results, but a run must never hide it:
the choice is made when the module is built, a fallback is logged in one line with its reason,
and `summary.json` and the W&B config carry `{requested, used, reason}`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

from torch import nn

from mpsciml.derivatives.taylor import taylor_refusal
from mpsciml.precision.policy import find_policies

log = logging.getLogger(__name__)

ENGINES = ("autograd", "taylor")


@dataclass(frozen=True)
class DerivativeEngine:
    """The engine asked for (`derivatives=`), the one that runs, and why they differ (None:
    they do not)."""

    requested: str
    used: str
    reason: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


def check_engine(requested: str) -> None:
    if requested not in ENGINES:
        raise ValueError(f"derivatives={requested!r} is unknown; allowed: {', '.join(ENGINES)}")


def fallback(requested: str, reason: str) -> DerivativeEngine:
    """Autograd in place of `requested`, logged once with the reason."""
    log.warning("derivatives=%s is not possible here (%s): using autograd", requested, reason)
    return DerivativeEngine(requested, "autograd", reason)


def taylor_blocker(model: nn.Module) -> str | None:
    """Why Taylor mode cannot train `model` for a whole run (None: it can).

    A layer with a precision policy is refused here, once: the plugin runs it through forward
    hooks (casts, no autocast) that it attaches only later, which then refuse every step.
    """
    policies = find_policies(model)
    if policies:
        return f"layer {next(iter(policies)) or type(model).__name__!r} declares a precision policy"
    return taylor_refusal(model)


#: why a compiled step substitutes Taylor mode for autograd (summary.json `derivatives.reason`)
COMPILE_REASON = (
    "compile=true: torch.compile cannot differentiate twice (nested autograd), so the compiled "
    "step runs forward (Taylor) mode"
)


def choose_pointwise_engine(
    requested: str, model: nn.Module, compiled: bool = False
) -> DerivativeEngine:
    """Taylor mode if asked and the model's structure allows it, else autograd (recorded).

    Forward hooks added later (the precision probe watches the first step's matmul) send single
    steps through autograd so the hook sees the real forward; that is not a fallback of the run.
    `compiled`: the step is compiled, which needs Taylor mode; autograd asked for is replaced
    (logged in one line, recorded), and a model Taylor mode cannot run through is a ValueError
    (the factory refuses it before this, naming the model option).
    """
    check_engine(requested)
    if compiled:
        reason = taylor_blocker(model)
        if reason is not None:
            raise ValueError(f"compile=true needs Taylor-mode derivatives: {reason}")
        if requested == "autograd":
            log.info("derivatives=autograd -> taylor (%s)", COMPILE_REASON)
            return DerivativeEngine(requested, "taylor", COMPILE_REASON)
        return DerivativeEngine(requested, requested)
    if requested == "autograd":
        return DerivativeEngine(requested, requested)
    reason = taylor_blocker(model)
    if reason is not None:
        return fallback(requested, f"{reason}; Taylor mode runs through MLPs only")
    return DerivativeEngine(requested, requested)


def choose_operator_engine(requested: str) -> DerivativeEngine:
    """Operator problems differentiate through the model's query-point input with autograd."""
    check_engine(requested)
    if requested == "autograd":
        return DerivativeEngine(requested, requested)
    return fallback(
        requested, "operator models are differentiated w.r.t. their query points by autograd"
    )
