"""`trainer.collective_wait`: gloo collectives polled (default) or awaited asleep, the same results,
errors still raised, the config key checked and carried to every process's strategy."""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
import torch.distributed as dist

from mpsciml.distributed import collective_wait
from mpsciml.distributed.collective_wait import set_collective_wait, wait_for
from mpsciml.distributed.integrity import gather_ranks
from tests.distributed_harness import run_ranks


class FakeWork:
    """A collective that completes after `polls` questions (never if None)."""

    def __init__(self, polls: int | None) -> None:
        self.polls, self.asked, self.waited = polls, 0, 0

    def is_completed(self) -> bool:
        self.asked += 1
        return self.polls is not None and self.asked > self.polls

    def wait(self) -> bool:
        self.waited += 1
        return True


@pytest.fixture(autouse=True)
def default_mode() -> Any:
    yield
    set_collective_wait(collective_wait.DEFAULT_COLLECTIVE_WAIT)


def test_poll_asks_until_done_then_waits_once() -> None:
    work = FakeWork(polls=5)
    wait_for(work)
    assert (work.asked, work.waited) == (6, 1)


def test_poll_sleeps_in_the_blocking_wait_after_its_budget() -> None:
    work = FakeWork(polls=None)
    started = time.perf_counter()
    wait_for(work, budget=0.02)
    elapsed = time.perf_counter() - started
    assert work.waited == 1 and work.asked > 1
    assert 0.02 <= elapsed < 1.0


def test_block_never_polls() -> None:
    set_collective_wait("block")
    work = FakeWork(polls=0)
    wait_for(work)
    assert (work.asked, work.waited) == (0, 1)


def test_an_unknown_mode_names_the_key_and_the_choices() -> None:
    message = r"^trainer.collective_wait='spin' is invalid: poll or block"
    with pytest.raises(ValueError, match=message):
        set_collective_wait("spin")
    assert collective_wait.collective_wait() == "poll"


def _gather_in(mode: str) -> Any:
    def worker(rank: int, world_size: int) -> list[float]:
        set_collective_wait(mode)
        local = torch.tensor([rank + 0.5, 10.0 * rank], dtype=torch.float64)
        return gather_ranks(local).tolist()

    return worker


@pytest.mark.parametrize("mode", ["poll", "block"])
def test_two_ranks_gather_the_same_values_either_way(mode: str) -> None:
    ranks = run_ranks(_gather_in(mode), 2, timeout=60)
    assert ranks == [[[0.5, 0.0], [1.5, 10.0]]] * 2


def _peer_leaves(rank: int, world_size: int) -> str:
    """Rank 1 leaves the group without joining the exchange; rank 0 must fail, not poll on."""
    if rank == 1:
        dist.destroy_process_group()
        return "left"
    started = time.perf_counter()
    try:
        gather_ranks(torch.ones(3, dtype=torch.float64))
    except RuntimeError as error:
        return f"raised after {time.perf_counter() - started:.1f} s: {error}"
    return "returned"


def test_a_polled_exchange_whose_peer_is_gone_raises() -> None:
    rank0, rank1 = run_ranks(_peer_leaves, 2, timeout=60)
    assert rank1 == "left"
    assert rank0.startswith("raised after"), rank0
