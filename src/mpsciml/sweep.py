"""What a sweep needs from a run: the number to minimise, and a failure that does not stop it.

`train.py -m` runs many jobs through a Hydra sweeper (basic grid, Optuna) and launcher (in
process, joblib, SLURM). Each job returns `objective_value(summary, cfg.objective)`; a job that
raised returns `failed_objective(...)` instead of raising (see train.py for why), a job already
finished ok in the same sweep folder is skipped (`finished_job`), and the `SweepReport` callback
prints one line per sweep with the jobs' statuses, from which train.py sets the exit code.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mpsciml.config import ConfigError

log = logging.getLogger(__name__)

Objective = str | Sequence[str]


def _names(objective: Objective) -> list[str]:
    return [objective] if isinstance(objective, str) else [str(name) for name in objective]


def check_objective(objective: Objective, fields: Sequence[str] | None) -> None:
    """Before training: `l2_<field>` must name one of the problem's output fields."""
    if fields is None:
        return
    for name in _names(objective):
        if name.startswith("l2_") and name[3:] not in fields:
            allowed = ", ".join(["l2", *(f"l2_{field}" for field in fields)])
            raise ConfigError(f"objective={name!r} is invalid: this problem allows {allowed}")


def _one_value(summary: dict[str, Any], name: str) -> float:
    l2 = summary.get("l2") or {}
    if name == "l2":
        fields = summary.get("fields") or list(l2)  # older summaries: every error is a field's
        errors = [l2[field] for field in fields if field in l2]
        value = statistics.fmean(errors) if errors else None
    elif name.startswith("l2_"):
        value = l2.get(name[3:])
    else:
        value = summary.get(name)
    value = math.nan if value is None else float(value)
    return value if math.isfinite(value) else math.inf


def objective_value(summary: dict[str, Any], objective: Objective) -> float | list[float]:
    """The summary's number(s) named by `objective`, lower is better.

    A value the run could not measure, or measured as nan/inf (a diverged run), is +inf: Optuna
    2.x stores inf as a complete, bad trial (so TPE steers away from it), whereas a nan return
    fails inside the hydra-optuna-sweeper's `study.tell` and aborts the whole study.
    """
    values = [_one_value(summary, name) for name in _names(objective)]
    return values[0] if isinstance(objective, str) else values


def failed_objective(objective: Objective) -> float | list[float]:
    """What a job that raised returns in a multirun: +inf for each objective (see above)."""
    return math.inf if isinstance(objective, str) else [math.inf] * len(_names(objective))


# Statuses of a job that count as results: a diverged run is a finding, not a failure.
RESULT_STATUSES = ("ok", "diverged", "skipped")

# The failed jobs of the last sweep in this process, for train.py's exit code (None: no sweep).
last_sweep_failures: list[str] | None = None


def finished_job(out_dir: Path, overrides: Sequence[str] | None) -> dict[str, Any] | None:
    """The summary of a job that already ended ok with the same overrides, else None.

    Lets a sweep re-run into the same `hydra.sweep.dir` skip the jobs it finished. The overrides
    must match because a job folder is named by its number: after the sweep's parameters change,
    job 3 is another run.
    """
    if overrides is None:
        return None
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    same = summary.get("overrides") == list(overrides)
    return summary if summary.get("status") == "ok" and same else None


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder of a sweep (Hydra writes `.hydra/` into each), in job number order."""
    found = {p.parent for p in sweep_dir.glob("**/.hydra") if p.parent != sweep_dir}
    return sorted(found, key=lambda p: [int(s) if s.isdigit() else s for s in p.parts])


def summary_mtime(job_dir: Path) -> int | None:
    try:
        return (job_dir / "summary.json").stat().st_mtime_ns
    except OSError:
        return None


def job_status(job_dir: Path) -> tuple[str, str]:
    """(status, error) of one job as its summary.json records it."""
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
    except OSError:
        return "no summary.json", "the job ended before writing it (killed?)"
    except ValueError as exc:
        return "unreadable summary.json", str(exc)
    return str(summary.get("status", "unknown")), str(summary.get("error") or "")


class SweepReport(Callback):
    """At the end of `train.py -m`, one line: how many jobs ended ok, diverged, failed or were
    skipped (already ok from an earlier run into the same sweep folder), and which failed.

    Failed jobs no longer stop a sweep (each writes its summary.json with the error), so without
    this line a sweep with broken jobs would finish as quietly as a clean one. The failures are
    also kept in `last_sweep_failures`, from which train.py sets the sweep's exit code.
    """

    def __init__(self) -> None:
        self.written_before: dict[Path, int] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Note the summaries already there: at the end, an untouched ok one counts as skipped,
        and an untouched other one is a job of an earlier sweep into this folder (its grid had
        more jobs), not a failure of this one."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        for job_dir in job_dirs(sweep_dir):
            if (mtime := summary_mtime(job_dir)) is not None:
                self.written_before[job_dir] = mtime

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global last_sweep_failures
        sweep_dir = Path(str(config.hydra.sweep.dir))
        statuses: Counter[str] = Counter()
        failures: list[str] = []
        for job_dir in job_dirs(sweep_dir):
            status, error = job_status(job_dir)
            untouched = job_dir in self.written_before
            untouched = untouched and self.written_before[job_dir] == summary_mtime(job_dir)
            if untouched and status != "ok":
                continue
            if untouched:
                status = "skipped"
            statuses[status] += 1
            if status not in RESULT_STATUSES:
                failures.append(f"{job_dir.relative_to(sweep_dir)}: {status} {error}".strip())
        counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        named = [failure.split(":", 1)[0] for failure in failures]
        which = f"; failed jobs: {', '.join(named)}" if failures else ""
        log.info("sweep %s: %s%s", sweep_dir, counts or "no job folder found", which)
        for failure in failures:
            log.warning("  %s", failure)
        last_sweep_failures = failures


def sweep_exit_code() -> int:
    """1 if the last sweep of this process had a job that failed (not diverged), else 0."""
    return 1 if last_sweep_failures else 0
