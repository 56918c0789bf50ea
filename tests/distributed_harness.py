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
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mpsciml.benchmark.ddp_processes import free_port, join_local_world, rank_results
from mpsciml.distributed import integrity
from mpsciml.modules.base import SciMLModule


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


def batch_size(batch: Any) -> list[int]:
    """The first dimension of every tensor of a batch (what the rank got)."""
    if isinstance(batch, torch.Tensor):
        return [batch.shape[0]]
    if isinstance(batch, dict):
        return [n for value in batch.values() for n in batch_size(value)]
    return []


def one_step(build: Callable[[], tuple[SciMLModule, Any]]) -> dict[str, Any]:
    """What a rank computes in one closure: global terms, averaged gradients, its batch sizes."""
    world = integrity.world_size()
    module, datamodule = build()
    datamodule.trainer = SimpleNamespace(world_size=world, global_rank=integrity.rank())
    batch = module.batch_in_input_dtype(next(iter(datamodule.train_dataloader())))
    terms = module.loss_terms(batch)
    total = module.total_loss(terms)
    (total * world if world > 1 else total).backward()
    grads = []
    for param in module.model.parameters():
        grad = param.grad.clone()
        if world > 1:  # DDP's average over the ranks
            dist.all_reduce(grad)
            grad /= world
        grads.append(grad)
    logged = integrity.reduce_terms({**terms, "total": total})
    return {"terms": logged, "grads": grads, "sizes": batch_size(batch)}
