"""Run a function in N real processes (gloo on the CPU) and collect what each rank returns.

`run_ranks(worker, 2, *args)` forks two processes; each sets one thread, joins a gloo process
group (a FileStore in a temporary folder: no port to race for), runs `worker(rank, world_size,
*args)` and sends its result back through a file. A worker that raises fails the test with its
traceback; a group still running after `timeout` seconds is killed and fails the test (a hang is
a failure, never a stuck suite). `lightning=True` sets the environment torchrun would
(MASTER_ADDR/PORT, LOCAL_RANK, ...) and leaves the process group to Lightning's DDPStrategy.

Fork, not spawn: a spawned child imports torch, Lightning and mpsciml again (~5 s of CPU each on
a loaded 2-core machine, more than the whole check); a forked one inherits them, and setting one
thread first is what makes torch safe after a fork (as DataLoader workers do).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mpsciml.benchmark.ddp_processes import free_port, join_local_world, rank_results


def _entry(
    rank: int,
    worker: Callable[..., Any],
    world_size: int,
    folder: str,
    port: int,
    lightning: bool,
    args: tuple[Any, ...],
) -> None:
    torch.set_num_threads(1)
    join_local_world(rank, world_size, port)
    if not lightning:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{folder}/store",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=60),
        )
    try:
        result = worker(rank, world_size, *args)
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(
    worker: Callable[..., Any],
    world_size: int,
    *args: Any,
    timeout: float = 120.0,
    lightning: bool = False,
) -> list[Any]:
    """What `worker(rank, world_size, *args)` returned on each rank, in rank order."""
    with tempfile.TemporaryDirectory() as folder:
        context = mp.start_processes(
            _entry,
            args=(worker, world_size, folder, free_port(), lightning, args),
            nprocs=world_size,
            join=False,
            start_method="fork",
        )
        return rank_results(context, folder, timeout)
