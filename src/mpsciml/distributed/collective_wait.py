"""How a CPU (gloo) process waits for its own small collectives: `trainer.collective_wait`.

`poll` (the default): the collective is started asynchronously and this thread asks whether it
is done, yielding its core between questions (`os.sched_yield`), for up to `POLL_SECONDS`;
only a longer wait goes to sleep in gloo's blocking `wait`. `block`: gloo's blocking `wait`
at once (the thread sleeps until the peers' data has arrived).

Why: a synchronised BatchNorm exchanges a few numbers twice per layer and step (36 times per
DiffNet step at depth 4), so each exchange's latency is paid 36 times per step. A sleeping
thread leaves its core idle, and a virtual machine's idle vCPU halts; waking it when the other
rank's numbers arrive then goes through the hypervisor, milliseconds late now and then. On a
2-vCPU KVM guest (DiffNet, 256 x 256, 2 processes) polling cut the step's time in the exchanges
from 98-114 ms to 51-72 ms and the step by 1.08-1.10x (`scripts/bench_distributed.py` runs both
side by side: its "blocking waits" row). Yielding, not bare spinning, because gloo's own
threads do the transfer and may need this very core. The budget bounds what polling can burn:
a wait longer than `POLL_SECONDS` means a peer is busy elsewhere (a checkpoint, a slower
step), where a wake-up's milliseconds no longer matter. No core is taken from anyone: on the
CPU `plan.check_cpu_processes` allows at most one process per usable core.

Errors are not hidden: a collective that fails (a peer gone, gloo's timeout) completes with
its error, and the final `wait` raises it. NCCL's collectives are not polled (they are ordered
on CUDA streams, and nothing of ours waits on them in a hot loop).
"""

from __future__ import annotations

import os
import time
from typing import Protocol

#: trainer.collective_wait's values
COLLECTIVE_WAITS = ("poll", "block")
DEFAULT_COLLECTIVE_WAIT = "poll"
#: how long a wait polls before it sleeps in the blocking wait
POLL_SECONDS = 0.05

_mode = DEFAULT_COLLECTIVE_WAIT


class Work(Protocol):
    """What `torch.distributed`'s asynchronous collectives return (`dist.Work`)."""

    def is_completed(self) -> bool: ...

    def wait(self) -> bool: ...


def check_collective_wait(mode: object) -> str:
    """`mode` if it is one of COLLECTIVE_WAITS; otherwise a ValueError naming the key."""
    if mode not in COLLECTIVE_WAITS:
        allowed = " or ".join(COLLECTIVE_WAITS)
        raise ValueError(
            f"trainer.collective_wait={mode!r} is invalid: {allowed} (poll: a CPU process "
            f"polls its small collectives for up to {POLL_SECONDS * 1e3:.0f} ms before it "
            "sleeps; block: it sleeps at once)"
        )
    return str(mode)


def set_collective_wait(mode: str) -> None:
    """This process's way of waiting from now on (the DDP strategy sets it at setup)."""
    global _mode
    _mode = check_collective_wait(mode)


def collective_wait() -> str:
    return _mode


def wait_for(work: Work, budget: float = POLL_SECONDS) -> None:
    """Return once `work` has completed, as this process's mode says (see the module doc);
    re-raises the collective's error."""
    if _mode == "poll":
        deadline = time.perf_counter() + budget
        while not work.is_completed() and time.perf_counter() < deadline:
            os.sched_yield()
    work.wait()
