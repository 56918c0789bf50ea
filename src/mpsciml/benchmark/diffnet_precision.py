"""DiffNet's training step in fp32, bf16_mixed and mixed side by side (issue 14, precision part).

One process; the rows are the runners of the precision benchmark (`runner.lightning_runner`:
each a real `trainer.fit` of what `compose.build` makes, interleaved in turns under one baton,
so load bursts of a shared machine hit every row alike), so each row has the step time (median,
IQR), the bytes autograd saved for backward (`SavedTensorMeter`, one extra step) and the memory
peaks of scripts/benchmark.py. After the same number of steps in every row, the relative L2
error of the network (eval mode) against our finite-volume reference on the held-out fields:
a short training, so the errors compare precisions, not what DiffNet reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from mpsciml.benchmark.report import add_ratios, runner_row
from mpsciml.benchmark.runner import EXTRA_STEPS, Runner, lightning_runner, run_interleaved

PRECISION_ROWS = ("fp32", "bf16_mixed", "mixed")


@dataclass
class PrecisionPlan:
    precisions: list[str] = field(default_factory=lambda: list(PRECISION_ROWS))
    grid: int = 32
    batch: int = 8
    steps: int = 30
    warmup: int = 3
    turn: int = 3
    fields: int = 8
    accelerator: str = "cpu"
    overrides: list[str] = field(default_factory=list)


def precision_overrides(plan: PrecisionPlan, precision: str) -> list[str]:
    return [
        "problem=poisson_grid",
        "model=diffnet",
        "optimizer=adam",
        "logger=none",
        "~callbacks",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        f"trainer.accelerator={plan.accelerator}",
        f"precision={precision}",
        f"problem.grid={plan.grid}",
        f"problem.batch_size={plan.batch}",
        f"problem.n_test={plan.fields}",
        f"trainer.max_steps={plan.steps + EXTRA_STEPS}",
        *plan.overrides,
    ]


def run_precisions(
    plan: PrecisionPlan,
    compose: Callable[[list[str]], DictConfig],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """The rows (time, saved bytes, memory, ratios to fp32, relative L2 after equal steps)."""
    runners: list[Runner] = []
    for precision in plan.precisions:
        cfg = compose(precision_overrides(plan, precision))
        runners.append(lightning_runner(cfg, plan.steps, plan.turn, precision))
    total = sum(r.total_steps for r in runners)
    run_interleaved(runners, None if progress is None else lambda done: progress(done, total))
    for runner in runners:
        if runner.error is None:
            module = runner.facts["module"]
            errors = module.evaluation_errors(module.predict_evaluation())
            runner.facts["rel_l2"] = {k: float(v) for k, v in errors.items()}
    rows = add_ratios([runner_row(r, plan.warmup) for r in runners])
    return {
        "rows": rows,
        "failures": {r.name: r.facts.get("traceback") for r in runners if r.error},
    }
