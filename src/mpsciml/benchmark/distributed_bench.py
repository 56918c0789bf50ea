"""The distributed benchmark of DiffNet on poisson_grid (issue 14): scaling over processes and the
race of Adam against Adam -> L-BFGS; `scripts/bench_distributed.py` is its command line.

Scaling. For each grid and process count P, real DDP runs (`ddp_case`) of
- weak scaling: the same batch per process b, global batch b * P;
- strong scaling: the same global batch G (default b * max P), split over the P processes;
- at P > 1 and the weak batch, the gradient all-reduce also compressed to fp16 and bf16;
- at P = 1 and the weak batch, also the run without DDP (trainer=default): DDP's own cost;
- at P > 1 and the weak batch on CPUs, also with `trainer.collective_wait=block` (every rank
  sleeps in its exchanges instead of polling them): what polling saves (`collective_wait`;
  NCCL's collectives are never polled, so no such row on CUDA);
- at P > 1, P independent runs without DDP at once, b fields each (nothing exchanged): what P
  processes cost each other on this machine (shared memory bandwidth and caches, the host's
  scheduling of its cores), the ceiling of any weak scaling here. Weak scaling against it,
  T(P independent, b) / T(P, b P), is what DDP itself loses.
Each launch of P processes runs all its cases one after another (warm-up steps, then timed
ones); launches alternate over the rounds (1, 2, .., 2, 1, ..), so a slow minute of a shared
machine falls on every process count alike, and so does the order of the cases within a launch
(odd rounds run them in reverse), so no case is always a fresh process's first. A step's time
is the largest over the ranks (they wait for each other in the all-reduce anyway); a row's
median is over every timed step of every round. Efficiencies: weak E(P) = T(1, b) / T(P, b P);
strong E(P) = T(1, G) / (P T(P, G)); each as a ratio of the medians and as the median over
rounds of the round's own ratio (`paired`: drift between rounds cancels).

The race. With P processes: Adam for its budget (the recipe's Adam, cosine to 0 over the
budget); its final loss on fixed held-out fields (`loss_monitor`) is the target. Then, in the
same processes, Adam for `switch` steps and L-BFGS until the target is reached or `cap_factor`
x Adam's time has passed. Reported: each route's wall time to first reach the target and
their ratio (the paper: higher-order methods 2-3x faster; our target: <= 0.5). With
`fixed_fields` both routes train on one fixed set of fields (a finite training set) and are
judged on its training loss: the setting of a fixed dataset, where L-BFGS's frozen batch is the
whole training set rather than a sample of an infinite one.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from mpsciml.benchmark.ddp_case import run_cases
from mpsciml.benchmark.ddp_processes import spawn
from mpsciml.benchmark.distributed_report import COMM_NAMES
from mpsciml.benchmark.loss_monitor import first_reached
from mpsciml.benchmark.timing import summarize

Compose = Callable[[list[str]], DictConfig]
Log = Callable[[str], None]

#: what every case adds to `problem=poisson_grid model=diffnet`: DDP for every process count
#: (one code path, 1 process included), no logger, checkpoints, validation or progress bar
BASE_OVERRIDES = [
    "problem=poisson_grid",
    "model=diffnet",
    "trainer=ddp",
    "logger=none",
    "~callbacks",
    "+trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
]
COMMS = ("fp32", "fp16", "bf16")  # fp32: DDP's own all-reduce (trainer.comm_precision=null)
NO_DDP = "none"  # the 1-process reference row without DDP (trainer=default)
INDEPENDENT = "independent"  # P runs without DDP at once, nothing exchanged (the ceiling)
BLOCKING = "block"  # fp32 all-reduce, the exchanges awaited asleep (trainer.collective_wait=block)


@dataclass
class ScalingPlan:
    processes: list[int]
    grids: list[int]
    batch_per_process: int
    global_batch: int | None = None
    comms: list[str] = field(default_factory=lambda: list(COMMS))
    steps: int = 5
    warmup: int = 2
    repeats: int = 2
    accelerator: str = "cpu"
    threads: int = 1
    overrides: list[str] = field(default_factory=list)

    @property
    def strong_batch(self) -> int:
        return self.global_batch or self.batch_per_process * max(self.processes)


def comm_override(comm: str) -> str:
    return f"trainer.comm_precision={'null' if comm == 'fp32' else comm}"


def scaling_keys(plan: ScalingPlan) -> dict[int, list[dict[str, Any]]]:
    """Per process count, its cases as {grid, processes, batch, comm, weak, strong}."""
    keys: dict[int, list[dict[str, Any]]] = {}
    for p in plan.processes:
        weak, strong = plan.batch_per_process * p, plan.strong_batch
        keys[p] = []
        for grid in plan.grids:
            for batch in sorted({weak, strong}):
                comms = [c for c in plan.comms if p > 1 and batch == weak] or ["fp32"]
                for comm in sorted(set(comms) | {"fp32"}, key=COMMS.index):
                    key = {"grid": grid, "processes": p, "batch": batch, "comm": comm}
                    keys[p].append(key | {"weak": batch == weak, "strong": batch == strong})
            if p == 1:  # the same run without DDP: what one process costs without it
                key = {"grid": grid, "processes": 1, "batch": weak, "comm": NO_DDP}
                keys[p].append(key | {"weak": False, "strong": False})
            else:  # blocking waits (gloo only: NCCL is never polled); and p runs at once:
                # what the processes cost each other
                waits = (BLOCKING,) if plan.accelerator == "cpu" else ()
                for comm in (*waits, INDEPENDENT):
                    key = {"grid": grid, "processes": p, "batch": weak, "comm": comm}
                    keys[p].append(key | {"weak": False, "strong": False})
    return keys


def label(key: dict[str, Any]) -> str:
    per = key["batch"] / key["processes"]
    comm = COMM_NAMES.get(key["comm"], f"comm {key['comm']}")
    return f"grid {key['grid']}x{key['grid']} batch {key['batch']} ({per:g}/process) {comm}"


def scaling_case(plan: ScalingPlan, key: dict[str, Any], compose: Compose) -> dict[str, Any]:
    independent = key["comm"] == INDEPENDENT
    ddp = key["comm"] != NO_DDP and not independent
    overrides = [
        *(o for o in BASE_OVERRIDES if ddp or o != "trainer=ddp"),
        f"trainer.accelerator={plan.accelerator}",
        f"trainer.devices={1 if independent else key['processes']}",
        f"problem.grid={key['grid']}",
        f"problem.batch_size={key['batch'] // key['processes'] if independent else key['batch']}",
        "problem.n_test=1",  # the module solves its test set at build; unused here
        "optimizer=adam",
        f"trainer.max_steps={plan.warmup + plan.steps}",
        *([comm_override(key["comm"])] if ddp and key["comm"] != BLOCKING else []),
        *(["trainer.collective_wait=block"] if key["comm"] == BLOCKING else []),
        *plan.overrides,
    ]
    case = {"cfg": compose(overrides), "label": label(key), "warmup": plan.warmup}
    return case | ({"independent": True} if independent else {})


def launch(processes: int, cases: list[dict[str, Any]], threads: int) -> list[list[Any]]:
    """Per case, every rank's result (spawn returns per rank, per case)."""
    per_rank = spawn(run_cases, processes, cases, threads=threads)
    return [list(results) for results in zip(*per_rank, strict=True)]


def run_scaling(plan: ScalingPlan, compose: Compose, log: Log = print) -> dict[str, Any]:
    keys = scaling_keys(plan)
    cases = {p: [scaling_case(plan, k, compose) for k in ks] for p, ks in keys.items()}
    prepare_test_sets([c["cfg"] for p in cases for c in cases[p]])
    rounds: dict[int, list[list[list[Any]]]] = {p: [] for p in plan.processes}
    for r in range(plan.repeats):
        for p in plan.processes if r % 2 == 0 else plan.processes[::-1]:
            # odd rounds run the cases in reverse: a fresh process's first case can be slower
            forward = r % 2 == 0
            order = "" if forward else ", in reverse order"
            log(f"round {r + 1}/{plan.repeats}: {p} process(es), {len(cases[p])} case(s){order}")
            results = launch(p, cases[p] if forward else cases[p][::-1], plan.threads)
            rounds[p].append(results if forward else results[::-1])
    rows = []
    for p, ks in keys.items():
        for index, key in enumerate(ks):
            rows.append(scaling_row(key, [rnd[index] for rnd in rounds[p]], plan.warmup))
    return {"rows": rows, "efficiency": efficiencies(rows, plan)}


def exchange_ms(per_round: list[list[Any]], warmup: int) -> float | None:
    """Median over the timed steps of every round of the ranks' mean time in the synchronised
    BatchNorm's exchanges (ms); None where our CPU layer did not synchronise."""
    steps = []
    for ranks in per_round:
        if any(r.get("batchnorm_exchange_s") is None for r in ranks):
            return None
        timed = [r["batchnorm_exchange_s"][warmup:] for r in ranks]
        steps += [statistics.fmean(step) for step in zip(*timed, strict=True)]
    return 1e3 * statistics.median(steps) if steps else None


def scaling_row(key: dict[str, Any], per_round: list[list[Any]], warmup: int) -> dict[str, Any]:
    """One case over its rounds: step = the slowest rank's; median over every timed step."""
    steps_by_round = []
    for ranks in per_round:
        samples = [r["samples_s"][warmup:] for r in ranks]
        steps_by_round.append([max(s) for s in zip(*samples, strict=True)])
    every = [s for steps in steps_by_round for s in steps]
    row = dict(key) | summarize(every, 0)
    row["round_median_ms"] = [1e3 * statistics.median(s) for s in steps_by_round]
    row["samples_per_s"] = key["batch"] / (row["median_ms"] / 1e3)
    rank0 = per_round[0][0]
    timed_bytes = rank0["bytes_per_step"][warmup:]
    row["allreduce_bytes_per_step"] = statistics.median(timed_bytes) if timed_bytes else None
    row["batchnorm_sync_bytes_per_step"] = rank0["batchnorm_sync_bytes"]
    row["batchnorm_exchange_ms_per_step"] = exchange_ms(per_round, warmup)
    row["parameters"] = rank0["parameters"]
    row["collective_wait"] = [r.get("collective_wait") for r in per_round[0]]  # per rank
    row["last_loss"] = rank0["last_loss"]
    row["samples_ms"] = [[round(1e3 * s, 3) for s in steps] for steps in steps_by_round]
    return row


def _find(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    return next((r for r in rows if all(r[k] == v for k, v in match.items())), None)


def _paired(a: dict[str, Any], b: dict[str, Any], scale: float) -> float | None:
    """Median over rounds of a's round median / (scale x b's round median)."""
    ratios = [
        x / (scale * y) for x, y in zip(a["round_median_ms"], b["round_median_ms"], strict=True)
    ]
    return statistics.median(ratios) if ratios else None


def efficiencies(rows: list[dict[str, Any]], plan: ScalingPlan) -> list[dict[str, Any]]:
    """Weak and strong scaling efficiency per grid and process count (fp32 all-reduce)."""
    out = []
    b, g = plan.batch_per_process, plan.strong_batch
    for grid in plan.grids:
        weak1 = _find(rows, grid=grid, processes=1, batch=b, comm="fp32")
        strong1 = _find(rows, grid=grid, processes=1, batch=g, comm="fp32")
        single = _find(rows, grid=grid, processes=1, batch=b, comm=NO_DDP)
        for p in plan.processes:
            weak = _find(rows, grid=grid, processes=p, batch=b * p, comm="fp32")
            strong = _find(rows, grid=grid, processes=p, batch=g, comm="fp32")
            entry: dict[str, Any] = {"grid": grid, "processes": p, "batch_per_process": b}
            if weak1 and weak:
                entry["weak_efficiency"] = weak1["median_ms"] / weak["median_ms"]
                entry["weak_efficiency_paired"] = _paired(weak1, weak, 1.0)
            if single and weak:  # against one process without DDP at all
                entry["weak_efficiency_vs_no_ddp"] = single["median_ms"] / weak["median_ms"]
            apart = _find(rows, grid=grid, processes=p, batch=b * p, comm=INDEPENDENT)
            if single and apart:  # the machine's own ceiling: nothing exchanged at all
                entry["independent_efficiency"] = single["median_ms"] / apart["median_ms"]
            if apart and weak:  # what DDP loses beyond that ceiling
                entry["weak_efficiency_vs_independent"] = apart["median_ms"] / weak["median_ms"]
            blocking = _find(rows, grid=grid, processes=p, batch=b * p, comm=BLOCKING)
            if weak1 and blocking and weak:  # the same runs with every exchange awaited asleep
                entry["weak_efficiency_blocking"] = weak1["median_ms"] / blocking["median_ms"]
                entry["poll_gain"] = blocking["median_ms"] / weak["median_ms"]
                entry["poll_gain_paired"] = _paired(blocking, weak, 1.0)
            if strong1 and strong:
                entry["strong_speedup"] = strong1["median_ms"] / strong["median_ms"]
                entry["strong_efficiency"] = entry["strong_speedup"] / p
                entry["strong_efficiency_paired"] = _paired(strong1, strong, float(p))
            out.append(entry)
    return out


@dataclass
class RacePlan:
    processes: list[int]
    grid: int = 64
    batch: int = 8
    adam_steps: int = 200
    switch: int = 50
    lbfgs_steps: int = 100
    every: int = 5
    fields: int = 8
    cap_factor: float = 1.5
    accelerator: str = "cpu"
    threads: int = 1
    overrides: list[str] = field(default_factory=list)
    #: both routes on one fixed set of `batch` fields (fixed_fields=true), judged on its training
    #: loss; False: fresh fields every Adam step, judged on `fields` held-out fields
    fixed_fields: bool = False


def race_cases(plan: RacePlan, p: int, compose: Compose) -> list[dict[str, Any]]:
    common = [
        *BASE_OVERRIDES,
        f"trainer.accelerator={plan.accelerator}",
        f"trainer.devices={p}",
        f"problem.grid={plan.grid}",
        f"problem.batch_size={plan.batch}",
        f"problem.n_test={plan.fields}",
        *(["fixed_fields=true"] if plan.fixed_fields else []),
    ]
    monitor: dict[str, Any] = {"every": plan.every, "fields": plan.fields}
    if plan.fixed_fields:
        monitor |= {"judged_on": "training", "fields": plan.batch}
    adam = [*common, "optimizer=adam", f"trainer.max_steps={plan.adam_steps}", *plan.overrides]
    route = [
        *common,
        "optimizer=adam_lbfgs",
        f"optimizer.switch_step={plan.switch}",
        f"trainer.max_steps={plan.switch + plan.lbfgs_steps}",
        *plan.overrides,
    ]
    adam_cfg = compose(adam)
    monitor["seed"] = int(adam_cfg.seed)  # whose fields of step 0 are the training set
    return [
        {"cfg": adam_cfg, "label": f"Adam {plan.adam_steps} steps", "monitor": monitor},
        {
            "cfg": compose(route),
            "label": f"Adam {plan.switch} -> L-BFGS",
            "monitor": monitor | {"target": "previous", "cap_factor": plan.cap_factor},
        },
    ]


def run_race(plan: RacePlan, compose: Compose, log: Log = print) -> dict[str, Any]:
    rows = []
    for p in plan.processes:
        log(f"optimisers: {p} process(es): Adam, then Adam -> L-BFGS to Adam's final loss")
        cases = race_cases(plan, p, compose)
        prepare_test_sets([c["cfg"] for c in cases])
        adam, route = (ranks[0] for ranks in launch(p, cases, plan.threads))
        rows.append(race_row(p, adam, route))
    return {"rows": rows}


def race_row(p: int, adam: dict[str, Any], route: dict[str, Any]) -> dict[str, Any]:
    target = route["monitor"]["target"]
    adam_at = first_reached(adam["monitor"]["records"], target)
    route_at = first_reached(route["monitor"]["records"], target)
    lbfgs = [r for r in route["monitor"]["records"] if r["phase"] == "lbfgs"]
    row: dict[str, Any] = {
        "processes": p,
        "target_loss": target,
        "adam_steps": adam["steps_run"],
        "adam_seconds_to_target": adam_at["seconds"] if adam_at else None,
        "adam_rel_l2": adam["rel_l2"],
        "route_steps": route["steps_run"],
        "route_lbfgs_steps": len(lbfgs),
        "route_reached": route_at is not None,
        "route_seconds_to_target": route_at["seconds"] if route_at else None,
        "route_stopped": route["monitor"]["stopped"],
        "route_final_loss": route["monitor"]["records"][-1]["loss"],
        "route_rel_l2": route["rel_l2"],
        "adam_curve": adam["monitor"]["records"],
        "route_curve": route["monitor"]["records"],
    }
    if route_at and adam_at:
        row["time_ratio"] = route_at["seconds"] / adam_at["seconds"]
    return row


def prepare_test_sets(configs: list[DictConfig]) -> None:
    """Solve (or read from the cache) every case's held-out set once here, before the ranks
    start: otherwise every rank of every launch would solve it at the same moment."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    seen = set()
    for cfg in configs:
        key = OmegaConf.to_yaml(cfg.problem, resolve=True)
        if key not in seen:
            seen.add(key)
            instantiate(cfg.problem).test_data()
