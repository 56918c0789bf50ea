"""Real training processes for the distributed benchmark: N spawned ranks, one process group per
measured case.

`spawn(worker, n, payload)` starts n fresh Python processes (the `spawn` start method: nothing
inherited from the parent's torch state), each with `threads` CPU threads and the environment
train.py's own launcher gives its children (MASTER_ADDR/PORT, WORLD_SIZE, RANK, LOCAL_RANK,
NODE_RANK), so Lightning's DDPStrategy finds itself inside a world that exists already and
starts nothing. Each rank runs `worker(rank, n, folder, payload)` and hands its result back
through a file. A rank that raises ends the whole group with its traceback; a group still
running after `timeout` seconds is killed (a hang is a failure, never a stuck benchmark).

A rank measures several cases one after another, each a separate `trainer.fit`; our strategy
destroys the process group at the end of a fit (`SciMLDDPStrategy.teardown`), so each case
gets a new one (`process_group`): a FileStore in the run's temporary folder, one file per case,
so no port is reused and none is raced for. Lightning sees the group initialised and joins it.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: how long a rank waits in a collective (rendezvous included) before giving up
COLLECTIVE_TIMEOUT = timedelta(minutes=10)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def free_port() -> int:
    """A TCP port free on this host now (the OS picks it), for a DDP rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def join_local_world(rank: int, world_size: int, port: int) -> None:
    """The environment torchrun gives rank `rank` of a one-node world: Lightning's DDPStrategy
    in this process then joins the world instead of launching one (W&B stays offline)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world_size),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        NODE_RANK="0",
        WANDB_MODE="offline",
    )


@contextmanager
def alone() -> Iterator[None]:
    """This rank as a run of its own: the world's variables hidden (Lightning and our rank
    split then see a single process), restored after. For the benchmark's independent runs,
    which measure what P processes cost each other on this machine with nothing exchanged."""
    names = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK")
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def rank_results(context: Any, folder: str, timeout: float) -> list[Any]:
    """Wait for the ranks of `mp.start_processes(..., join=False)` and return what each saved
    as `<folder>/rank<r>.pt`, in rank order. A rank's exception re-raises here with its
    traceback; ranks still running after `timeout` s are killed and it is a TimeoutError, never
    a wait for the 30-minute collective timeout."""
    deadline = time.monotonic() + timeout
    while not context.join(timeout=max(min(deadline - time.monotonic(), 5.0), 0.1)):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
            count = len(context.processes)
            raise TimeoutError(f"{count} process(es) still running after {timeout} s")
    ranks = range(len(context.processes))
    return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=False) for r in ranks]


def _entry(
    rank: int,
    worker: Callable[..., Any],
    world_size: int,
    folder: str,
    port: int,
    threads: int,
    payload: Any,
) -> None:
    torch.set_num_threads(threads)
    join_local_world(rank, world_size, port)
    result = worker(rank, world_size, folder, payload)
    torch.save(result, Path(folder) / f"rank{rank}.pt")


def spawn(
    worker: Callable[..., Any],
    processes: int,
    payload: Any,
    threads: int = 1,
    timeout: float = 3600.0,
) -> list[Any]:
    """What `worker(rank, processes, folder, payload)` returned on each rank, in rank order.
    `worker` must be a module-level function (spawn pickles it by name)."""
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})  # the children's
    try:
        with tempfile.TemporaryDirectory(prefix="mpsciml-ddp-bench-") as folder:
            context = mp.start_processes(
                _entry,
                args=(worker, processes, folder, free_port(), threads, payload),
                nprocs=processes,
                join=False,
                start_method="spawn",
            )
            return rank_results(context, folder, timeout)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def process_group(
    folder: str, index: int, rank: int, world_size: int, device: str
) -> Iterator[None]:
    """A fresh process group for case `index` (gloo on the CPU, NCCL on CUDA), destroyed after
    it unless the case's own teardown did so already."""
    if device == "cuda":
        torch.cuda.set_device(rank % max(torch.cuda.device_count(), 1))
    dist.init_process_group(
        "nccl" if device == "cuda" else "gloo",
        init_method=f"file://{folder}/store{index}",
        rank=rank,
        world_size=world_size,
        timeout=COLLECTIVE_TIMEOUT,
    )
    try:
        yield
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
