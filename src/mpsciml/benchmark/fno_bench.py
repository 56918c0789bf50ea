"""The benchmark of a spectral model (`scripts/benchmark.py problem=darcy model=fno`): Tu et
al.'s settings side by side (`settings.FNO_SETTINGS`), neuraloperator's FNO at the same size,
and the CP contraction orders at this size; printed, written as JSON, and plotted.

The script composes the configs and runs the interleaved rows (`run_case`, handed in, so this
module needs nothing of the command line); everything FNO-specific lives here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from mpsciml.benchmark.contraction import contraction_benchmark
from mpsciml.benchmark.fno_report import (
    contraction_table,
    equal_size,
    equal_size_table,
    plot_settings,
    settings_table,
)
from mpsciml.benchmark.report import write_json
from mpsciml.benchmark.settings import Setting, spectral_settings

RunCase = Callable[[list[str], argparse.Namespace, int, Path, str, list[Setting]], dict[str, Any]]


def spatial_dims(base: DictConfig) -> int:
    """The problem's spatial dimensions, from its class (`coordinate_names`), 2 if unknown."""
    try:
        return len(get_class(base.problem._target_).coordinate_names)
    except Exception:  # a problem class without the attribute: the usual 2-D grid
        return 2


def measure_contraction(base: DictConfig) -> dict[str, Any]:
    """The CP contraction at the configured FNO's size: its batch, width and kept modes."""
    n_modes = base.model.n_modes
    modes = (n_modes,) * spatial_dims(base) if isinstance(n_modes, int) else tuple(n_modes)
    return contraction_benchmark(
        int(base.problem.get("batch_size") or 20),
        int(base.model.hidden_channels),
        tuple(min(int(m), int(base.problem.resolution)) for m in modes),
        base.model.get("rank", 0.05),
    )


def benchmark_spectral(
    problem: str,
    overrides: list[str],
    args: argparse.Namespace,
    out: Path,
    base: DictConfig,
    work: Path,
    run_case: RunCase,
    machine: dict[str, Any],
    command: str,
) -> dict[str, Any]:
    """Run, print and write one problem's FNO benchmark; the record written as JSON."""
    settings = spectral_settings(base, args.overrides, args.settings, args.reference)
    grid = "x".join(str(base.problem.resolution) for _ in range(spatial_dims(base)))
    label = f"{problem} {grid} model={base.model._target_.rsplit('.', 1)[-1]}"
    case = run_case(overrides, args, args.steps, work, label, settings)
    case.update(grid=grid, batch_size=base.problem.get("batch_size"))
    contraction = measure_contraction(base) if args.contraction else None
    comparison = equal_size(case["rows"])
    print(
        f"\n{problem} | grid {grid} | batch {case['batch_size']} | {case['device']} "
        f"| {torch.get_num_threads()} thread(s) | {args.steps} timed steps (after "
        f"{args.warmup} warm-up) per row | {case['seconds']:.0f} s\n"
    )
    print(settings_table(case["rows"]))
    print("\nour FNO against neuraloperator's at equal size (fp32):\n")
    print(equal_size_table(comparison))
    if contraction is not None:
        print()
        print(contraction_table(contraction))
    for name, failure in case["failures"].items():
        print(f"\n{name} failed:\n{failure}", file=sys.stderr)
    record = {
        "problem": problem,
        "command": command,
        "machine": machine,
        "settings": {
            "rows": [s.name for s in settings],
            "steps": args.steps,
            "warmup": args.warmup,
            "turn": args.turn,
            "overrides": overrides,
        },
        "cases": [case],
        "equal_size": comparison,
        "contraction": contraction,
    }
    path = write_json(out if out.suffix == ".json" else out / f"{problem}.json", record)
    where = f"{machine['cuda'] or machine['cpu']}, {machine['threads']} thread(s)"
    title = f"{problem} {grid}: FNO settings x fp32 | {where}"
    plot = plot_settings(case["rows"], path.with_name(f"{path.stem}_settings.png"), title)
    print(f"written: {path}" + (f", {plot}" if plot else ""))
    return record
