"""Lightning's DDP with a launcher that starts the processes of ONE job, never the sweep again.

Lightning's subprocess launcher starts the other processes of a node by running the command line
again (`sys.argv`). Under `python train.py -m a=1,2 trainer=ddp` every child would then run the
whole sweep, each of its jobs starting children of its own. `JobLauncher` starts each child as a
single run of the current Hydra job: the job's own overrides (`hydra.overrides.task`, e.g. `a=2`
in the sweep's second job), into the job's own folder (`hydra.run.dir=<job dir>`,
`hydra.output_subdir=null`), never `-m`. Outside Hydra it falls back to Lightning's command.

A child that fails ends the job: `ChildObserver` sees its exit code within a fraction of a second,
kills the other children (a process blocked in an all-reduce waits for its peers forever, so
SIGKILL), and the first process, whose collectives then fail, records the failure in its
summary; if it is still blocked after `GRACE_SECONDS` (a rendezvous waits for its peers for 30
minutes), the observer ends it too. Under srun or torchrun the processes exist already: Lightning's
SLURM and TorchElastic environments are used and nothing is started here.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning_fabric.plugins.environments import LightningEnvironment
from lightning_fabric.strategies.launchers.subprocess_script import _basic_subprocess_cmd
from pytorch_lightning.overrides.distributed import _register_ddp_comm_hook
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

from mpsciml.distributed.collective_wait import (
    DEFAULT_COLLECTIVE_WAIT,
    check_collective_wait,
    set_collective_wait,
)

log = logging.getLogger(__name__)

#: how long the first process may take to end by itself after a child failed
GRACE_SECONDS = 10.0
#: how long the first process waits for its children to exit after its run (they only tear down)
JOIN_SECONDS = 120.0
POLL_SECONDS = 0.2
#: what the launcher sets in the first process's environment for its children, and removes again
#: after the job: a sweep's next job in the same process must start its own children
LAUNCH_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
#: Hydra overrides of the sweep itself, which a child (one run of one job) must not get
SWEEP_ONLY = (
    "hydra.mode",
    "hydra.run.",
    "hydra.sweep.",
    "hydra.launcher",
    "hydra/launcher",
    "hydra.sweeper",
    "hydra/sweeper",
    "hydra.output_subdir",
    "hydra.job.name",
    "hydra.job.num",
    "hydra.job.id",
)

_entry_point: Path | None = None


def set_entry_point(script: str | Path) -> None:
    """train.py names itself: in a launcher's worker (submitit) sys.argv[0] is not train.py."""
    global _entry_point
    _entry_point = Path(script).resolve()


def hydra_quote(value: str) -> str:
    """A value for a Hydra override that stays one string whatever it holds (`=`, `,`, spaces)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def job_command(local_rank: int) -> tuple[list[str], str]:
    """The command (and working directory) that runs the current Hydra job once more, as the
    process of local rank `local_rank`: same config source and overrides, same output folder."""
    hydra = HydraConfig.get()
    script = _entry_point or Path(hydra.runtime.cwd, sys.argv[0]).resolve()
    command = [sys.executable, str(script), "--config-name", str(hydra.job.config_name)]
    for source in hydra.runtime.config_sources:
        if source.schema == "file" and source.provider in ("main", "command-line"):
            flag = "--config-path" if source.provider == "main" else "--config-dir"
            command += [flag, str(source.path)]
    command += [str(o) for o in hydra.overrides.task]
    command += [o for o in map(str, hydra.overrides.hydra) if not o.startswith(SWEEP_ONLY)]
    command += [
        f"hydra.run.dir={hydra_quote(str(hydra.runtime.output_dir))}",
        "hydra.output_subdir=null",  # the job's .hydra/ is the first process's
        f"hydra.job.name={hydra.job.name}_rank{local_rank}",  # a log file of its own
    ]
    return command, str(hydra.runtime.cwd)


class ChildObserver(threading.Thread):
    """Watches the children while the job trains; see the module doc."""

    def __init__(self, children: list[subprocess.Popen], on_abort: Callable[[str], None]) -> None:
        super().__init__(daemon=True, name="ddp-child-observer")
        self.children = children
        self.on_abort = on_abort
        self.training = True
        self.failure: str | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.wait(POLL_SECONDS):
            failed = [(rank, p) for rank, p in enumerate(self.children, 1) if p.poll()]
            if failed and self.training:
                rank, proc = failed[0]
                self.failure = f"rank {rank} (pid {proc.pid}) exited with code {proc.returncode}"
                log.error("%s: stopping the job's other processes", self.failure)
                kill_all(self.children)
                if not self._halt.wait(GRACE_SECONDS):  # still blocked in a collective
                    self.on_abort(self.failure)
                return


def kill_all(children: list[subprocess.Popen]) -> None:
    for proc in children:
        if proc.poll() is None:
            proc.kill()
    for proc in children:
        proc.wait()


def abort_process(reason: str) -> None:
    """The last resort when the first process cannot end by itself: say why and exit 1."""
    print(f"error: {reason}; the first process was blocked in a collective", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)


class JobLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher, starting the job's children with `job_command` and
    watching them with `ChildObserver`; the threads per process are ours (`threads.py`), so
    Lightning's cores // processes (which also exports OMP_NUM_THREADS) is not applied."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.observer: ChildObserver | None = None
        self.on_abort: Callable[[str], None] = abort_process
        self._previous_environment: dict[str, str | None] = {}

    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        self.cluster_environment.validate_settings(
            num_devices=self.num_processes, num_nodes=self.num_nodes
        )
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            self.observer = ChildObserver(self.procs, self.on_abort)
            self.observer.start()
        try:
            return function(*args, **kwargs)
        finally:
            if self.observer is not None:
                self.observer.training = False  # a child failing while it exits is no failure

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self.procs = []
        environment = self.cluster_environment
        self._previous_environment = {name: os.environ.get(name) for name in LAUNCH_VARIABLES}
        os.environ.update(
            MASTER_ADDR=environment.main_address,
            MASTER_PORT=str(environment.main_port),
            NODE_RANK=str(environment.node_rank()),
            LOCAL_RANK=str(environment.local_rank()),
            WORLD_SIZE=str(self.num_processes * self.num_nodes),
        )
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, "LOCAL_RANK": str(local_rank)}
            if HydraConfig.initialized():
                command, cwd = job_command(local_rank)
            else:
                command, cwd = list(_basic_subprocess_cmd()), None
            self.procs.append(subprocess.Popen(command, env=env, cwd=cwd))

    def kill(self, signum: Any) -> None:
        """Lightning ends the children after this process failed: no child failure then."""
        if self.observer is not None:
            self.observer.training = False
        super().kill(signum)

    def child_failure(self, wait: float = 20.0) -> str | None:
        """The first child that ended in failure (not killed by us), waiting up to `wait` s
        for it: a peer's failure reaches this process as "connection closed" first, and on a
        loaded machine the child's own exit can follow seconds later (5 s was seen too short
        at load 8 on 2 cores); the wait costs time only when this process failed anyway."""
        deadline = time.monotonic() + wait
        while True:
            for rank, proc in enumerate(self.procs, 1):
                if proc.poll() not in (None, 0, -signal.SIGKILL):
                    return f"rank {rank} (pid {proc.pid}) exited with code {proc.returncode}"
            if time.monotonic() > deadline or not self.procs:
                return None
            time.sleep(POLL_SECONDS / 4)

    def finish(self, failed: bool, timeout: float = JOIN_SECONDS) -> None:
        """After the job: wait for the children (they only tear down after fit), kill any that
        outstay `timeout`, or all at once if this process `failed` (Lightning leaves them
        waiting for it in a collective); then give the environment back, so no process
        outlives the job and a sweep's next job in this process starts its own."""
        if self.observer is not None:
            self.observer.training = False
            self.observer.stop()
        if failed:
            kill_all(self.procs)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("child pid %d still running after the job: killed", proc.pid)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
        for name, value in self._previous_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._previous_environment = {}


class SciMLDDPStrategy(DDPStrategy):
    """DDPStrategy with `JobLauncher`, communication hooks registered on the CPU (gloo) too
    (Lightning registers them on CUDA only), `trainer.collective_wait` applied in every process,
    and the process group destroyed after the job, so that a sweep's next job in the same
    process can set up its own."""

    def __init__(self, *args: Any, collective_wait: str = DEFAULT_COLLECTIVE_WAIT, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.collective_wait = check_collective_wait(collective_wait)

    def setup_distributed(self) -> None:
        super().setup_distributed()
        set_collective_wait(self.collective_wait)  # in every process, before the first step

    def _configure_launcher(self) -> None:
        assert self.cluster_environment is not None
        self._launcher = JobLauncher(self.cluster_environment, self.num_processes, self.num_nodes)

    def _register_ddp_hooks(self) -> None:
        if self._ddp_comm_hook is not None:
            _register_ddp_comm_hook(
                model=self.model,
                ddp_comm_state=self._ddp_comm_state,
                ddp_comm_hook=self._ddp_comm_hook,
                ddp_comm_wrapper=self._ddp_comm_wrapper,
            )

    def teardown(self) -> None:
        super().teardown()
        set_collective_wait(DEFAULT_COLLECTIVE_WAIT)  # a sweep's next job sets its own
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def finish_job(trainer: Any, failed: bool) -> None:
    """End of a run on any process: reap the children this process started (see
    `JobLauncher.finish`); nothing for a single-process run."""
    strategy = getattr(trainer, "strategy", None)
    launcher = getattr(strategy, "launcher", None)
    if isinstance(launcher, JobLauncher):
        launcher.finish(failed)


def cluster_environment_for(launcher: str) -> LightningEnvironment | None:
    """Ours and the manual route: Lightning's plain environment (also inside a one-task SLURM
    job, whose SLURM_NTASKS would make Lightning expect srun to start the processes); srun and
    torchrun: None, Lightning detects its SLURM/TorchElastic environment."""
    return LightningEnvironment() if launcher in ("ours", "manual") else None
