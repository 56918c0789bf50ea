"""Adam -> L-BFGS through Lightning's DDP with 2 real CPU processes (gloo), driving our
SciMLModule: a grid operator with BatchNorm (our all-reduce BatchNorm via the `CPUSyncBatchNorm`
LayerSync plugin), 5 samples per step split 3 + 2.

- it never hangs (the harness kills the group after a timeout and fails);
- the L-BFGS closure returns the all-reduced loss, so both ranks take the same line-search
  decisions: the parameters end BIT-identical on every rank;
- during Adam the logged (global) losses and the parameters after a step equal a 1-process run
  with the whole batch (1e-6): `world_size * part` backward + DDP's average + synced BatchNorm.
"""

from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from distributed_harness import run_ranks
from omegaconf import OmegaConf
from pytorch_lightning.strategies import DDPStrategy
from test_distributed_integrity import WavyGrid
from torch import nn

from mpsciml.data.grid_batches import GridBatches
from mpsciml.distributed.sync_batchnorm import CPUSyncBatchNorm
from mpsciml.modules.grid_operator import GridOperatorModule
from mpsciml.precision.plugin import SciMLPrecision

STEPS, SWITCH = 4, 2
OPTIMIZER = {
    "adam": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-2},
    "lbfgs": {
        "_target_": "torch.optim.LBFGS", "_partial_": True, "lr": 1.0, "max_iter": 5,
        "history_size": 10, "line_search_fn": "strong_wolfe",
    },
    "switch_step": SWITCH,
}  # fmt: skip


class ConvBatchNorm(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, grid: tuple[int, ...]) -> None:
        super().__init__()
        self.net = nn.Sequential(
            # no bias before BatchNorm: its gradient is zero but for rounding, which Adam's
            # first step (~ lr * sign) would blow up into a difference between any two runs
            nn.Conv2d(in_channels, 4, 3, padding=1, padding_mode="circular", bias=False),
            nn.BatchNorm2d(4),
            nn.Tanh(),
            nn.Conv2d(4, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Record(pl.Callback):
    """The logged loss of every step and the parameters after the first Adam step."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.after_first: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        self.losses.append(float(trainer.callback_metrics["train/loss"]))
        if trainer.global_step == 1:
            self.after_first = [p.detach().clone() for p in module.parameters()]


def train(world_size: int) -> dict[str, Any]:
    problem = WavyGrid(n_train=10, n_test=2, resolution=8, n_zero_shot=0, batch_size=5)
    torch.manual_seed(0)
    module = GridOperatorModule(
        problem, ConvBatchNorm(**problem.model_sizes()), OmegaConf.create(OPTIMIZER)
    )
    record = Record()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=world_size,
        strategy=DDPStrategy(process_group_backend="gloo") if world_size > 1 else "auto",
        plugins=[SciMLPrecision("fp32", "cpu"), CPUSyncBatchNorm()],
        max_steps=STEPS,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[record],
    )
    trainer.fit(module, datamodule=GridBatches(problem, seed=0, max_steps=STEPS))
    return {
        "params": [p.detach().clone() for p in module.parameters()],
        "buffers": [b.detach().clone() for b in module.buffers()],
        "losses": record.losses,
        "after_first": record.after_first,
        "lbfgs": type(module.optimizers()[-1].optimizer).__name__,
        "final_terms": {k: float(v) for k, v in module.last_terms.items()},
    }


def lbfgs_worker(rank: int, world_size: int) -> dict[str, Any]:
    return train(world_size)


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[str, Any]]:
    return run_ranks(lbfgs_worker, 2, timeout=240, lightning=True)


def test_adam_then_lbfgs_ends_bit_identical_on_every_rank(two_ranks: list[dict[str, Any]]):
    first, second = two_ranks
    assert first["lbfgs"] == "LBFGS" and len(first["losses"]) == STEPS
    tensors = [r["params"] + r["buffers"] for r in two_ranks]
    assert all(torch.equal(a, b) for a, b in zip(*tensors, strict=True))
    assert first["losses"] == second["losses"]  # global values, the same on both ranks
    assert first["final_terms"] == second["final_terms"]
    assert first["losses"][-1] < first["losses"][0]


def test_adam_steps_under_ddp_equal_one_process(two_ranks: list[dict[str, Any]]) -> None:
    single = train(1)
    for ranks in two_ranks:
        torch.testing.assert_close(
            torch.tensor(ranks["losses"][:SWITCH]),
            torch.tensor(single["losses"][:SWITCH]),
            atol=1e-6,
            rtol=1e-6,
        )
        for got, want in zip(ranks["after_first"], single["after_first"], strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
