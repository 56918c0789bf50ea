"""The DataModules: what each step's batch is, how DDP shares it, how the loader resumes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler

from mpsciml.data.functions import FunctionBatches, FunctionsPerStep
from mpsciml.data.points import CollocationPoints, PointsPerStep, draw_conditions, draw_step
from mpsciml.data.same_batch import SameBatchMemo
from mpsciml.data.steps import StepLoader, StepSampler
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.operator import OperatorCondition, OperatorData

N_FUNCTIONS, N_POINTS, POOL = 8, 6, 5


def burgers() -> Burgers:
    return Burgers(n_domain=32, n_boundary=8, n_initial=8)


# ------------------------------------------------------------------- PINN points
def test_draw_step_resamples_every_n_steps_until_lbfgs() -> None:
    assert [draw_step(s, None) for s in range(4)] == [0, 0, 0, 0]
    assert [draw_step(s, 2) for s in range(6)] == [0, 0, 2, 2, 4, 4]
    assert [draw_step(s, 2, freeze_at=3) for s in range(6)] == [0, 0, 2, 2, 2, 2]
    assert [draw_step(s, 1, freeze_at=0) for s in range(3)] == [0, 0, 0]


def test_fixed_points_are_the_first_draw_as_the_same_tensors() -> None:
    dataset = PointsPerStep(burgers(), seed=3, steps=4)
    first = draw_conditions(burgers(), 3)
    batches = [dataset[i] for i in range(4)]
    assert set(batches[0]) == {"pde", "bc", "ic"}
    for name, condition in first.items():
        assert torch.equal(batches[0][name], condition.points)
    assert all(b[name] is batches[0][name] for b in batches for name in b)


def test_resampled_points_depend_on_the_step_only() -> None:
    def points(step: int) -> torch.Tensor:
        dataset = PointsPerStep(burgers(), seed=3, steps=8, resample_every=2)
        return dataset[step]["pde"]

    assert torch.equal(points(2), points(3)) and not torch.equal(points(2), points(4))
    assert torch.equal(points(5), points(4))  # another instance, straight to step 5


def test_every_rank_walks_the_same_steps_with_its_slice_of_the_points() -> None:
    """Items are (step, rank): each rank gets every step, in order, with points r, r + W, ...
    of each condition's draw (uneven slices when W does not divide a count)."""
    for world in (2, 3):
        ranks = []
        for rank in range(world):
            dataset = PointsPerStep(burgers(), seed=0, steps=4, shares=world, resample_every=1)
            sampler = StepSampler(dataset, num_replicas=world, rank=rank)
            loader = StepLoader(dataset, batch_size=None, sampler=sampler)
            assert len(loader) == 4
            ranks.append(list(loader))
        for step in range(4):
            single = PointsPerStep(burgers(), seed=0, steps=4, resample_every=1)[step]
            for name, points in single.items():
                for rank in range(world):
                    assert torch.equal(ranks[rank][step][name], points[rank::world])


def test_a_condition_with_fewer_points_than_ranks_is_refused() -> None:
    dataset = PointsPerStep(Burgers(n_domain=32, n_boundary=2, n_initial=8), 0, 2, shares=3)
    with pytest.raises(ValueError, match="condition 'bc' has 2 points, fewer than the 3"):
        dataset[[0]]


def test_collocation_points_datamodule_validates_resample_every() -> None:
    with pytest.raises(ValueError, match="resample_every=0 must be >= 1"):
        CollocationPoints(burgers(), seed=0, max_steps=3, resample_every=0)


# ------------------------------------------------------------ operator functions
def operator_data(unaligned: bool = False) -> tuple[OperatorData, OperatorCondition]:
    """Function f has branch row f, outputs 100 f + p at grid point p, pool points f + q/10."""
    branch = torch.arange(N_FUNCTIONS, dtype=torch.float64)[:, None].repeat(1, 3)
    trunk = torch.linspace(0, 1, N_POINTS, dtype=torch.float64)[:, None]
    outputs = 100.0 * torch.arange(N_FUNCTIONS)[:, None] + torch.arange(N_POINTS)[None]
    data = OperatorData(branch, trunk, outputs.double()[..., None])
    if unaligned:
        index = torch.arange(N_FUNCTIONS).repeat_interleave(N_POINTS)
        rows = trunk.repeat(N_FUNCTIONS, 1)
        data = OperatorData(branch, rows, outputs.double().reshape(-1, 1), index)
    pool = torch.arange(N_FUNCTIONS)[:, None] + torch.arange(POOL)[None] / 10
    points = torch.stack([pool, -pool], dim=-1).double()
    condition = OperatorCondition(points, pool.double()[..., None], lambda d, known: known)
    return data, condition


def functions_datamodule(
    per_step: int | None = 4,
    data_points: int | None = 3,
    physics_points: int | None = 2,
    unaligned: bool = False,
) -> FunctionBatches:
    """Five steps of the data above, through a stand-in for an OperatorProblem."""
    data, condition = operator_data(unaligned)
    problem = SimpleNamespace(
        name="stand-in",
        functions_per_step=per_step,
        data_points_per_function=data_points,
        physics_points_per_function=physics_points,
        train_data=lambda: data,
        physics_conditions=lambda: {"pde": condition},
        physics_branch=lambda: data.branch,
    )
    return FunctionBatches(problem, seed=0, max_steps=5)


def functions_dataset(**options: int | bool | None) -> FunctionsPerStep:
    return functions_datamodule(**options).step_dataset()


def function_ids(batch: dict) -> list[int]:
    return batch["data"]["branch"][:, 0].long().tolist()


def test_each_step_takes_distinct_seeded_functions_with_their_own_data() -> None:
    loader = StepLoader(functions_dataset(), batch_size=4)
    batches = list(loader)
    assert len(batches) == len(loader) == 5
    ids = [function_ids(b) for b in batches]
    assert all(len(set(step)) == 4 for step in ids) and len({tuple(s) for s in ids}) > 1
    assert ids == [function_ids(b) for b in StepLoader(functions_dataset(), batch_size=4)]
    for batch in batches:
        data, physics = batch["data"], batch["physics"]
        function = data["branch"][data["index"], 0]
        column = (data["points"][:, 0] * (N_POINTS - 1)).round()
        torch.testing.assert_close(data["outputs"][:, 0], 100 * function + column)
        torch.testing.assert_close(physics["branch"], data["branch"])
        points, known = physics["points"]["pde"], physics["known"]["pde"]
        assert points.shape == (4, 2, 2)
        torch.testing.assert_close(points[..., 0].floor(), physics["branch"][:, :2])
        torch.testing.assert_close(known[..., 0], points[..., 0])


def test_step_sampler_is_a_distributed_sampler_in_step_order() -> None:
    """Lightning keeps a DistributedSampler it is given; ours yields one list per step, which
    for equal shares are the indices torch's deals unshuffled (Lightning's own would shuffle
    them across steps); uneven shares round-robin within each step; none is refused."""
    dataset = functions_dataset()
    for rank in range(2):
        ours = StepSampler(dataset, num_replicas=2, rank=rank)
        torchs = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        assert isinstance(ours, DistributedSampler) and len(ours) == 5
        assert [i for step in ours for i in step] == list(torchs)
    shares = [list(StepSampler(dataset, num_replicas=3, rank=r))[1] for r in range(3)]
    assert shares == [[4, 7], [5], [6]]
    with pytest.raises(ValueError, match="items=4 is fewer than the 5 processes"):
        StepSampler(dataset, num_replicas=5)


def test_ddp_ranks_get_disjoint_halves_of_each_step_with_the_same_draws() -> None:
    """Under DDP with 2 ranks, rank r takes items r, r + 2, ... of each step; each function
    arrives with the points it gets in a single process."""
    single = list(StepLoader(functions_dataset(), batch_size=4))
    halves = []
    for rank in range(2):
        dataset = functions_dataset()
        sampler = StepSampler(dataset, num_replicas=2, rank=rank)
        loader = StepLoader(dataset, batch_size=None, sampler=sampler)
        assert len(loader) == 5
        halves.append(list(loader))
    for step, whole in enumerate(single):
        first, second = (function_ids(h[step]) for h in halves)
        assert not set(first) & set(second)
        assert sorted(first + second) == sorted(function_ids(whole))
        for part in (halves[0][step], halves[1][step]):
            for slot, function in enumerate(function_ids(part)):
                where = function_ids(whole).index(function)
                for key in ("points", "known"):
                    torch.testing.assert_close(
                        part["physics"][key]["pde"][slot], whole["physics"][key]["pde"][where]
                    )
                rows, rows_whole = part["data"]["index"] == slot, whole["data"]["index"] == where
                torch.testing.assert_close(
                    part["data"]["outputs"][rows], whole["data"]["outputs"][rows_whole]
                )


def test_unaligned_rows_are_renumbered_to_the_batch() -> None:
    batch = functions_dataset(data_points=None, unaligned=True)[0]["data"]  # one item, step 0
    assert "trunk" not in batch and batch["index"].unique().tolist() == [0]
    assert (batch["outputs"][:, 0] // 100 == batch["branch"][0, 0]).all()
    assert len(batch["points"]) == N_POINTS


def test_every_function_without_draws_is_the_datasets_own_tensors() -> None:
    dataset = functions_dataset(per_step=None, data_points=None, physics_points=None)
    first, second = list(StepLoader(dataset, batch_size=N_FUNCTIONS))[:2]
    assert first["data"]["outputs"] is dataset.train.outputs
    assert second["data"]["outputs"] is first["data"]["outputs"]
    assert second["physics"]["points"]["pde"] is dataset.conditions["pde"].points


def test_the_loader_resumes_at_the_next_step() -> None:
    straight = [function_ids(b) for b in StepLoader(functions_dataset(), batch_size=4)]
    loader = StepLoader(functions_dataset(), batch_size=4)
    iterator = iter(loader)
    seen = [function_ids(next(iterator)) for _ in range(2)]
    state = loader.state_dict()
    assert state == {"next_step": 2}
    resumed = StepLoader(functions_dataset(), batch_size=4)
    resumed.load_state_dict(state)
    assert len(resumed) == 5  # the whole run, as Lightning counts a resumed epoch
    assert seen + [function_ids(b) for b in resumed] == straight
    assert resumed.state_dict() == {"next_step": 5}


def test_each_rank_resumes_at_its_share_of_the_next_step() -> None:
    def rank_loader(rank: int) -> StepLoader:
        dataset = functions_dataset()
        return StepLoader(dataset, batch_size=None, sampler=StepSampler(dataset, 2, rank))

    for rank in range(2):
        straight = [function_ids(b) for b in rank_loader(rank)]
        resumed = rank_loader(rank)
        resumed.load_state_dict({"next_step": 3})
        assert [function_ids(b) for b in resumed] == straight[3:]


def test_functions_per_step_are_dealt_unevenly_but_never_to_an_empty_rank() -> None:
    datamodule = functions_datamodule()
    assert function_ids(next(iter(datamodule.train_dataloader()))) == function_ids(
        next(iter(StepLoader(functions_dataset(), batch_size=4)))
    )
    datamodule.trainer = SimpleNamespace(world_size=3, global_rank=0)
    loader = datamodule.train_dataloader()
    assert loader.batch_size is None and next(iter(loader.sampler)) == [0, 3]
    assert len(function_ids(next(iter(loader)))) == 2
    datamodule.trainer = SimpleNamespace(world_size=5, global_rank=0)
    with pytest.raises(ValueError, match=r"functions_per_step=4 is fewer than the 5 processes"):
        datamodule.train_dataloader()


def test_a_batch_never_mixes_steps() -> None:
    with pytest.raises(ValueError, match="batch size must divide items_per_step=4"):
        list(StepLoader(functions_dataset(), batch_size=3))


# ------------------------------------------------------------------ device memo
def test_same_batch_memo_converts_a_batch_once() -> None:
    memo, calls = SameBatchMemo(), []

    def convert(batch: dict) -> dict:
        calls.append(1)
        return {k: v * 2 for k, v in batch.items()}

    batch = {"a": torch.ones(2)}
    first = memo(batch, "cpu", convert)
    assert memo({"a": batch["a"]}, "cpu", convert) is first and len(calls) == 1
    memo(batch, torch.float16, convert)  # another key
    memo({"a": torch.ones(2)}, torch.float16, convert)  # other tensors, equal values
    assert len(calls) == 3
