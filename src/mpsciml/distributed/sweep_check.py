"""Refuse a sweep whose launcher cannot host DDP jobs before its first job starts.

`plan.check_launcher` refuses such a job inside the job, which in a multirun is recorded as a
failed job while the sweep goes on to refuse the next one the same way: a sweep of N jobs then
ends with N identical errors and exit 1. Checked here, at Hydra's multirun start, the user gets
the one line and exit 2 like any other bad input, and no job folder is made. Only what the
command line fixes for every job is checked (a swept `trainer=` is still checked per job).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mpsciml.cli_errors import stop_with_error
from mpsciml.distributed.plan import joblib_refusal


def processes_per_job(trainer: Any) -> int:
    """The DDP processes every job of the sweep would start itself (1: no DDP)."""
    if trainer is None:
        return 1
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    counts = [n for n in (devices, nodes) if isinstance(n, int) and n > 0]
    world = counts[0] * counts[1] if len(counts) == 2 else max(counts, default=1)
    return world if trainer.get("strategy") == "ddp" or world > 1 else 1


class DDPSweepCheck(Callback):
    """At `-m` start: hydra/launcher=joblib with DDP jobs is one line and exit 2."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        processes = processes_per_job(config.get("trainer"))
        if "joblib" in launcher.lower() and processes > 1:
            sweep_dir = Path(str(config.hydra.sweep.dir))  # claimed by unique_dir, still empty
            if sweep_dir.is_dir() and not any(sweep_dir.iterdir()):
                sweep_dir.rmdir()
            stop_with_error(joblib_refusal(processes))
