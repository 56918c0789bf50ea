"""How many torch CPU threads a run uses (`threads: auto`, the default).

A SciML step on a small network is hundreds of tiny operators. With several intra-op (OpenMP)
threads every operator waits for all of them, and on a machine whose cores also run other work
(a sweep's other jobs, another user) one descheduled thread stalls each operator. Measured with
`scripts/bench_threads.py` on a 2-core EPYC, 2 threads against 1: idle, Burgers' Adam step 1.29x
slower, its L-BFGS step 0.77x, Navier-Stokes' 0.73x and 0.52x (a second thread helps the wider
net); with both cores busy with other work, 1.28x, 1.77x, 1.67x and 1.85x slower, and 7.7x
(Adam) and 29x (L-BFGS) on Burgers when the machine was busier still. One thread can lose at
most its share of the machine; two can collapse. So `auto` gives networks under
`SMALL_NETWORK_PARAMETERS` one thread (spend spare cores on parallel runs: sweeps with
`hydra/launcher=joblib`), larger ones torch's default, and asks for `threads=2` where a
dedicated machine should run one mid-size network faster.
"""

from __future__ import annotations

import os

import torch
from torch import nn

#: below this many parameters a network gets one thread under `threads: auto` (every recipe in
#: conf/ is below it: from 2.2k parameters (burgers) to 810k (advection's DeepONet))
SMALL_NETWORK_PARAMETERS = 1_000_000

#: torch's own choice (it honours OMP_NUM_THREADS), taken at import, before a run sets its own:
#: in a sweep run in one process, a job after one that took 1 thread still gets torch's default
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def choose_threads(
    requested: int | str | None,
    model: nn.Module,
    device: str,
    processes: int = 1,
    cores: int | None = None,
) -> tuple[int, str]:
    """(threads, why): an integer is the user's choice; null is torch's default (which honours
    OMP_NUM_THREADS); `auto` picks by device and network size, and yields to OMP_NUM_THREADS.

    `processes` DDP processes of this node share its `cores` (default: this process's usable
    cores): null and `auto` then give each at most cores // processes (at least 1), so N
    processes never run more threads than there are cores; an explicit number is kept, and
    the reason says when it oversubscribes them."""
    cores = cores or usable_cores()
    share = max(1, cores // max(processes, 1))
    shared = f"{processes} processes on {cores} cores"
    if isinstance(requested, int):
        if processes > 1 and requested * processes > cores:
            return requested, f"threads set ({shared}: oversubscribed)"
        return requested, "threads set"
    if requested is None:
        if processes > 1 and share < TORCH_DEFAULT_THREADS:
            return share, f"torch's default (threads=null), capped to {shared}"
        return TORCH_DEFAULT_THREADS, "torch's default (threads=null)"
    if os.environ.get("OMP_NUM_THREADS"):
        return TORCH_DEFAULT_THREADS, "OMP_NUM_THREADS"
    if device != "cpu":
        return TORCH_DEFAULT_THREADS, "the model runs on the GPU"
    parameters = sum(p.numel() for p in model.parameters())
    if parameters < SMALL_NETWORK_PARAMETERS:
        return 1, f"{parameters} parameters < {SMALL_NETWORK_PARAMETERS}: one thread"
    if processes > 1 and share < TORCH_DEFAULT_THREADS:
        return share, f"{parameters} parameters: torch's default capped to {shared}"
    return TORCH_DEFAULT_THREADS, f"{parameters} parameters: torch's default"


def usable_cores() -> int:
    """The cores this process may run on (its affinity: taskset, cpusets, SLURM binding)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
