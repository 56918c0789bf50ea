"""Interleaved step timing: several runners take turns of k steps, so machine noise hits all.

On a shared machine a burst of load lasts seconds; timing precision A for a minute and then B
for a minute lets the burst land on one of them. Here every runner (one Lightning training run
per precision, and the bare reference loop) lives in its own thread and calls `StepClock.tick()`
at the start of each of its steps. A `Baton` lets exactly one runner work at a time and passes
to the next after k steps; the round order alternates (A B C, C B A, ...) so no runner always
follows the same neighbour. A step's time is the wall time between consecutive ticks of its
runner within one turn: one full cycle of that runner's loop (for Lightning: hooks, logging,
closure, backward, optimizer step), never the time spent waiting for the baton. On CUDA the
clock is read after `torch.cuda.synchronize()`, otherwise it would time kernel launches.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence

import torch


class Baton:
    """Who may run now. `order` cycles forward, then backward, ... over the runner indices."""

    def __init__(self, runners: int) -> None:
        self._forward = list(range(runners))
        self._order: list[int] = []
        self._position = -1
        self._done: set[int] = set()
        self._condition = threading.Condition()
        self.holder: int | None = None
        self._advance()

    def _next_in_order(self) -> int:
        self._position += 1
        while self._position >= len(self._order):
            rounds = len(self._order) // max(1, len(self._forward))
            step = self._forward if rounds % 2 == 0 else self._forward[::-1]
            self._order.extend(step)
        return self._order[self._position]

    def _advance(self) -> None:
        if len(self._done) >= len(self._forward):
            self.holder = None
            return
        candidate = self._next_in_order()
        while candidate in self._done:
            candidate = self._next_in_order()
        self.holder = candidate

    def wait(self, index: int) -> None:
        with self._condition:
            self._condition.wait_for(lambda: self.holder == index)

    def release(self, index: int, finished: bool = False) -> None:
        """End `index`'s turn (if it holds the baton); `finished` takes it out of the rotation."""
        with self._condition:
            if finished:
                self._done.add(index)
            if self.holder == index or (finished and self.holder in self._done):
                self._advance()
            self._condition.notify_all()


def cuda_synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class StepClock:
    """One runner's clock and its place in the rotation; `tick()` at the start of every step.

    `steps` timed steps are taken in turns of `turn` steps; the tick at step `steps` (the first
    untimed one) records the last sample and keeps the baton, so whatever the runner does next
    (memory measurements) runs alone; `finish()` then hands the baton on for good. The baton
    may be given later (`run_interleaved` does), but before the first tick.
    """

    def __init__(
        self,
        baton: Baton | None,
        index: int,
        steps: int,
        turn: int,
        sync: Callable[[], None] = cuda_synchronize,
    ) -> None:
        self.baton, self.index, self.steps, self.turn, self.sync = baton, index, steps, turn, sync
        self.samples: list[float] = []
        self.ticks = 0
        self._last: float | None = None
        self._finished = False

    def _now(self) -> float:
        self.sync()
        return time.perf_counter()

    def tick(self) -> None:
        assert self.baton is not None, "a StepClock needs its baton before the first tick"
        step, self.ticks = self.ticks, self.ticks + 1
        if step > self.steps:
            return
        if self._last is not None:
            self.samples.append(self._now() - self._last)
        if step == self.steps:
            self._last = None
            return
        if step % self.turn == 0:
            if step > 0:
                self.baton.release(self.index)
            self.baton.wait(self.index)
        self._last = self._now()

    def finish(self) -> None:
        """This runner is done (or failed): leave the rotation, whatever step it reached."""
        if not self._finished and self.baton is not None:
            self._finished = True
            self.baton.release(self.index, finished=True)


def summarize(samples_s: Sequence[float], warmup: int) -> dict[str, float | int]:
    """Median and spread (quartiles, IQR) in ms of the samples after the first `warmup`."""
    steady = [1e3 * s for s in samples_s[warmup:]]
    if not steady:
        raise ValueError(f"no timed steps after {warmup} warm-up steps")
    if len(steady) >= 2:
        q1, median, q3 = statistics.quantiles(steady, n=4, method="inclusive")
    else:
        q1 = median = q3 = steady[0]
    return {
        "median_ms": median,
        "q1_ms": q1,
        "q3_ms": q3,
        "iqr_ms": q3 - q1,
        "min_ms": min(steady),
        "steps": len(steady),
    }


def paired_ratio(a_s: Sequence[float], b_s: Sequence[float], turn: int, warmup: int) -> float:
    """Median over turns of (median of A's steps in turn t) / (median of B's in turn t).

    Turn t of A and turn t of B ran minutes apart at most, seconds apart usually, so a slow
    drift of the machine's load cancels in each ratio; a ratio of overall medians keeps it.
    """
    ratios = []
    for start in range(0, min(len(a_s), len(b_s)), turn):
        a = [s for i, s in enumerate(a_s[start : start + turn], start) if i >= warmup]
        b = [s for i, s in enumerate(b_s[start : start + turn], start) if i >= warmup]
        if a and b:
            ratios.append(statistics.median(a) / statistics.median(b))
    if not ratios:
        raise ValueError(f"no timed turns after {warmup} warm-up steps")
    return statistics.median(ratios)
