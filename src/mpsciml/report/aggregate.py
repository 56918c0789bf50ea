"""Group runs into rows of the comparison and reduce each group to a few honest numbers.

A row is one (problem, model, steps, precision), and for a spectral model (FNO) also its
spectral setting (`Run.spectral`: "half+tanh", a schedule), since Tu et al.'s settings share
precisions (AMP alone and AMP with half spectral layers are both `mixed`). Steps belong in the
key because a 200-step run and a 4000-step run of the same precision are different experiments;
averaging them would
produce an error no run ever had. Steps are the planned budget (`trainer.max_steps` of the run's
Hydra config), not the steps actually run, so a run that diverged early stays in its group. A
run that records no steps at all joins the group of its (problem, model, precision) when there
is exactly one; otherwise it forms a row of its own with a blank steps cell.

The error, time and memory of a row are taken over its runs with status `ok` only: a failed run
has no numbers, and a diverged run stopped early, so its numbers answer a different question.
Failed and diverged runs are counted in the row and listed under the table instead.
Errors: mean and sample standard deviation over seeds. Time and memory: the median over runs,
which one slow outlier (a busy machine) cannot drag. Ratios compare with the fp32 row of the
same problem, model and steps (for a spectral model: fp32 with the spectral layers in full):
speed-up = fp32 ms/step / ms/step (>1 is faster), memory ratio = memory / fp32 memory (<1 is
smaller).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from mpsciml.precision.registry import PRECISIONS, precision_rank
from mpsciml.report.collect import Run

PRECISION_ORDER = tuple(PRECISIONS)  # the registry's order is the order of every table and figure
BASELINE = "fp32"
# overrides that are part of the row key, or that do not change what is trained
IDENTITY_OVERRIDES = (
    "seed",
    "precision",
    "fno_setting",
    "problem",
    "model",
    "trainer.max_steps",
    "val_every",
    "logger",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    # strategies: in the row key through `Run.strategy`
    "weighting",
    "sampling.adaptive",
    "resample_every",
    "problem.hard_constraints",
    "model.periodic",
)


@dataclass
class Stat:
    mean: float | None
    std: float | None  # sample std (ddof 1); None with fewer than 2 values
    n: int


@dataclass
class Row:
    """The aggregated numbers of one (problem, model, steps, setting): the setting is the
    precision, and for a spectral model (FNO) its spectral setting too (`spectral`)."""

    problem: str
    model: str
    steps: int | None
    precision: str
    runs: int
    ok: int
    failed: int
    diverged: int
    seeds: list[int]
    l2: dict[str, Stat] = field(default_factory=dict)
    step_ms: float | None = None
    peak_rss_mb: float | None = None
    cuda_max_allocated_mb: float | None = None
    speedup: float | None = None
    rss_ratio: float | None = None
    cuda_ratio: float | None = None
    spectral: str | None = None  # e.g. "half+tanh"; None for a model without spectral layers
    strategy: str | None = None  # e.g. "softadapt + rar" (`collect.strategy_label`); None: defaults

    @property
    def panel(self) -> tuple[str, str, int | None]:
        """The rows that share a baseline and a figure panel."""
        return (self.problem, self.model, self.steps)

    @property
    def setting(self) -> str:
        return " | ".join(p for p in (self.precision, self.spectral, self.strategy) if p)

    @property
    def is_baseline(self) -> bool:
        """fp32 with the default training strategies, and for a spectral model with its spectral
        layers in full precision too."""
        full_spectral = self.spectral in (None, BASELINE_SPECTRAL)
        return self.precision == BASELINE and full_spectral and self.strategy is None


#: the spectral setting of the baseline row of a spectral model
BASELINE_SPECTRAL = "full"


def group_key(run: Run) -> tuple[str, str, int | None, str]:
    return (run.problem, run.model, run.steps, run.setting)


def setting_rank(item: Run | Row) -> tuple[int, bool, str, bool, str]:
    """Table order: by precision (the registry's order), the baseline's spectral setting first,
    then the default strategies first."""
    spectral, strategy = item.spectral, item.strategy
    spectral_order = (spectral != BASELINE_SPECTRAL, spectral or "")
    return (precision_rank(item.precision), *spectral_order, strategy is not None, strategy or "")


def assign_missing_steps(runs: list[Run]) -> None:
    """Give a run without steps the steps of its siblings when they agree on one value."""
    known: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    for run in runs:
        if run.steps is not None:
            known[(run.problem, run.model, run.precision)].add(run.steps)
    for run in runs:
        choices = known.get((run.problem, run.model, run.precision), set())
        if run.steps is None and len(choices) == 1:
            run.steps, run.steps_assumed = next(iter(choices)), True


def group_runs(runs: list[Run]) -> dict[tuple[str, str, int | None, str], list[Run]]:
    assign_missing_steps(runs)
    groups: dict[tuple[str, str, int | None, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[group_key(run)].append(run)
    return dict(
        sorted(
            groups.items(),
            key=lambda item: (
                item[0][0],
                item[0][1],
                item[0][2] if item[0][2] is not None else -1,
                setting_rank(item[1][0]),
            ),
        )
    )


def mean_std(values: list[float]) -> Stat:
    if not values:
        return Stat(None, None, 0)
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, len(values))


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def aggregate(runs: list[Run]) -> list[Row]:
    """One row per group, in the order problem, model, steps, precision; ratios filled in."""
    rows = []
    for (problem, model, steps, _), members in group_runs(runs).items():
        ok = [r for r in members if r.status == "ok"]
        fields = list(dict.fromkeys(name for r in ok for name in r.l2))
        rows.append(
            Row(
                problem=problem,
                model=model,
                steps=steps,
                precision=members[0].precision,
                spectral=members[0].spectral,
                strategy=members[0].strategy,
                runs=len(members),
                ok=len(ok),
                diverged=sum(r.status == "diverged" for r in members),
                failed=sum(r.status not in ("ok", "diverged") for r in members),
                seeds=sorted({r.seed for r in members if r.seed is not None}),
                l2={f: mean_std([r.l2[f] for r in ok if f in r.l2]) for f in fields},
                step_ms=median([r.step_ms for r in ok]),
                peak_rss_mb=median([r.peak_rss_mb for r in ok]),
                cuda_max_allocated_mb=median([r.cuda_max_allocated_mb for r in ok]),
            )
        )
    add_ratios(rows)
    return rows


def add_ratios(rows: list[Row]) -> None:
    baselines = {row.panel: row for row in rows if row.is_baseline}
    for row in rows:
        base = baselines.get(row.panel)
        if base is None:
            continue
        row.speedup = _ratio(base.step_ms, row.step_ms)
        row.rss_ratio = _ratio(row.peak_rss_mb, base.peak_rss_mb)
        row.cuda_ratio = _ratio(row.cuda_max_allocated_mb, base.cuda_max_allocated_mb)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def field_names(rows: list[Row]) -> list[str]:
    """Every error field over all rows, in first-seen order (u, v, p for Navier-Stokes)."""
    return list(dict.fromkeys(name for row in rows for name in row.l2))


def bad_runs(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.status != "ok"]


def describe_problem(run: Run) -> str:
    """The line under the table that says what went wrong with a run that is not ok."""
    if run.error:
        return run.error
    if run.status == "diverged":
        skipped = f", {run.skipped_steps} skipped steps" if run.skipped_steps is not None else ""
        return f"diverged after {run.steps_run} steps{skipped}"
    if run.status == "unknown":
        return "summary.json records no status"
    return "no error recorded"


def notes(runs: list[Run]) -> list[str]:
    """Warnings a reader needs before trusting the table."""
    found = []
    for key, members in group_runs(runs).items():
        configs = {_training_overrides(r) for r in members if r.overrides is not None}
        if len(configs) > 1:
            variants = "; ".join(" ".join(c) or "(none)" for c in sorted(configs))
            found.append(
                f"{'/'.join(str(k) for k in key)} averages runs with different overrides: "
                f"{variants}"
            )
        seeds = Counter(r.seed for r in members if r.status == "ok")
        repeated = sorted(s for s, count in seeds.items() if count > 1 and s is not None)
        if repeated:
            found.append(
                f"{'/'.join(str(k) for k in key)} has several ok runs with seed(s) {repeated}"
            )
    assumed = [r for r in runs if r.steps_assumed]
    if assumed:
        found.append(
            f"{len(assumed)} run(s) recorded no steps and were put with the only steps value of "
            f"their problem/model/precision: " + ", ".join(f"`{r.folder}`" for r in assumed)
        )
    if any(r.in_sweep for r in runs):
        found.append(
            "peak RSS (and CUDA max allocated) is a process-wide peak: jobs of one Hydra multirun "
            "share a process (the basic launcher) or a few worker processes (joblib), so a job's "
            "figure includes earlier jobs'; activation memory per setting is what "
            "scripts/benchmark.py measures"
        )
    return found


def _training_overrides(run: Run) -> tuple[str, ...]:
    """The overrides that change what is trained (not the row key, logging or Hydra's own)."""
    kept = []
    for override in run.overrides or ():
        key = override.lstrip("+~").split("=", 1)[0]
        if key not in IDENTITY_OVERRIDES and not key.startswith("hydra."):
            kept.append(override)
    return tuple(sorted(kept))


def header_facts(runs: list[Run]) -> dict[str, Any]:
    """Counts of the commits, devices and torch versions the runs were made with."""
    return {
        "runs": len(runs),
        "commits": dict(Counter(r.git_commit or "unknown" for r in runs)),
        "devices": dict(Counter(r.device or "unknown" for r in runs)),
        "torch": dict(Counter(r.torch or "unknown" for r in runs)),
    }
