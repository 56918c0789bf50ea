"""Distributed DiffNet on poisson_grid: scaling over processes, Adam vs Adam -> L-BFGS, precisions.

    python scripts/bench_distributed.py                                  # all three parts, CPU
    python scripts/bench_distributed.py --parts scaling --grid 128 256 --processes 1,2
    python scripts/bench_distributed.py --parts optimizers --processes 1,2 --adam-steps 200
    python scripts/bench_distributed.py --parts optimizers --race-fields fixed   # finite set
    python scripts/bench_distributed.py --parts precision --precision-grid 64
    python scripts/bench_distributed.py --tiny --out /tmp/tiny.json      # smallest config (tests)
    # a GPU node (one process per GPU, NCCL), DiffNet at 1024x1024:
    python scripts/bench_distributed.py --parts scaling --device cuda --grid 1024 \\
        --processes 1,2,4,8 --batch-per-process 4 --steps 10 --repeats 3

What it measures (problem=poisson_grid model=diffnet, the recipe's network unless overridden):

1. scaling: time per step and samples/s against the number of processes, each process with
   --threads threads (default 1). Every process count runs under trainer=ddp (one code path; one
   process is DDP with a world of one), as REAL processes: the script spawns them on this node
   and each builds its run with `mpsciml.compose.build` from the config `python train.py
   <overrides>` composes (our DDP strategy, the CPU all-reduce BatchNorm, the comm hook), then
   `trainer.fit` (plus, at 1 process, the same run without DDP: what DDP itself costs, and at
   P > 1, P such runs at once with nothing exchanged: what P processes cost each other on this
   machine, the ceiling of weak scaling here; "weak vs independent runs" is DDP's own loss).
   Weak scaling: --batch-per-process fields per process; strong scaling: the --global-batch
   (default batch-per-process x max processes) split over the processes. Bytes all-reduced per
   step and rank (the gradient buckets, counted by `comm_hooks.BytesCounter`) with fp32 and with
   the fp16/bf16 compression hooks (trainer.comm_precision); the synchronised BatchNorm's own
   exchanges (our CPU layer; on CUDA torch's, not counted) are listed apart: their bytes and
   the wall time a step spends in them, waiting for the other ranks included (`model.norm=group`
   exchanges nothing inside the network: the comparison that shows what they cost). --warmup steps
   per case are not timed; the median is over --steps steps x --repeats rounds, and the rounds
   alternate the process counts (1, 2, 2, 1, ...) so a shared machine's load falls on all
   alike. A step's time is the slowest rank's. Efficiency: weak T(1, b) / T(P, bP), strong
   T(1, G) / (P T(P, G)), from the medians and paired by round.
2. optimizers: with P processes, Adam for --adam-steps (the recipe's Adam with its cosine to 0);
   its final loss on --fields fixed held-out fields is the target. Then Adam for --switch steps
   and L-BFGS until that loss is reached (or --cap-factor x Adam's time is spent). The loss is
   always evaluated on the same held-out fields (training fields differ every step), outside
   the clock, and after every L-BFGS step (one step = up to max_iter=20 evaluations, so its
   time to target is that of the end of the step that reaches it: an upper bound). Reported:
   the time of each to reach the target and the ratio (issue 14's target: <= 0.5).
   `--race-fields fixed`: the race on a finite training set, as with a fixed dataset: both
   routes train every step on the same --race-batch fields (`fixed_fields=true`) and are judged
   on the training loss of those fields; the held-out relative L2 of both is reported beside.
3. precision: fp32 vs bf16_mixed vs mixed DiffNet steps in one process (the interleaved runners
   of scripts/benchmark.py): time per step, bytes saved for backward, and the relative L2 of u
   against our finite-volume reference after the same --precision-steps in every precision.

Hydra overrides (model.width=32, problem.loss=residual, ...) go to every run. Prints markdown
tables, writes JSON (--out, default outputs/bench_distributed/poisson_grid_diffnet.json) and beside
it `<stem>_scaling.png` (samples/s against processes, with the ideal line) and `<stem>_race.png`
(loss against wall seconds of both optimiser routes, and their target). Timings
on a shared machine are noisy; 2 processes on a 2-core machine measure less than a cluster would
(the processes share memory bandwidth and caches, and nothing else may run). A bad option stops
with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("scaling", "optimizers", "precision")
DEFAULT_OUT = ROOT / "outputs" / "bench_distributed" / "poisson_grid_diffnet.json"
#: the smallest configuration (--tiny): what the test runs, seconds per part
TINY = {
    "grid": [16],
    "batch_per_process": 1,
    "steps": 2,
    "warmup": 1,
    "repeats": 1,
    "race_grid": 16,
    "race_batch": 2,
    "adam_steps": 4,
    "switch": 2,
    "lbfgs_steps": 2,
    "every": 2,
    "fields": 2,
    "precision_grid": 16,
    "precision_batch": 2,
    "precision_steps": 2,
    "precision_warmup": 1,
    "precision_turn": 1,
    "overrides": ["model.width=4", "model.depth=2"],
}


class UsageError(Exception):
    """A bad option; its message is the one line the user sees."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers >= 1")
    return sorted(set(values))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    p.add_argument("--processes", type=_counts, default=[1, 2], help="e.g. 1,2,4 (default 1,2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process (default 1)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    g = p.add_argument_group("scaling")
    g.add_argument("--grid", type=int, nargs="+", default=[128, 256], help="nodes per side")
    g.add_argument("--batch-per-process", type=int, default=2, help="weak scaling's (default 2)")
    g.add_argument("--global-batch", type=int, default=None, help="strong scaling's")
    g.add_argument("--comm", nargs="+", choices=("fp32", "fp16", "bf16"), default=None)
    g.add_argument("--steps", type=int, default=5, help="timed steps per case and round")
    g.add_argument("--warmup", type=int, default=2, help="untimed steps first, per case")
    g.add_argument("--repeats", type=int, default=2, help="rounds over the process counts")
    g = p.add_argument_group("optimizers")
    g.add_argument("--race-grid", type=int, default=64)
    g.add_argument("--race-batch", type=int, default=8, help="global fields per step")
    g.add_argument("--adam-steps", type=int, default=200, help="Adam's budget")
    g.add_argument("--switch", type=int, default=50, help="Adam steps before L-BFGS")
    g.add_argument("--lbfgs-steps", type=int, default=100, help="at most, after the switch")
    g.add_argument("--every", type=int, default=5, help="Adam steps between loss evaluations")
    g.add_argument("--fields", type=int, default=8, help="held-out fields of the judged loss")
    g.add_argument("--cap-factor", type=float, default=1.5, help="x Adam's time, then give up")
    g.add_argument(
        "--race-fields",
        choices=("fresh", "fixed"),
        default="fresh",
        help="fresh: new fields every Adam step, loss on --fields held-out fields; fixed: both "
        "on one set of --race-batch fields (fixed_fields=true), loss on that set",
    )
    g = p.add_argument_group("precision")
    g.add_argument("--precisions", nargs="+", default=["fp32", "bf16_mixed", "mixed"])
    g.add_argument("--precision-grid", type=int, default=32)
    g.add_argument("--precision-batch", type=int, default=8)
    g.add_argument("--precision-steps", type=int, default=30, help="timed (and trained) steps")
    g.add_argument("--precision-warmup", type=int, default=3)
    g.add_argument("--precision-turn", type=int, default=3, help="steps per turn of a row")
    p.add_argument("--tiny", action="store_true", help="the smallest configuration (tests)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for train.py")
    args = p.parse_intermixed_args(argv)
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, [*value, *args.overrides] if key == "overrides" else value)
    check_args(args)
    return args


def check_args(args: argparse.Namespace) -> None:
    positive = (
        "threads", "batch_per_process", "steps", "repeats", "race_batch", "adam_steps",
        "lbfgs_steps", "every", "fields", "precision_batch", "precision_steps", "precision_turn",
    )  # fmt: skip
    for key in positive:
        if getattr(args, key) < 1:
            raise UsageError(f"--{key.replace('_', '-')}={getattr(args, key)}: must be >= 1")
    for key in ("warmup", "precision_warmup", "switch"):
        if getattr(args, key) < 0:
            raise UsageError(f"--{key.replace('_', '-')}={getattr(args, key)}: must be >= 0")
    if args.precision_warmup >= args.precision_steps:
        raise UsageError("--precision-warmup must be below --precision-steps (timed steps left)")
    if args.switch >= args.adam_steps:
        raise UsageError(f"--switch={args.switch} must be below --adam-steps={args.adam_steps}")
    if args.device == "cpu" and {"scaling", "optimizers"} & set(args.parts):
        from mpsciml.threads import usable_cores

        cores = usable_cores()
        if max(args.processes) * args.threads > cores:
            raise UsageError(
                f"--processes {max(args.processes)} x --threads {args.threads} is more than the "
                f"{cores} usable cores: the processes would wait for each other at every step"
            )
    strong = args.global_batch or args.batch_per_process * max(args.processes)
    if strong < max(args.processes):
        raise UsageError(
            f"--global-batch={strong}: fewer fields than {max(args.processes)} processes"
        )
    if args.race_batch < max(args.processes) and "optimizers" in args.parts:
        raise UsageError(f"--race-batch={args.race_batch}: fewer fields than the processes")
    if args.comm is None:
        args.comm = ["fp32", "fp16", "bf16"]


def make_compose(output_dir: Path) -> Any:
    """`compose(overrides)`: the config `python train.py <overrides>` composes (output here)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import open_dict

    def composed(overrides: list[str]) -> Any:
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides)
        except HydraException as exc:
            raise UsageError(str(exc).strip().splitlines()[0]) from None
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
        return cfg

    return composed


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from mpsciml.benchmark import distributed_bench as db
    from mpsciml.benchmark import distributed_report as rep
    from mpsciml.benchmark.diffnet_precision import PrecisionPlan, run_precisions
    from mpsciml.benchmark.report import machine

    torch.set_num_threads(args.threads)
    compose = make_compose(work)
    info = machine() | {"threads_per_process": args.threads}
    record: dict[str, Any] = {"command": " ".join(["python", *sys.argv]), "machine": info}
    print(
        f"{info['cuda'] or info['cpu']} | {info['cores']} cores | torch {info['torch']} "
        f"| {args.threads} thread(s) per process | timings on a shared machine are noisy"
    )
    started = time.perf_counter()
    if "scaling" in args.parts:
        plan = db.ScalingPlan(
            args.processes, args.grid, args.batch_per_process, args.global_batch, args.comm,
            args.steps, args.warmup, args.repeats, args.device, args.threads, args.overrides,
        )  # fmt: skip
        result = db.run_scaling(plan, compose)
        record["scaling"] = {"plan": vars(plan), **result}
        print("\nscaling (trainer=ddp, gloo on CPU / NCCL on CUDA):\n")
        print(rep.scaling_table(result["rows"]))
        print("\n" + rep.efficiency_table(result["efficiency"]))
        waits = rep.wait_table(result["rows"], result["efficiency"])
        if waits.count("\n") > 1:
            print("\nexchanges polled (trainer.collective_wait=poll, the default) or awaited "
                  "asleep (block):\n\n" + waits)  # fmt: skip
        comm = rep.comm_table(result["rows"])
        if comm.count("\n") > 1:
            print("\ngradient all-reduce compressed (DDP comm hooks):\n\n" + comm)
    if "optimizers" in args.parts:
        race = db.RacePlan(
            args.processes, args.race_grid, args.race_batch, args.adam_steps, args.switch,
            args.lbfgs_steps, args.every, args.fields, args.cap_factor, args.device,
            args.threads, args.overrides, args.race_fields == "fixed",
        )  # fmt: skip
        result = db.run_race(race, compose)
        record["optimizers"] = {"plan": vars(race), **result}
        judged = (
            f"one fixed training set; loss on those {args.race_batch} fields"
            if race.fixed_fields
            else f"fresh fields every Adam step; loss on {args.fields} held-out fields"
        )
        print(f"\noptimisers at {args.race_grid}x{args.race_grid}, global batch {args.race_batch}"
              f" ({judged}, outside the clock):\n")  # fmt: skip
        print(rep.race_table(result["rows"]))
    if "precision" in args.parts:
        plan_p = PrecisionPlan(
            args.precisions, args.precision_grid, args.precision_batch, args.precision_steps,
            args.precision_warmup, args.precision_turn, args.fields, args.device, args.overrides,
        )  # fmt: skip
        print(f"\nprecisions: {', '.join(args.precisions)}, one process ...", flush=True)
        result = run_precisions(plan_p, compose, lambda done, total: None)
        record["precision"] = {"plan": vars(plan_p), **result}
        print(f"\nDiffNet step, {args.precision_grid}x{args.precision_grid}, batch "
              f"{args.precision_batch}, {args.precision_steps} steps per precision:\n")  # fmt: skip
        print(rep.precision_table(result["rows"]))
        for name, failure in result["failures"].items():
            print(f"\n{name} failed:\n{failure}", file=sys.stderr)
    record["targets"] = targets(record)
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def targets(record: dict[str, Any]) -> dict[str, Any]:
    """Issue 14's targets, where this run measured them."""
    out: dict[str, Any] = {}
    for e in record.get("scaling", {}).get("efficiency", []):
        if e["grid"] == 256 and e["processes"] == 2 and "weak_efficiency" in e:
            value = e["weak_efficiency"]
            out["weak_scaling_256_2proc"] = {"value": value, "goal": ">= 0.8", "met": value >= 0.8}
    for r in record.get("optimizers", {}).get("rows", []):
        ratio = r.get("time_ratio")
        out[f"lbfgs_time_ratio_{r['processes']}proc"] = {
            "value": ratio,
            "goal": "<= 0.5",
            "met": ratio is not None and ratio <= 0.5,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from mpsciml.config import ConfigError, register_resolvers

    try:
        args = parse_args(argv)
        register_resolvers()
        from mpsciml.benchmark.ddp_case import quiet_lightning
        from mpsciml.benchmark.report import write_json

        quiet_lightning()
        with tempfile.TemporaryDirectory(prefix="mpsciml-bench-distributed-") as tmp:
            record = run(args, Path(tmp))
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for name, target in record["targets"].items():
        value = "-" if target["value"] is None else f"{target['value']:.2f}"
        verdict = "met" if target["met"] else "NOT met"
        print(f"target {name}: {value} (goal {target['goal']}): {verdict}")
    from mpsciml.benchmark.distributed_plots import write_plots

    path = write_json(args.out, record)
    pictures = "".join(f", {p}" for p in write_plots(record, path))
    print(f"written: {path}{pictures} ({record['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    raise SystemExit(main())
