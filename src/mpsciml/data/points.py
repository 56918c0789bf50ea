"""A PINN's data: the collocation points of every condition, per training step.

Fixed points are one draw for the whole run. With `resample_every = N` fresh points are drawn at
steps N, 2N, ... (a fixed set of ~2000 points is ~0.04 apart, while Burgers' shock is ~0.003
wide; moving the points lets the residual see the shock from many sides), but never in an
L-BFGS phase, which needs one fixed objective: from `freeze_at` (the step L-BFGS takes over) the
last draw stays. The draw for step r is `problem.conditions(seed_stream(seed, "conditions", r))`,
so the points of any step are known from the seed alone, which is what makes a resumed run
continue exactly.

Under DDP each rank trains on its slice of every condition's points, points r, r + W, ... of
the step's draw (rank r of W; uneven slices when W does not divide a condition's count): the
draw is a function of the seed alone, the slice of rank and world size, so the ranks together
evaluate exactly the points of a 1-process run. The module weights each rank's residuals by the
global point count and its L-BFGS closure returns the all-reduced loss
(`mpsciml.distributed.integrity`), so every rank takes the same line-search decisions and the
weights stay identical.
"""

from __future__ import annotations

from torch import Tensor

from mpsciml.data.steps import StepDataModule, StepDataset
from mpsciml.problems.base import Condition, Problem, values_key
from mpsciml.seeding import seed_stream

#: one step's batch: the points of each condition, float64 on the CPU, by condition name (and a
#: data condition's observed values under `values_key(name)`)
PointsBatch = dict[str, Tensor]


def draw_conditions(problem: Problem, seed: int, draw: int = 0) -> dict[str, Condition]:
    """The conditions with the points drawn at step `draw` (0: the run's first points)."""
    return problem.training_conditions(seed_stream(seed, "conditions", draw))


def draw_step(step: int, resample_every: int | None, freeze_at: int | None = None) -> int:
    """The step whose draw of points step `step` trains on."""
    if not resample_every:
        return 0
    if freeze_at is not None:
        step = min(step, freeze_at - 1)
    return max(step, 0) // resample_every * resample_every


class PointsPerStep(StepDataset):
    """Item (step, rank) -> that rank's slice of the points of that step (all of them with one
    share). The last draw is kept, so fixed points are the same tensors every step (nothing is
    copied to the device again)."""

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
        self._last: tuple[int, int, PointsBatch] | None = None

    def step_items(self, step: int, slots: Tensor) -> PointsBatch:
        draw = draw_step(step, self.resample_every, self.freeze_at)
        if len(slots) != 1:
            raise ValueError(f"a rank takes one share of a step's points, got slots {slots}")
        share = int(slots[0])
        if self._last is None or self._last[:2] != (draw, share):
            conditions = draw_conditions(self.problem, self.seed, draw)
            points = {name: self.slice(name, c.points, share) for name, c in conditions.items()}
            points |= {  # a data condition's observed values, sliced as its points
                values_key(name): self.slice(name, c.values, share)
                for name, c in conditions.items()
                if c.values is not None
            }
            self._last = (draw, share, points)
        return self._last[2]

    def slice(self, name: str, points: Tensor, share: int) -> Tensor:
        """Share `share`'s points of a condition: every point with one share."""
        if self.items_per_step == 1:
            return points
        ranks = self.items_per_step
        if len(points) < ranks:
            raise ValueError(
                f"condition {name!r} has {len(points)} points, fewer than the {ranks} processes "
                "that share them: each needs at least one (draw more points)"
            )
        return points[share::ranks].contiguous()


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
