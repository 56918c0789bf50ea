"""Entry point: `python train.py [group=option ...] [key=value ...]`; see README and conf/.

Returns the run's `objective` (default: mean relative L2 over the fields) so that a sweeper such
as Optuna can minimise it. In a multirun (`-m`) a job that raises is recorded (its summary.json
says `status: failed` and holds the error), logged in one line, and answered with +inf, so the
sweep goes on to the next job: re-raising would make Hydra stop the sweep (the basic sweeper
raises the first failure once its batch is done; the Optuna sweeper aborts the study at its
default `max_failure_rate: 0`). A single run still stops with the error and a non-zero exit;
a sweep exits 1 once all its jobs ran if any of them failed (diverged is a result, not a failure).
A sweep run again into the same `hydra.sweep.dir` skips the jobs that already ended ok there.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mpsciml.cli_errors import (
    hydra_errors_in_one_line,
    remove_refused_run_folder,
    stop_with_error,
    users_hydra_full_error,
)
from mpsciml.config import ConfigError, is_multirun, register_resolvers
from mpsciml.distributed.environment import first_process
from mpsciml.distributed.launch import set_entry_point
from mpsciml.summary import task_overrides
from mpsciml.sweep import failed_objective, finished_job, objective_value, sweep_exit_code
from mpsciml.train import run

log = logging.getLogger("mpsciml")

# Once, here: Hydra's joblib and submitit launchers carry the registered resolvers to their
# workers with the rest of Hydra's state (Singleton.get_state), so jobs there resolve them too.
register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | list[float]:
    users_hydra_full_error()  # composed: the run's own errors are reported as the user asked
    set_entry_point(__file__)  # DDP children run this script (also from a launcher's worker)
    objective = cfg.get("objective", "l2")
    if is_multirun() and (done := finished_job(Path(cfg.paths.output_dir), task_overrides())):
        print(f"skipped: already ok in an earlier run of this sweep | {cfg.paths.output_dir}")
        return objective_value(done, objective)
    try:
        summary = run(cfg)
    except Exception as exc:
        if is_multirun():
            log.error(
                "job failed, the sweep goes on: %s: %s (%s/summary.json)",
                type(exc).__name__,
                exc,
                cfg.paths.output_dir,
            )
            return failed_objective(objective)
        if isinstance(exc, ConfigError):
            if first_process():  # another DDP process never removes the job's folder
                remove_refused_run_folder()  # a typo is not a failed run for report.py to count
            stop_with_error(str(exc))
        raise
    if summary.get("rank"):  # a DDP process other than rank 0: it trained, rank 0 reports
        return float("nan")
    l2 = summary.get("l2") or {}
    fields = ", ".join(f"{name} {error:.3e}" for name, error in l2.items())
    precision = summary["precision"]
    chosen = f"->{precision['chosen']}" if precision.get("chosen") else ""  # precision=auto
    print(
        f"{summary['status']}: relative L2 {fields} | {precision.get('requested')}{chosen} "
        f"| {summary.get('steps')} steps, {summary.get('step_ms') or float('nan'):.2f} ms/step "
        f"| {summary['output_dir']}"
    )
    return objective_value(summary, objective)


if __name__ == "__main__":
    with hydra_errors_in_one_line():  # unknown options, misspelt keys: `error:` + exit 2 too
        main()
    sys.exit(sweep_exit_code())  # a sweep with a failed job exits 1 (0 after a single run)
