"""An operator problem's data: mini-batches of training functions, one per step.

Step s trains on `functions_per_step` of the N training functions (all N when it is null),
chosen by `seed_stream(seed, "functions", s)`. Each function comes with what the loss needs of
it: its sensor values (branch), its data pairs (all of them, or `data_points_per_function` grid
points drawn per step), and for each physics condition its collocation points with the known
values there (all of them, or `physics_points_per_function` of its pool drawn per step). The
item of the dataset is one function of one step (`StepDataset`), so under DDP the distributed
sampler (`StepSampler`) deals each step's functions to the ranks, disjoint shares of one batch.

Every draw is made for the step's whole batch and the rank's share taken from it, so a function
gets the same points whatever the number of ranks. The batch is a nested dict, float64 on the
CPU (the module casts it to its dtype):

    {"data": {"branch": (b, m), "trunk": (P, d), "outputs": (b, P, out)}      every grid point
     or      {"branch": (b, m), "points": (R, d), "index": (R,), "outputs": (R, out)},  rows
     "physics": {"branch": (b, m), "points": {name: (b, q, d)}, "known": {name: (b, q, k)}}}

where `index` numbers the batch's functions 0..b-1. When a step takes every function and draws
no points, the batch is the dataset's own tensors, the same objects every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from mpsciml.data.steps import StepDataModule, StepDataset
from mpsciml.problems.operator import OperatorCondition, OperatorData, OperatorProblem
from mpsciml.seeding import torch_generator

FunctionBatch = dict[str, dict[str, Any]]


class FunctionsPerStep(StepDataset):
    """Item (step, slot) -> training function `slot` of the step's batch."""

    def __init__(
        self,
        problem: OperatorProblem,
        seed: int,
        steps: int,
        train: OperatorData | None,
        physics_branch: Tensor | None,
        conditions: Mapping[str, OperatorCondition],
    ) -> None:
        n_functions = train.n_functions if train is not None else _rows(physics_branch)
        per_step = problem.functions_per_step
        super().__init__(steps, n_functions if per_step is None else min(per_step, n_functions))
        self.n_functions = n_functions
        self.problem, self.seed = problem, seed
        self.train, self.physics_branch, self.conditions = train, physics_branch, dict(conditions)

    def functions(self, step: int) -> Tensor:
        """The step's training functions, in slot order."""
        if self.items_per_step == self.n_functions:
            return torch.arange(self.n_functions)
        generator = torch_generator(self.seed, "functions", step)
        return torch.randperm(self.n_functions, generator=generator)[: self.items_per_step]

    def step_items(self, step: int, slots: Tensor) -> FunctionBatch:
        functions = self.functions(step)[slots]
        every = len(slots) == self.n_functions  # every function, in order: no gather needed
        batch: FunctionBatch = {}
        if self.train is not None:
            batch["data"] = self._data(step, slots, None if every else functions)
        if self.conditions:
            batch["physics"] = self._physics(step, slots, None if every else functions)
        return batch

    def _data(self, step: int, slots: Tensor, functions: Tensor | None) -> dict[str, Tensor]:
        data = self.train
        assert data is not None
        branch = data.branch if functions is None else data.branch[functions]
        if data.index is not None:
            return {"branch": branch, **_rows_of(data, functions)}
        outputs = data.outputs if functions is None else data.outputs[functions]
        per_function = self.problem.data_points_per_function
        if per_function is None:
            return {"branch": branch, "trunk": data.trunk, "outputs": outputs}
        n_points = data.trunk.shape[0]
        per_function = min(per_function, n_points)  # drawn with replacement
        generator = torch_generator(self.seed, "data_points", step)
        shape = (self.items_per_step, per_function)
        columns = torch.randint(0, n_points, shape, generator=generator)[slots].flatten()
        index = torch.arange(len(slots)).repeat_interleave(per_function)
        return {
            "branch": branch,
            "points": data.trunk[columns],
            "index": index,
            "outputs": outputs[index, columns],
        }

    def _physics(self, step: int, slots: Tensor, functions: Tensor | None) -> dict[str, Any]:
        assert self.physics_branch is not None
        branch = self.physics_branch if functions is None else self.physics_branch[functions]
        points, known = {}, {}
        for name, condition in self.conditions.items():
            pool, values = condition.points, condition.known
            if functions is not None:
                pool, values = pool[functions], values[functions]
            pool, values = self._physics_points(name, step, slots, pool, values)
            points[name], known[name] = pool, values
        return {"branch": branch, "points": points, "known": known}

    def _physics_points(
        self, name: str, step: int, slots: Tensor, pool: Tensor, known: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`physics_points_per_function` distinct points of each function's pool (all if null)."""
        per_function = self.problem.physics_points_per_function
        size = pool.shape[1]
        if per_function is None or per_function >= size:
            return pool, known
        generator = torch_generator(self.seed, "physics_points", name, step)
        order = torch.rand(self.items_per_step, size, generator=generator).argsort(dim=1)
        pick = order[slots, :per_function].unsqueeze(-1)
        return (
            torch.gather(pool, 1, pick.expand(-1, -1, pool.shape[-1])),
            torch.gather(known, 1, pick.expand(-1, -1, known.shape[-1])),
        )


def _rows(branch: Tensor | None) -> int:
    if branch is None:
        raise ValueError("an operator problem with physics conditions must give physics_branch()")
    return branch.shape[0]


def _rows_of(data: OperatorData, functions: Tensor | None) -> dict[str, Tensor]:
    """The unaligned rows of the given functions, their index renumbered to batch positions."""
    assert data.index is not None
    if functions is None:
        return {"points": data.trunk, "index": data.index, "outputs": data.outputs}
    position = torch.full((data.n_functions,), -1, dtype=torch.long)
    position[functions] = torch.arange(len(functions))
    rows = position[data.index] >= 0
    return {
        "points": data.trunk[rows],
        "index": position[data.index[rows]],
        "outputs": data.outputs[rows],
    }


class FunctionBatches(StepDataModule):
    """The DataModule of operator learning: each training batch is one step's functions (a
    rank's share of them under DDP), as `FunctionsPerStep` assembles them."""

    share_key = "problem.functions_per_step"

    def __init__(self, problem: OperatorProblem, seed: int, max_steps: int) -> None:
        super().__init__(max_steps)
        self.problem, self.seed = problem, seed
        self.train = problem.train_data()
        self.conditions = dict(problem.physics_conditions())
        self.physics_branch = problem.physics_branch() if self.conditions else None
        if self.train is None and not self.conditions:
            raise ValueError(f"problem {problem.name} gives neither training data nor physics")

    def step_dataset(self) -> FunctionsPerStep:
        return FunctionsPerStep(
            self.problem,
            self.seed,
            self.max_steps,
            self.train,
            self.physics_branch,
            self.conditions,
        )
