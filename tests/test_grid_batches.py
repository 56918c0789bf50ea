"""Mini-batches of a grid problem: every epoch a seeded permutation of the training samples,
`batch_size` per step, identical for the same seed, resumable mid-epoch, shared by DDP ranks."""

from __future__ import annotations

import pytest
import torch

from mpsciml.data.grid_batches import GridBatches, SamplesPerStep
from mpsciml.data.steps import StepLoader, StepSampler
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem


class Numbered(GridOperatorProblem):
    """Sample i is the constant field i (input) and -i (output): a batch shows its samples."""

    input_names = ("a",)
    output_names = ("u",)
    coordinate_names = ("x",)
    grid_layout = "periodic"

    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        values = torch.arange(n, dtype=torch.float64).reshape(n, 1, 1).expand(n, 1, resolution)
        return GridData(values.clone(), -values.clone())


def problem(n_train: int = 10, batch_size: int = 4) -> Numbered:
    return Numbered(n_train=n_train, n_test=2, resolution=4, batch_size=batch_size)


def sample_ids(batch: dict[str, torch.Tensor]) -> list[int]:
    assert batch["inputs"].shape[1:] == (1, 4) and batch["outputs"].shape[1:] == (1, 4)
    torch.testing.assert_close(batch["outputs"], -batch["inputs"])  # pairs stay together
    return [int(v) for v in batch["inputs"][:, 0, 0]]


def batches(datamodule: GridBatches) -> list[list[int]]:
    return [sample_ids(batch) for batch in datamodule.train_dataloader()]


def test_each_epoch_is_a_seeded_permutation_without_the_tail():
    """10 samples in batches of 4: 2 steps per epoch, 8 distinct samples, a new order each
    epoch; the same seed gives the same batches, another seed others."""
    steps = batches(GridBatches(problem(), seed=0, max_steps=6))
    assert len(steps) == 6 and all(len(step) == 4 for step in steps)
    epochs = [steps[0] + steps[1], steps[2] + steps[3], steps[4] + steps[5]]
    for epoch in epochs:
        assert len(set(epoch)) == 8 and set(epoch) <= set(range(10))
    assert epochs[0] != epochs[1] != epochs[2]
    assert batches(GridBatches(problem(), seed=0, max_steps=6)) == steps
    assert batches(GridBatches(problem(), seed=1, max_steps=6)) != steps


def test_every_sample_once_per_epoch_when_the_batch_divides_it():
    steps = batches(GridBatches(problem(n_train=12, batch_size=4), seed=3, max_steps=3))
    assert sorted(i for step in steps for i in step) == list(range(12))


def test_a_batch_larger_than_the_training_set_is_the_whole_set():
    datamodule = GridBatches(problem(n_train=3, batch_size=20), seed=0, max_steps=2)
    assert datamodule.steps_per_epoch == 1
    assert [sorted(step) for step in batches(datamodule)] == [[0, 1, 2], [0, 1, 2]]


def test_a_resumed_loader_continues_with_the_same_batches():
    datamodule = GridBatches(problem(), seed=0, max_steps=7)
    whole = batches(datamodule)
    loader = datamodule.train_dataloader()
    first = [sample_ids(batch) for _, batch in zip(range(3), loader, strict=False)]
    state = loader.state_dict()
    assert state == {"next_step": 3}
    resumed = datamodule.train_dataloader()
    resumed.load_state_dict(state)
    assert first + [sample_ids(batch) for batch in resumed] == whole


def test_ranks_share_each_step_disjointly():
    data = problem().train_data()
    shares = []
    for rank in range(2):
        dataset = SamplesPerStep(data, seed=0, steps=4, batch_size=4)
        sampler = StepSampler(dataset, num_replicas=2, rank=rank)
        shares.append([sample_ids(b) for b in StepLoader(dataset, sampler=sampler)])
    single = SamplesPerStep(data, seed=0, steps=4, batch_size=4)
    for step in range(4):
        together = shares[0][step] + shares[1][step]
        assert sorted(together) == sorted(int(i) for i in single.samples(step))


def test_ranks_share_uneven_batches_but_none_is_left_empty():
    datamodule = GridBatches(problem(batch_size=3), seed=0, max_steps=2)
    datamodule.trainer = type("FakeTrainer", (), {"world_size": 2, "global_rank": 1})()
    assert len(sample_ids(next(iter(datamodule.train_dataloader())))) == 1
    datamodule.trainer = type("FakeTrainer", (), {"world_size": 4, "global_rank": 0})()
    with pytest.raises(ValueError, match=r"problem\.batch_size=3 is fewer than the 4 processes"):
        datamodule.train_dataloader()
