"""What a sweep needs from a run: the number to minimise, and a failure that does not stop it.

`train.py -m` runs many jobs through a Hydra sweeper (basic grid, Optuna) and launcher (in
process, joblib, SLURM). Each job returns `objective_value(summary, cfg.objective)`; a job that
raised returns `failed_objective(...)` instead of raising (see train.py for why), and the
`SweepReport` callback prints one line per sweep with the jobs' statuses.
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
        value = statistics.fmean(l2.values()) if l2 else None
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


class SweepReport(Callback):
    """At the end of `train.py -m`, one line: how many jobs ended ok, diverged or failed.

    Failed jobs no longer stop a sweep (each writes its summary.json with the error), so without
    this line a sweep with broken jobs would finish as quietly as a clean one.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        statuses: Counter[str] = Counter()
        failures = []
        paths = sweep_dir.glob("**/summary.json")
        for path in sorted(paths, key=lambda p: [int(s) if s.isdigit() else s for s in p.parts]):
            summary = json.loads(path.read_text())
            statuses[summary.get("status", "unknown")] += 1
            if summary.get("status") != "ok":
                where = path.parent.relative_to(sweep_dir)
                failures.append(f"{where}: {summary.get('status')} {summary.get('error', '')}")
        counts = ", ".join(f"{count} {status}" for status, count in sorted(statuses.items()))
        log.info("sweep %s: %s", sweep_dir, counts or "no summary.json written")
        for failure in failures:
            log.warning("  %s", failure.strip())
