"""Synchronised BatchNorm on CPU processes: 2 ranks x B/2 samples give the batch statistics,
outputs, gradients and running statistics of one process with all B samples (1e-6), also with an
uneven split (5 = 3 + 2); eval mode uses the running statistics; the LayerSync plugin converts
every BatchNorm keeping its tensors and attributes, and reverts to the original classes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.distributed as dist
from distributed_harness import run_ranks
from torch import nn

from mpsciml.distributed import integrity
from mpsciml.distributed.sync_batchnorm import (
    AllReduceBatchNorm,
    AllReduceBatchNorm1d,
    AllReduceBatchNorm2d,
    CPUSyncBatchNorm,
    convert_batchnorm,
)

TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


class Net(nn.Module):
    """Conv -> BatchNorm2d -> tanh -> BatchNorm2d without affine parameters -> a pixel's
    features -> BatchNorm1d (cumulative average)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.norm2d = nn.BatchNorm2d(3)
        self.plain = nn.BatchNorm2d(3, affine=False)
        self.norm1d = nn.BatchNorm1d(3, momentum=None)
        with torch.no_grad():  # non-trivial affine parameters
            self.norm2d.weight.uniform_(0.5, 1.5)
            self.norm2d.bias.uniform_(-0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.plain(torch.tanh(self.norm2d(self.conv(x))))
        return self.norm1d(y[:, :, 2, 2]) + y.mean(dim=(1, 2, 3))[:, None]


def data(batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = 3.0 + 2.0 * torch.randn(batch, 2, 5, 5, generator=generator)
    return x, torch.randn(batch, 3, generator=generator)


def run(batch: int, steps: int = 2) -> dict[str, Any]:
    """`steps` training forwards/backwards of this rank's samples (r, r + W, ...), then eval."""
    world, rank = integrity.world_size(), integrity.rank()
    torch.manual_seed(0)
    net = convert_batchnorm(Net())
    x_all, target_all = data(batch)
    x = x_all[rank::world].clone().requires_grad_(True)
    target = target_all[rank::world]
    for _ in range(steps):
        net.zero_grad()
        x.grad = None
        outputs = net(x)
        part = ((outputs - target) ** 2).sum() / target_all.numel()  # this rank's part
        (part * world).backward()
    grads = {}
    for name, param in net.named_parameters():
        grad = param.grad.clone()
        if world > 1:  # DDP's gradient average
            dist.all_reduce(grad)
            grad /= world
        grads[name] = grad
    net.eval()
    with torch.no_grad():
        evaluated = net(x_all[rank::world])
    return {
        "outputs": outputs.detach(),
        "input_grad": x.grad.clone(),  # of this rank's part times world: the full loss's / ...
        "grads": grads,
        "buffers": {k: v.clone() for k, v in net.state_dict().items() if "running" in k},
        "eval": evaluated,
        "world": world,
    }


def sync_worker(rank: int, world_size: int) -> dict[int, Any]:
    return {batch: run(batch) for batch in (6, 5)}


@pytest.fixture(scope="module")
def two_ranks() -> list[dict[int, Any]]:
    return run_ranks(sync_worker, 2, timeout=120)


@pytest.mark.parametrize("batch", [6, 5])
def test_two_processes_equal_one_with_the_whole_batch(
    two_ranks: list[dict[int, Any]], batch: int
) -> None:
    single = run(batch)
    for rank, ranks in enumerate(two_ranks):
        got = ranks[batch]
        torch.testing.assert_close(got["outputs"], single["outputs"][rank::2], **TOLERANCE)
        # d(world * part)/dx on a rank is world x the single process's d(loss)/dx at its samples
        torch.testing.assert_close(
            got["input_grad"] / 2, single["input_grad"][rank::2], **TOLERANCE
        )
        for name, grad in single["grads"].items():
            torch.testing.assert_close(got["grads"][name], grad, **TOLERANCE)
        for name, buffer in single["buffers"].items():
            torch.testing.assert_close(got["buffers"][name], buffer, **TOLERANCE)
        torch.testing.assert_close(got["eval"], single["eval"][rank::2], **TOLERANCE)


def test_one_process_is_torchs_batchnorm() -> None:
    torch.manual_seed(0)
    plain = Net()
    torch.manual_seed(0)
    converted = convert_batchnorm(Net())
    x, _ = data(4)
    for _ in range(2):
        assert torch.equal(plain(x), converted(x))
    assert all(torch.equal(a, b) for a, b in zip(plain.buffers(), converted.buffers(), strict=True))


def test_the_plugin_keeps_the_layers_tensors_and_reverts_to_their_classes() -> None:
    net = Net()
    net.norm2d.precision_policy = "fp32"  # an attribute a layer may carry
    weight, running = net.norm2d.weight, net.norm2d.running_mean
    state = {k: v.clone() for k, v in net.state_dict().items()}
    plugin = CPUSyncBatchNorm()
    synced = plugin.apply(net)
    assert type(synced.norm2d) is AllReduceBatchNorm2d and isinstance(synced.norm2d, nn.BatchNorm2d)
    assert type(synced.norm1d) is AllReduceBatchNorm1d
    assert synced.norm2d.weight is weight and synced.norm2d.running_mean is running
    assert synced.norm2d.precision_policy == "fp32"
    assert synced.state_dict().keys() == state.keys()
    reverted = plugin.revert(synced)
    assert type(reverted.norm2d) is nn.BatchNorm2d and type(reverted.norm1d) is nn.BatchNorm1d
    assert not any(isinstance(m, AllReduceBatchNorm) for m in reverted.modules())
    assert reverted.norm2d.weight is weight and reverted.norm2d.precision_policy == "fp32"
    assert all(torch.equal(v, state[k]) for k, v in reverted.state_dict().items())
