"""A PINN's data: the collocation points of every condition, per training step.

Fixed points are one draw for the whole run. With `resample_every = N` fresh points are drawn at
steps N, 2N, ... (a fixed set of ~2000 points is ~0.04 apart, while Burgers' shock is ~0.003
wide; moving the points lets the residual see the shock from many sides), but never in an
L-BFGS phase, which needs one fixed objective: from `freeze_at` (the step L-BFGS takes over) the
last draw stays. The draw for step r is `problem.conditions(seed_stream(seed, "conditions", r))`,
so the points of any step are known from the seed alone, which is what makes a resumed run
continue exactly.

Every DDP rank trains on the same points (one item per rank and step): splitting them would
give each rank its own L-BFGS line search, and the ranks' weights would drift apart.
"""

from __future__ import annotations

from torch import Tensor

from mpsciml.data.steps import StepDataModule, StepDataset
from mpsciml.problems.base import Condition, Problem
from mpsciml.seeding import seed_stream

#: one step's batch: the points of each condition, float64 on the CPU, by condition name
PointsBatch = dict[str, Tensor]


def draw_conditions(problem: Problem, seed: int, draw: int = 0) -> dict[str, Condition]:
    """The conditions with the points drawn at step `draw` (0: the run's first points)."""
    return problem.conditions(seed_stream(seed, "conditions", draw))


def draw_step(step: int, resample_every: int | None, freeze_at: int | None = None) -> int:
    """The step whose draw of points step `step` trains on."""
    if not resample_every:
        return 0
    if freeze_at is not None:
        step = min(step, freeze_at - 1)
    return max(step, 0) // resample_every * resample_every


class PointsPerStep(StepDataset):
    """Item (step, rank share) -> the points of that step. The last draw is kept, so fixed points
    are the same tensors every step (nothing is copied to the device again)."""

    def __init__(
        self,
        problem: Problem,
        seed: int,
        steps: int,
        shares: int = 1,
        resample_every: int | None = None,
        freeze_at: int | None = None,
    ) -> None:
        super().__init__(steps, shares)
        self.problem, self.seed = problem, seed
        self.resample_every, self.freeze_at = resample_every, freeze_at
        self._last: tuple[int, PointsBatch] | None = None

    def step_items(self, step: int, slots: Tensor) -> PointsBatch:
        draw = draw_step(step, self.resample_every, self.freeze_at)
        if self._last is None or self._last[0] != draw:
            conditions = draw_conditions(self.problem, self.seed, draw)
            self._last = (draw, {name: c.points for name, c in conditions.items()})
        return self._last[1]


class CollocationPoints(StepDataModule):
    """The DataModule of a PINN: each training batch is {condition: points} for that step."""

    def __init__(
        self,
        problem: Problem,
        seed: int,
        max_steps: int,
        resample_every: int | None = None,
        freeze_at: int | None = None,
    ) -> None:
        super().__init__(max_steps)
        if resample_every is not None and resample_every < 1:
            raise ValueError(f"resample_every={resample_every} must be >= 1 (or null: fixed)")
        self.problem, self.seed = problem, seed
        self.resample_every, self.freeze_at = resample_every, freeze_at

    def step_dataset(self) -> PointsPerStep:
        return PointsPerStep(
            self.problem,
            self.seed,
            self.max_steps,
            shares=self.world_size,
            resample_every=self.resample_every,
            freeze_at=self.freeze_at,
        )
