"""Unknown PDE coefficients as trainable parameters, in fp32 master precision in every run.

Why a module of their own: a coefficient is one scalar that the optimiser moves by ~1e-3 per
step; in a pure fp16 run it would be rounded to fp16 (C2 = 0.01 has an fp16 spacing of ~1e-5,
but C1 = 1 one of 1e-3, so every Adam step would be lost to rounding). Held in a small
`nn.Module` that declares `precision_policy = "fp32"` and is attached to the PINN module (not to
the network, which stays a plain MLP for Taylor mode), the precision plugin keeps them in fp32
(fp64 in an fp64 run) when it casts everything else; Adam updates them with the network in one
optimiser (fused in fp32 runs, foreach next to half weights, both per dtype group), L-BFGS
with the rest, DDP averages their gradients like any other, and checkpoints hold them, so
`resume=` continues them exactly. The problem reads them through its `Coefficients`, cast to
the residual's assembly dtype (fp32 at least), so their gradient is an fp32 gradient.

What a run reports: `train/unknown_<name>` on the steps the loggers write, and summary.json
`unknowns`: {name: {initial, final, true, relative_error, dtype}}.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from mpsciml.log_steps import is_log_step
from mpsciml.problems.coefficients import Coefficients, relative_error


class UnknownCoefficients(nn.Module):
    """One scalar parameter per unknown coefficient, kept full precision by the plugin."""

    precision_policy = "fp32"

    def __init__(self, initial: Mapping[str, float]) -> None:
        super().__init__()
        self.values = nn.ParameterDict(
            {name: nn.Parameter(torch.tensor(float(v))) for name, v in initial.items()}
        )

    def current(self) -> dict[str, float]:
        return {name: float(value.detach()) for name, value in self.values.items()}


class LogUnknowns(pl.Callback):
    """`train/unknown_<name>` after the optimiser step, on the steps the loggers write."""

    def __init__(self, unknowns: UnknownCoefficients) -> None:
        self.unknowns = unknowns

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any
    ) -> None:
        if not is_log_step(trainer):
            return
        for name, value in self.unknowns.values.items():
            pl_module.log(f"train/unknown_{name}", value.detach().float(), batch_size=1)


def attach_unknowns(module: Any, problem: Any) -> UnknownCoefficients | None:
    """The parameters of the problem's unknown coefficients (None if it has none), bound to
    the problem's `Coefficients`, logged and reported by `module` (a `SciMLModule`)."""
    coefficients = getattr(problem, "coefficients", None)
    if not isinstance(coefficients, Coefficients) or not coefficients.initial:
        return None
    unknowns = UnknownCoefficients(coefficients.initial)
    coefficients.bind(unknowns.values)
    module.strategy_callbacks.append(LogUnknowns(unknowns))
    # a partial of a module-level function, not a lambda: the module must pickle (the precision
    # probe and the compiled step copy it)
    module.summary_parts["unknowns"] = partial(report, unknowns, coefficients)
    return unknowns


def report(unknowns: UnknownCoefficients, coefficients: Coefficients) -> dict[str, Any]:
    """summary.json `unknowns`: where each coefficient started, ended and should be."""
    facts = {}
    for name, parameter in unknowns.values.items():
        final, true = float(parameter.detach()), coefficients.true.get(name)
        facts[name] = {
            "initial": coefficients.initial[name],
            "final": final,
            "true": true,
            "relative_error": relative_error(final, true),
            "dtype": str(parameter.dtype).removeprefix("torch."),
        }
    return facts
