"""A grid problem's data: shuffled mini-batches of training samples, one per step, in epochs.

The FNO trains as Li et al. (2021) do: epochs over the N training samples, each epoch in a fresh
random order, `batch_size` samples per step (the tail of N that fills no batch waits for another
epoch's order). Built on the step loaders (`data.steps`), so step s's batch is a function of the
run seed and s alone:

    epoch, position = divmod(s, steps_per_epoch)            steps_per_epoch = N // batch_size
    order = randperm(N, seed_stream(seed, "grid_epoch", epoch))
    batch = order[position * batch_size : (position + 1) * batch_size]

which makes the batches seeded, identical on any machine, and resumable (the loader's state is
the next step; nothing else to restore). Under DDP the distributed sampler (`StepSampler`) deals
each step's samples to the ranks, disjoint shares of one batch. The batch is a dict, float64 on
the CPU in physical units (the module normalises and casts it):

    {"inputs": (b, C_in, *grid), "outputs": (b, C_out, *grid)}
"""

from __future__ import annotations

import torch
from torch import Tensor

from mpsciml.data.steps import StepDataModule, StepDataset
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem
from mpsciml.seeding import torch_generator

GridBatch = dict[str, Tensor]


class SamplesPerStep(StepDataset):
    """Item (step, slot) -> training sample `slot` of the step's batch."""

    def __init__(self, data: GridData, seed: int, steps: int, batch_size: int) -> None:
        super().__init__(steps, min(batch_size, data.n_samples))
        self.data, self.seed = data, seed
        self.steps_per_epoch = data.n_samples // self.items_per_step
        self._order: tuple[int, Tensor] | None = None

    def order(self, epoch: int) -> Tensor:
        """The epoch's permutation of the training samples (the last one is kept)."""
        if self._order is None or self._order[0] != epoch:
            generator = torch_generator(self.seed, "grid_epoch", epoch)
            self._order = (epoch, torch.randperm(self.data.n_samples, generator=generator))
        return self._order[1]

    def samples(self, step: int) -> Tensor:
        """The training samples of `step`, in slot order."""
        epoch, position = divmod(step, self.steps_per_epoch)
        size = self.items_per_step
        return self.order(epoch)[position * size : (position + 1) * size]

    def step_items(self, step: int, slots: Tensor) -> GridBatch:
        samples = self.samples(step)[slots]
        return {"inputs": self.data.inputs[samples], "outputs": self.data.outputs[samples]}


class GridBatches(StepDataModule):
    """The DataModule of operator learning on grids: each training batch is one step's samples
    (a rank's share of them under DDP), as `SamplesPerStep` draws them."""

    share_key = "problem.batch_size"

    def __init__(self, problem: GridOperatorProblem, seed: int, max_steps: int) -> None:
        super().__init__(max_steps)
        self.problem, self.seed = problem, seed
        self.train = problem.train_data()

    @property
    def steps_per_epoch(self) -> int:
        return self.train.n_samples // min(self.problem.batch_size, self.train.n_samples)

    def step_dataset(self) -> SamplesPerStep:
        return SamplesPerStep(self.train, self.seed, self.max_steps, self.problem.batch_size)
