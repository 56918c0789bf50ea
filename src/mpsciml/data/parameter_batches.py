"""A data-free problem's data: fresh parameter fields every step, drawn from the seed and step.

A data-free solver (DiffNet) has no training set: step s trains on `problem.batch_size` parameter
fields (Poisson's diffusivity, Burgers' initial condition) that the problem draws for it,

    item k of step s = problem.parameter_fields(seed, s, [k])     (its own random stream)

a pure function of the run seed, the step and the slot. So the batches are the same on any
machine, a resumed run continues exactly (the loader's state is the next step, `data.steps`),
and under DDP each rank draws only its own slots (the `StepSampler` deals a step's items
round-robin: rank r of W gets r, r + W, ..., also when W does not divide the batch) and the
ranks together train on exactly the fields a 1-process run draws. Nothing is generated and
thrown away: the batch is built from the rank's slots in one call.

Fresh fields every step are the data-free method's infinite training set (the network never
sees a field twice, so it cannot overfit a sample). An L-BFGS phase needs one fixed objective
for its line searches and history, so from `freeze_at` (the step L-BFGS takes over; 0 for an
L-BFGS-only run) every step trains on the fields of step `freeze_at`.

The batch is a dict, float64 on the CPU (the module casts it): {"inputs": (b, C_in, *grid)}.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mpsciml.data.steps import StepDataModule, StepDataset

ParameterBatch = dict[str, Tensor]


def draw_step(step: int, freeze_at: int | None) -> int:
    """The step whose fields step `step` trains on: itself, or `freeze_at` from there on."""
    return step if freeze_at is None else min(step, freeze_at)


class FieldsPerStep(StepDataset):
    """Item (step, slot) -> parameter field `slot` of the step's batch. The last batch is kept,
    so a frozen phase hands out the same tensor every step (cast and moved once)."""

    def __init__(self, problem: Any, seed: int, steps: int, freeze_at: int | None = None) -> None:
        super().__init__(steps, problem.batch_size)
        self.problem, self.seed, self.freeze_at = problem, seed, freeze_at
        self._last: tuple[int, tuple[int, ...], ParameterBatch] | None = None

    def step_items(self, step: int, slots: Tensor) -> ParameterBatch:
        draw, key = draw_step(step, self.freeze_at), tuple(slots.tolist())
        if self._last is None or self._last[:2] != (draw, key):
            fields = self.problem.parameter_fields(self.seed, draw, slots)
            self._last = (draw, key, {"inputs": fields})
        return self._last[2]


class ParameterBatches(StepDataModule):
    """The DataModule of data-free grid problems: each training batch is one step's parameter
    fields (a rank's share of them under DDP: `StepSampler` hands each rank its slots of the
    step as one batch), as `FieldsPerStep` draws them."""

    share_key = "problem.batch_size"

    def __init__(
        self, problem: Any, seed: int, max_steps: int, freeze_at: int | None = None
    ) -> None:
        super().__init__(max_steps)
        self.problem, self.seed, self.freeze_at = problem, seed, freeze_at

    def step_dataset(self) -> FieldsPerStep:
        return FieldsPerStep(self.problem, self.seed, self.max_steps, self.freeze_at)
