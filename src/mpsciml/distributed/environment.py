"""Who starts the processes of a distributed run, and how many there are, before any starts.

Three ways a run gets several processes:

- ours: `python train.py trainer=ddp trainer.devices=N`: the first process starts N - 1 more
  (`distributed.launch.JobLauncher`), on this one machine;
- SLURM: `srun` (or `hydra/launcher=slurm_ddp`, which submits through submitit) starts
  `--ntasks-per-node` tasks on each of `--nodes` nodes, each running train.py;
- torchrun: `torchrun --nnodes M --nproc-per-node N train.py ...` does the same anywhere.

In the last two the processes exist already and their count is the scheduler's, not the
config's: `external_world()` reads it from the environment (as Lightning's own SLURMEnvironment
and TorchElasticEnvironment do), so `trainer.devices`/`trainer.num_nodes` follow the allocation
instead of failing Lightning's check that they match it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mpsciml.threads import usable_cores

__all__ = ["ExternalWorld", "external_world", "first_process", "usable_cores"]


@dataclass(frozen=True)
class ExternalWorld:
    """Processes started by a scheduler: `launcher` (srun | torchrun), nodes x processes per
    node, and this process's place in them."""

    launcher: str
    nodes: int
    processes_per_node: int
    global_rank: int

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node


def _int_env(name: str) -> int | None:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else None


def slurm_tasks() -> int | None:
    """SLURM_NTASKS of an `srun` step (Lightning's SLURMEnvironment's test: the variable is set
    and the job is not an interactive one named bash/interactive), else None."""
    if os.environ.get("SLURM_JOB_NAME") in ("bash", "interactive"):
        return None
    return _int_env("SLURM_NTASKS")


def external_world() -> ExternalWorld | None:
    """The processes torchrun or srun started, when there are several; None when this process
    is alone (plain `python train.py`, or a SLURM job of one task, where our launcher may start
    the other processes of its node itself)."""
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        world = _int_env("WORLD_SIZE") or 1
        per_node = _int_env("LOCAL_WORLD_SIZE") or world
        if world > 1:
            return ExternalWorld("torchrun", world // per_node, per_node, _int_env("RANK") or 0)
        return None
    tasks = slurm_tasks()
    if tasks is not None and tasks > 1:
        nodes = _int_env("SLURM_NNODES") or 1
        per_node = _int_env("SLURM_NTASKS_PER_NODE") or tasks // nodes
        return ExternalWorld("srun", nodes, per_node, _int_env("SLURM_PROCID") or 0)
    return None


def first_process() -> bool:
    """Whether this is global rank 0 as its launcher told it, known before torch.distributed is
    set up: only that process may change the run folder before training (another one reading it
    at the same moment would see half a change)."""
    if (world := external_world()) is not None:
        return world.global_rank == 0
    if (rank := _int_env("RANK")) is not None:
        return rank == 0
    return (_int_env("NODE_RANK") or 0) == 0 and (_int_env("LOCAL_RANK") or 0) == 0


def manual_multi_node() -> bool:
    """The user starts each node's processes by hand (Lightning's documented route): MASTER_ADDR
    and NODE_RANK are set on every node."""
    return bool(os.environ.get("MASTER_ADDR")) and _int_env("NODE_RANK") is not None
