"""Loss integrity with 2 real processes (gloo, CPU): a step's batch split unevenly over the ranks
(5 items as 3 + 2, Burgers' points 33/7/9 as 17 + 16, ...) gives the loss and the gradient of
one process holding the whole batch, to 1e-6 in fp32, for the three kinds of module: an operator
on grids (the FNO's relative L2), a PINN (collocation points split per condition) and an operator
on sensors (DeepONet: unaligned rows with a relative L2 data term; supervised + physics terms).

Each rank does what `SciMLModule`'s closure does: its `loss_terms` (its part of the global
mean), backward of `world_size * total`, then the gradient average DDP performs (here an
all-reduce / world_size, as DDP's bucket hook does); the logged terms are the all-reduced parts
(`integrity.reduce_terms`). The same spawn trains a DDP model with the fp16/bf16 gradient
communication hooks and counts the bytes they all-reduce (a process start costs seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from distributed_harness import one_step, run_ranks
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mpsciml.data.functions import FunctionBatches
from mpsciml.data.grid_batches import GridBatches
from mpsciml.data.points import CollocationPoints
from mpsciml.distributed import integrity
from mpsciml.distributed.comm_hooks import BytesCounter, comm_hook
from mpsciml.models.deeponet import DeepONet
from mpsciml.modules.base import SciMLModule
from mpsciml.modules.grid_operator import GridOperatorModule
from mpsciml.modules.operator import OperatorModule
from mpsciml.modules.pinn import PINNModule
from mpsciml.problems.antiderivative import Antiderivative
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.diffusion_reaction import DiffusionReaction
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem

ADAM = OmegaConf.create({"adam": {"_target_": "torch.optim.Adam", "_partial_": True}})
TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


class WavyGrid(GridOperatorProblem):
    """a -> u = sin(a) + a^2 on a periodic 8x8 grid, a a random field per sample."""

    input_names = ("a",)
    output_names = ("u",)
    coordinate_names = ("x", "y")
    grid_layout = "periodic"

    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        generator = torch.Generator().manual_seed(seed)
        a = torch.randn(n, 1, resolution, resolution, generator=generator, dtype=torch.float64)
        return GridData(a, torch.sin(a) + a**2)


class SmallConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, grid: tuple[int, ...]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, padding=1, padding_mode="circular"),
            nn.Tanh(),
            nn.Conv2d(4, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def grid_case() -> tuple[SciMLModule, Any]:
    """5 samples per step: 3 + 2."""
    problem = WavyGrid(n_train=10, n_test=2, resolution=8, n_zero_shot=0, batch_size=5)
    torch.manual_seed(0)
    module = GridOperatorModule(problem, SmallConv(**problem.model_sizes()), ADAM)
    return module, GridBatches(problem, seed=0, max_steps=2)


def pinn_case() -> tuple[SciMLModule, Any]:
    """Burgers with 33 / 7 / 9 points: 17 + 16, 4 + 3, 5 + 4."""
    problem = Burgers(n_domain=33, n_boundary=7, n_initial=9, evaluation_grid=(8, 4))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    module = PINNModule(problem, model, ADAM, seed=0)
    return module, CollocationPoints(problem, seed=0, max_steps=2)


def deeponet(problem: Any) -> DeepONet:
    torch.manual_seed(0)
    return DeepONet(**problem.model_sizes(), branch_hidden=[16], trunk_hidden=[16])


def operator_rows_case() -> tuple[SciMLModule, Any]:
    """Antiderivative, unaligned rows, mean relative L2 over functions: 5 functions, 3 + 2."""
    problem = Antiderivative(
        n_train=7, n_test=2, n_points=6, m=8, layout="unaligned",
        functions_per_step=5, data_loss="rel_l2",
    )  # fmt: skip
    module = OperatorModule(problem, deeponet(problem), ADAM)
    return module, FunctionBatches(problem, seed=0, max_steps=2)


def operator_physics_case() -> tuple[SciMLModule, Any]:
    """Diffusion-reaction, supervised (4 drawn points per function) + physics: 3 + 2."""
    problem = DiffusionReaction(
        n_train=7, n_test=2, m=8, nx=9, nt=9, n_domain=6, n_boundary=3, n_initial=3,
        supervised=True, functions_per_step=5, data_points_per_function=4,
    )  # fmt: skip
    module = OperatorModule(problem, deeponet(problem), ADAM)
    return module, FunctionBatches(problem, seed=0, max_steps=2)


CASES: dict[str, Callable[[], tuple[SciMLModule, Any]]] = {
    "grid": grid_case,
    "pinn": pinn_case,
    "operator_rows": operator_rows_case,
    "operator_physics": operator_physics_case,
}


def train_with_comm_hook(name: str | None, steps: int = 3) -> dict[str, Any]:
    """A few SGD steps of a DDP-wrapped MLP with `trainer.comm_precision=name`, bytes counted."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 32), nn.Tanh(), nn.Linear(32, 1))
    ddp = DistributedDataParallel(model)
    counter = BytesCounter()
    hook = comm_hook(name, counter)
    assert hook is not None
    ddp.register_comm_hook(state=hook["ddp_comm_state"], hook=hook["ddp_comm_hook"])
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 16)[:, None].repeat(1, 3)[integrity.rank() :: 2]
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((ddp(x) - x[:, :1] ** 2) ** 2).mean()
        loss.backward()
        optimizer.step()
        counter.end_step()
        losses.append(float(integrity.all_reduce_sum(loss.detach())) / 2)
    return {"bytes": counter.per_step, "losses": losses, "params": list(model.parameters())}


def integrity_worker(rank: int, world_size: int) -> dict[str, Any]:
    results = {name: one_step(build) for name, build in CASES.items()}
    results["comm"] = {name: train_with_comm_hook(name) for name in (None, "fp16", "bf16")}
    return results


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return run_ranks(integrity_worker, 2, timeout=180)


@pytest.mark.parametrize("case", list(CASES))
def test_two_uneven_ranks_give_the_loss_and_gradient_of_one_process(
    two_ranks: list[dict[str, Any]], case: str
) -> None:
    single = one_step(CASES[case])
    sizes = [r[case]["sizes"] for r in two_ranks]
    assert sizes[0] != sizes[1], f"the split should be uneven: {sizes}"
    assert [a + b for a, b in zip(*sizes, strict=True)] == single["sizes"]
    for ranks in two_ranks:
        assert ranks[case]["terms"].keys() == single["terms"].keys()
        for name, value in single["terms"].items():
            torch.testing.assert_close(ranks[case]["terms"][name], value, **TOLERANCE)
        for got, want in zip(ranks[case]["grads"], single["grads"], strict=True):
            torch.testing.assert_close(got, want, **TOLERANCE)


def test_one_process_is_the_plain_mean_with_no_process_group() -> None:
    assert integrity.world_size() == 1 and integrity.rank() == 0
    values = {"a": torch.tensor([1.0, 2.0, 6.0])}
    assert integrity.global_means(values)["a"] == 3.0
    terms = {"a": torch.tensor(2.0, requires_grad=True)}
    assert not integrity.reduce_terms(terms)["a"].requires_grad
    with pytest.raises(ValueError, match=r"problem.batch_size=1 is fewer than the 2 processes"):
        integrity.check_share(1, 2, "problem.batch_size")


def test_gradients_travel_in_half_the_bytes_with_fp16_and_bf16_hooks(
    two_ranks: list[dict[str, Any]],
) -> None:
    """Bytes per step: the 161 parameters in fp32 (644), in fp16/bf16 half of it; training with
    a compressed all-reduce runs, follows fp32's losses and stays identical on both ranks."""
    for ranks in two_ranks:
        comm = ranks["comm"]
        assert comm[None]["bytes"] == [161 * 4] * 3
        for name in ("fp16", "bf16"):
            assert comm[name]["bytes"] == [b // 2 for b in comm[None]["bytes"]]
            losses = comm[name]["losses"]
            assert losses[-1] < losses[0]
            torch.testing.assert_close(losses, comm[None]["losses"], rtol=1e-2, atol=1e-4)
    for name in (None, "fp16", "bf16"):
        first, second = (r["comm"][name]["params"] for r in two_ranks)
        assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_comm_precision_names() -> None:
    assert comm_hook(None) is None
    with pytest.raises(ValueError, match=r"trainer\.comm_precision=fp8 is not one of: null, fp16"):
        comm_hook("fp8")
