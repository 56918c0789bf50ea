"""Time a full PINN step with reverse-mode `Derivatives` against forward-mode `TaylorDerivatives`.

    python scripts/bench_derivatives.py                      # Burgers + Navier-Stokes, fp32 + bf16
    python scripts/bench_derivatives.py --steps 50 --threads 2 --precisions fp32

A step is what `PINNModule` does per Adam step: the network on every condition's points, the
residuals, the summed mean-squared loss, its backward and the Adam update. The Taylor path carries
only the derivatives each condition asks for (`probe_derivatives`: none on boundaries), as the
proposed integration would.

The machine may be shared, so the methods are interleaved step by step (each on its own copy of
the same network with its own Adam): a burst of load hits both alike, and the speed-up is also
reported as the median of the per-step ratios. `--threads` defaults to 1 because on a busy CPU
OpenMP workers spin-waiting for a core slow every step down by an order of magnitude.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.taylor import TaylorDerivatives, probe_derivatives
from mpsciml.models.mlp import MLP
from mpsciml.problems.base import Problem
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.navier_stokes import NavierStokes

ROOT = Path(__file__).resolve().parents[1]
CASES: dict[str, Callable[[], tuple[Problem, tuple[int, ...]]]] = {
    "burgers": lambda: (Burgers(), (32, 32, 32)),  # 2048 + 64 + 128 points
    "navier_stokes": lambda: (NavierStokes(), (100,) * 5),  # 2601 + 400 + 100 points
}
METHODS = ("autograd", "taylor")


def make_step(
    problem: Problem, model: nn.Module, method: str, precision: str
) -> Callable[[], float]:
    """A closure doing one training step of `method` on `model`; returns the loss."""
    conditions = problem.conditions(0)
    names = (problem.input_names, problem.output_names)
    points = {name: c.points.float() for name, c in conditions.items()}
    carry = {
        name: probe_derivatives(c.residual, model, c.points, *names)
        for name, c in conditions.items()
    }
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def context() -> contextlib.AbstractContextManager:
        if precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss: Tensor = torch.zeros(())
        with context():
            for name, condition in conditions.items():
                inputs = points[name].detach().requires_grad_(True)
                if method == "taylor":
                    d = TaylorDerivatives(model, inputs, *names, carry=carry[name])
                else:
                    d = Derivatives(inputs, model(inputs), *names)
                residual = condition.residual(d)
                values = residual.values() if isinstance(residual, Mapping) else [residual]
                for value in values:
                    loss = loss + torch.mean(value.float() ** 2)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def bench(case: str, precision: str, steps: int, warmup: int) -> dict[str, Any]:
    problem, hidden = CASES[case]()
    torch.manual_seed(0)
    model = MLP(len(problem.input_names), len(problem.output_names), hidden=hidden)
    run = {m: make_step(problem, copy.deepcopy(model), m, precision) for m in METHODS}
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    losses: dict[str, list[float]] = {m: [] for m in METHODS}
    for i in range(warmup + steps):
        for method in METHODS if i % 2 == 0 else reversed(METHODS):  # alternate who goes first
            start = time.perf_counter()
            loss = run[method]()
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times[method].append(elapsed * 1e3)
                losses[method].append(loss)
    medians = {m: statistics.median(times[m]) for m in METHODS}
    ratios = [a / t for a, t in zip(times["autograd"], times["taylor"], strict=True)]
    last = {m: losses[m][-1] for m in METHODS}
    return {
        "case": case,
        "precision": precision,
        "points": sum(len(c.points) for c in problem.conditions(0).values()),
        "hidden": list(hidden),
        "median_ms": medians,
        "p10_p90_ms": {
            m: [statistics.quantiles(times[m], n=10)[0], statistics.quantiles(times[m], n=10)[-1]]
            for m in METHODS
        },
        "speedup_of_medians": medians["autograd"] / medians["taylor"],
        "speedup_median_paired": statistics.median(ratios),
        "final_loss": last,
        "final_loss_rel_diff": abs(last["taylor"] - last["autograd"]) / abs(last["autograd"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"]
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_derivatives.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = []
    header = (
        f"{'case':<14}{'prec':<6}{'autograd ms':>12}{'taylor ms':>11}{'speed-up':>10}{'paired':>8}"
    )
    print(header)
    for case in args.cases:
        for precision in args.precisions:
            r = bench(case, precision, args.steps, args.warmup)
            results.append(r)
            ms = r["median_ms"]
            print(
                f"{case:<14}{precision:<6}{ms['autograd']:>12.1f}{ms['taylor']:>11.1f}"
                f"{r['speedup_of_medians']:>9.2f}x{r['speedup_median_paired']:>7.2f}x",
                flush=True,
            )
    record = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "steps": args.steps,
        "warmup": args.warmup,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
