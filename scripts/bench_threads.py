"""How many torch CPU threads a run should use: step times by thread count, idle and under load.

    python scripts/bench_threads.py                 # burgers + navier_stokes, idle and loaded
    python scripts/bench_threads.py --problems burgers --threads 1 2 4 --load 0 4

Why: a small PINN step is many tiny operators; with several intra-op (OpenMP) threads each one
waits for all its threads, and on a machine whose cores are busy with other work a thread that
was descheduled stalls every operator (the issue measured the same 20 L-BFGS steps at 458 s with
2 threads and 30 s with 1 under load). This script measures it on the machine at hand, so the
default rule (`threads: auto`, see `mpsciml.threads`) rests on numbers.

Each cell is a real run of `mpsciml.train.run` (Lightning, our precision plugin, the problem's
recipe network and points), fp32, no logger, no validation until the end: the median ms of an
Adam step (`--adam-steps`) and of an L-BFGS step (`--lbfgs-steps`, up to 20 loss evaluations
each). `--load K` starts K busy-looping processes first (one core each), the "other work" of a
shared machine. Prints a table and writes JSON under outputs/bench_threads/.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from mpsciml.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]


def busy_loop() -> None:
    """One core's worth of other work."""
    while True:
        pass


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["burgers", "navier_stokes"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, os.cpu_count() or 1])
    parser.add_argument("--load", nargs="+", type=int, default=[0, os.cpu_count() or 1])
    parser.add_argument("--adam-steps", type=int, default=150)
    parser.add_argument("--lbfgs-steps", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_threads")
    args = parser.parse_args()
    if min(args.threads) < 1 or min(args.load) < 0 or args.adam_steps < 2 or args.lbfgs_steps < 2:
        parser.error("--threads >= 1, --load >= 0, --adam-steps and --lbfgs-steps >= 2")
    return args


def step_ms(problem: str, phase: str, steps: int, threads: int, folder: Path) -> float | None:
    """Median ms per step of one short real run."""
    from mpsciml.train import run  # Lightning and torch load only once the arguments are fine

    overrides = [
        f"problem={problem}",
        f"optimizer={phase}",
        f"trainer.max_steps={steps}",
        f"val_every={steps}",
        f"threads={threads}",
        "logger=none",
        "~callbacks",
        "plots=false",
        "trainer.enable_progress_bar=false",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder)
    return run(cfg).get("step_ms")


def main() -> None:
    args = parse_args()
    register_resolvers()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for load in args.load:
            workers = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(load)]
            for worker in workers:
                worker.start()
            try:
                for problem in args.problems:
                    for phase, steps in (("adam", args.adam_steps), ("lbfgs", args.lbfgs_steps)):
                        for threads in args.threads:
                            folder = Path(scratch) / f"{problem}-{phase}-{load}-{threads}"
                            ms = step_ms(problem, phase, steps, threads, folder)
                            rows.append(
                                {
                                    "problem": problem,
                                    "phase": phase,
                                    "load": load,
                                    "threads": threads,
                                    "step_ms": ms,
                                }
                            )
                            print(
                                f"{problem:<14} {phase:<6} load {load} threads {threads}: "
                                f"{ms:.1f} ms/step",
                                flush=True,
                            )
            finally:
                for worker in workers:
                    worker.terminate()
    print_table(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    facts = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    path.write_text(json.dumps({"machine": facts, "rows": rows}, indent=2))
    print(f"\nwrote {path}")


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per (problem, phase, load): ms/step per thread count and the ratio to 1 thread."""
    threads = sorted({r["threads"] for r in rows})
    print(
        "\n| problem | phase | busy cores | "
        + " | ".join(f"{t} thr ms" for t in threads)
        + " | "
        + " | ".join(f"{t} thr / 1 thr" for t in threads[1:])
        + " |"
    )
    print("|---" * (3 + 2 * len(threads) - 1) + "|")
    keys = dict.fromkeys((r["problem"], r["phase"], r["load"]) for r in rows)
    for problem, phase, load in keys:
        cell = {
            r["threads"]: r["step_ms"]
            for r in rows
            if (r["problem"], r["phase"], r["load"]) == (problem, phase, load)
        }
        base = cell.get(1)
        times = " | ".join(f"{cell[t]:.1f}" for t in threads)
        ratios = " | ".join(f"{cell[t] / base:.2f}" if base else "-" for t in threads[1:])
        print(f"| {problem} | {phase} | {load} | {times} | {ratios} |")


if __name__ == "__main__":
    main()
