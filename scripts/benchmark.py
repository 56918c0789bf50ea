"""Time and memory of a training step in several precisions, side by side, in one process.

    python scripts/benchmark.py                                  # burgers + navier_stokes
    python scripts/benchmark.py problem=navier_stokes --precisions fp32 mixed
    python scripts/benchmark.py problem=navier_stokes --sizes points=1000,4000,16000 width=32,128
    python scripts/benchmark.py problem=darcy model=fno          # Tu et al.'s FNO settings
    python scripts/benchmark.py problem=ns_vorticity model=fno --settings fp32 amp_half_tanh
    python scripts/benchmark.py --deepxde-setting --peers --compile   # issue 15's comparison

`--peers` adds DeepXDE and PINA on the same problem, points and network (`pip install -e
'.[peers]'`; not installed: listed as not run), our fp32 row as `python train.py` ships it
(progress bar, default callbacks), `lightning_loop`, the same run with a training step that does
nothing (Lightning's loop alone: with the fastest bare step, the least any step run by
`trainer.fit` costs; printed after the table), and `bare_compiled`, the bare loop in Taylor mode
under torch.compile; `--compile` adds our row with compile=true (and as shipped, with --peers);
`--laplacian-apart` our row with each term of a Laplacian its own Taylor stream (the step before
the summed stream: `python scripts/benchmark.py problem=navier_stokes --compile --laplacian-apart`).
`--python-wrapper` (with `--compile`) our compile=true row with `compile_cpp_wrapper=false`: the
step whose generated code runs from Python, against the C++ wrapper the CPU gets by default.
`--full-guards` (with `--compile`) our compile=true row with `compile_guards=full`: the fused step
checking every dynamo guard, against the lean set it checks by default.
`--deepxde-setting` is DeepXDE's Burgers example setting: problem=burgers problem.n_domain=2540
problem.n_boundary=80 problem.n_initial=160 model.hidden=[20,20,20] (tanh, Glorot normal); an
override you give wins. With either flag the default precisions are fp32 only. The table adds
each row's time over our fastest row and over the bare eager loop, and the losses (each tool's
own, and ours at every row's final weights): `mpsciml.benchmark.comparison`, `.peers`.

A spectral model (model=fno, model=neuralop_fno) is benchmarked in Tu et al.'s settings instead of
precisions (`mpsciml.benchmark.settings`): fp32 | AMP only (precision=mixed, spectral full) | half
spectral only (fp32, spectral half) | AMP + half spectral + tanh, the same four for
neuraloperator's FNO at the same size (`--no-reference` drops them; on a CPU only those with a
full spectral path run, the others are listed as not run), with throughput (samples/s) and what
the spectral layers ran per row; then our fp32 FNO against neuraloperator's, and the CP
contraction in the cheapest order against the naive one and the reconstructed dense weight
(`--no-contraction` drops it). JSON and `<problem>_settings.png` (time and saved bytes x fp32).

Hydra overrides (`problem=`, `model.hidden=[64,64]`, `derivatives=autograd`, ...) compose the run
exactly as `train.py` would, with these benchmark settings: Adam only (`optimizer=adam`: the
recipes' L-BFGS phase always runs in fp32), and no logger, checkpoints, validation or progress
bar (they are not the training step); an override on the command line wins over them.
`--sizes points=` sets `problem.n_domain`; `width=` sets every hidden layer's width, keeping the
depth.

How it measures, and why:
- Every row is a real `trainer.fit` of the module `mpsciml.compose.build` makes (our precision
  plugin, callbacks, `self.log`), plus a reference row `bare_fp32`: the same step in plain
  PyTorch (same model, points, residuals and derivative mode, Adam, fp32). Lightning fp32 over
  bare fp32 is the framework's overhead.
- Rows run interleaved: each fit lives in a thread and waits at a step boundary for a baton that
  passes to the next row every `--turn` steps (round order alternating), so a burst of load on a
  shared machine hits every row alike. Driving `training_step` by hand would leave out the loop,
  hooks and logging that `python train.py` pays for; fitting in chunks would reset Adam.
  A step's time is the wall time between two batch starts of its row (one whole loop cycle),
  after `torch.cuda.synchronize()` on CUDA; the table gives median and IQR after `--warmup`.
  The threads allocate from the main thread's malloc arena, as a training process does (glibc's
  per-thread arenas made a large step page-fault anew each time: `benchmark/malloc_arena.py`).
- Memory, from two extra steps per row taken alone: the peak RSS of that step (Linux resets the
  high-water mark through /proc/self/clear_refs; all rows' modules are resident), the CUDA
  allocator's peak (reset first), and the bytes autograd saved for backward (each storage once,
  `saved_tensors_hooks`): the activation memory mixed precision is meant to halve.
- Where a bare row's step spends its time (`--matmul-share`, on by default; a few profiled steps
  after the timed ones, `mpsciml.benchmark.matmul_share`): the matmuls' share of the step, their
  GFLOP and the rate they ran at, beside this device's rate on one 1024 x 1024 matmul. Where a
  compiled step is mostly matmuls (Navier-Stokes' 100-wide network), their rate, not the
  framework, bounds how fast it can get; a 20-wide step is mostly other work.
- Threads: `--threads` (default: OMP_NUM_THREADS, else what `python train.py` would choose for
  the case's network: `threads: auto`, one thread under 1M parameters) for every row alike.

Writes `--out` (default outputs/benchmark/<problem>.json; with several problems a folder), with
`--sizes` over several point counts `<problem>_sizes.png`, else `<problem>_rows.png` (every row's
median and interquartile range as bars, the floor of a `trainer.fit` step as a line). A bad
option stops with one line and exit code 2.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, open_dict

from mpsciml.benchmark import options
from mpsciml.benchmark.options import COMPILE_WARMUP, UsageError
from mpsciml.benchmark.settings import Setting, is_spectral, precision_settings
from mpsciml.config import ConfigError, register_resolvers
from mpsciml.threads import choose_threads

# Lightning, the training code and the measuring parts are imported when a run starts, so a typo
# on the command line is answered in half the time.

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PROBLEMS = ["burgers", "navier_stokes"]
# (timed steps, warm-up steps, steps per turn) per row, sized so the default benchmark ends
# within 5 min on 2 shared CPU cores, where an fp16/bf16 step costs 5-10 fp32 steps (no fp16/bf16
# units); short turns for slow steps, so every row still gets many turns.
DEFAULT_SCHEDULE = {
    "burgers": (120, 5, 10),
    "navier_stokes": (20, 3, 2),
    # FNO rows (6 running on a CPU, an AMP step 3-6x fp32's): ~1.5 min darcy, ~3 min ns_vorticity
    "darcy": (20, 3, 2),
    "ns_vorticity": (8, 2, 2),
}
FALLBACK_SCHEDULE = (30, 3, 5)
BENCHMARK_OVERRIDES = [
    "optimizer=adam",
    "logger=none",
    "~callbacks",
    "+trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked (`mpsciml.benchmark.options`); this docstring is its --help."""
    return options.parse_args(argv, __doc__ or "")


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would compose, with its output in `output_dir`."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except MissingConfigException as exc:
        group = (exc.missing_cfg_file or "").split("/")[0]
        choice = next((o for o in overrides if o.split("=")[0].lstrip("+~") == group), group)
        allowed = ", ".join(exc.options or [])
        raise UsageError(f"{choice} is not an option; allowed: {allowed}") from None
    except HydraException as exc:
        raise UsageError(str(exc).strip().splitlines()[0]) from None
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def case_overrides(base: DictConfig, points: int | None, width: int | None) -> list[str]:
    extra = [] if points is None else [f"problem.n_domain={points}"]
    if points is not None and "n_domain" not in base.problem:
        raise UsageError("--sizes points= sets problem.n_domain, which this problem does not have")
    if width is not None and not base.model.get("hidden"):
        raise UsageError("--sizes width= sets model.hidden, which this model does not have")
    if width is not None:
        extra.append(f"model.hidden=[{','.join([str(width)] * len(base.model.hidden))}]")
    return extra


def row_overrides(overrides: list[str], setting: Setting) -> list[str]:
    """The case's overrides with the setting's own last; a key the setting sets is dropped from
    the case's (Hydra refuses a key given twice), so `model=` and `precision=` are the row's."""
    own = {o.lstrip("+~").split("=", 1)[0] for o in setting.overrides}
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] not in own]
    return [*kept, *setting.overrides]


def run_case(
    overrides: list[str],
    args: argparse.Namespace,
    steps: int,
    work: Path,
    label: str,
    settings: list[Setting],
) -> dict[str, Any]:
    """Every setting (precisions, or the FNO's settings; and the bare loop) on one problem size,
    interleaved. A setting whose model refuses the device (`check_device`) is listed, not run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from mpsciml.benchmark.comparison import (
        cpp_wrapper_gain,
        lean_guards_gain,
        loop_floor,
        reference_rows,
        second_rich_bar,
    )
    from mpsciml.benchmark.matmul_share import profile_rows
    from mpsciml.benchmark.peers import loss_ours_end
    from mpsciml.benchmark.report import (
        add_ratios,
        framework_overhead,
        runner_row,
        skipped_row,
        versus_laplacian_apart,
    )
    from mpsciml.benchmark.runner import EXTRA_STEPS, device_of, lightning_runner, run_interleaved

    timed, runners, skipped = args.warmup + steps, [], {}
    for setting in settings:
        cfg = compose_config(
            [*row_overrides(overrides, setting), f"trainer.max_steps={timed + EXTRA_STEPS}"],
            work / setting.name,
        )
        try:
            runner = lightning_runner(cfg, timed, args.turn, setting.name, setting.idle)
        except ConfigError as exc:
            if setting.name == "fp32":
                raise
            skipped[setting.name] = (f"not on {device_of(cfg).upper()}", str(exc))
            continue
        runner.facts["label"] = setting.label
        if second_rich_bar(runner, runners):
            skipped[setting.name] = ("a second Rich progress bar", "Rich: one live display")
            continue
        runners.append(runner)
    device = device_of(cfg)
    module = next(r for r in runners if r.name == "fp32").facts["module"]
    if not getattr(args, "threads_set", True):  # as train.py would (threads: auto), every row
        torch.set_num_threads(choose_threads(cfg.get("threads", "auto"), module.model, device)[0])
    extra_skipped = {n: (*why, "lightning") for n, why in getattr(args, "missing", {}).items()}
    reference = None
    if args.bare and hasattr(module, "conditions"):  # a PINN; before it trains: same weights
        extra, not_run, reference = reference_rows(module, cfg, device, timed, args)
        runners += extra
        extra_skipped |= not_run
    started = time.perf_counter()
    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    if any("trainer.enable_progress_bar=true" in s.overrides for s in settings):
        # a row as shipped shows its own progress bar (Rich's: one live display at a time)
        print(f"{label}: {len(runners)} rows taking turns ...", flush=True)
        run_interleaved(runners)
    else:
        with Progress("{task.description}", *columns, transient=True) as progress:
            task = progress.add_task(label, total=sum(r.total_steps for r in runners))
            run_interleaved(runners, lambda done: progress.update(task, completed=done))
    if reference is not None:  # our loss at every row's final weights: equal-loss check
        loss_ours_end(reference, runners)
    profiled = None
    if args.matmul_share:  # after the losses: its steps train the bare rows' copies on
        bare = {r.name: r.facts["_step"] for r in runners if "_step" in r.facts and not r.error}
        profiled = profile_rows(bare, device)
    measured = {r.name: runner_row(r, args.warmup) for r in runners}
    ordered = [
        measured.get(s.name) or skipped_row(s.name, *skipped[s.name]) | {"label": s.label}
        for s in settings
    ]
    ordered += [row for name, row in measured.items() if name not in {s.name for s in settings}]
    ordered += [skipped_row(name, *why) for name, why in extra_skipped.items()]
    case_rows = add_ratios(ordered)
    hidden = [int(w) for w in cfg.model.get("hidden") or []]
    conditions = getattr(module, "conditions", {})
    return {
        "points": cfg.problem.get("n_domain"),
        "width": max(hidden, default=None),
        "hidden": hidden,
        "points_all_conditions": sum(len(c.points) for c in conditions.values()) or None,
        "derivatives": getattr(module, "derivatives", None),
        "device": device,
        "overrides": overrides,
        "seconds": round(time.perf_counter() - started, 1),
        "framework_overhead": framework_overhead(case_rows),
        "vs_laplacian_apart": versus_laplacian_apart(case_rows),
        "lightning_loop": loop_floor(case_rows),
        "cpp_wrapper_gain": cpp_wrapper_gain(case_rows),
        "lean_guards_gain": lean_guards_gain(case_rows),
        "rows": case_rows,
        "failures": {r.name: r.facts.get("traceback") for r in runners if r.error},
        "matmul_share": profiled,
    }


def split_problems(overrides: list[str]) -> list[tuple[str, list[str]]]:
    """(problem, overrides) per problem to run: the one named by `problem=`, else the defaults."""
    named = [o.split("=", 1)[1] for o in overrides if o.startswith("problem=")]
    rest = [o for o in overrides if not o.startswith("problem=")]
    return [(name, [f"problem={name}", *rest]) for name in (named[-1:] or DEFAULT_PROBLEMS)]


def benchmark_problem(
    problem: str, overrides: list[str], args: argparse.Namespace, out: Path
) -> dict[str, Any]:
    from mpsciml.benchmark.comparison import comparison_settings, compile_missing
    from mpsciml.benchmark.fno_bench import benchmark_spectral
    from mpsciml.benchmark.report import machine, plot_sizes, plot_title, write_json
    from mpsciml.benchmark.rows_plot import plot_rows, rows_title

    steps, warmup, turn = DEFAULT_SCHEDULE.get(problem, FALLBACK_SCHEDULE)
    args = argparse.Namespace(**vars(args))  # this problem's schedule, the user's choices first
    steps = args.steps = args.steps or steps
    args.warmup = warmup if args.warmup is None else args.warmup
    if args.compile:  # a compile=true row compiles in its first steps (after the probe's step)
        args.warmup = max(args.warmup, COMPILE_WARMUP)
    args.turn = args.turn or turn
    overrides = [*BENCHMARK_OVERRIDES, *overrides]
    with tempfile.TemporaryDirectory(prefix="mpsciml-benchmark-") as tmp:
        base = compose_config(overrides, Path(tmp))
        if is_spectral(base):
            if args.sizes:
                raise UsageError(
                    "--sizes sets collocation points or MLP widths; an FNO has neither"
                )
            command = " ".join(["python", "scripts/benchmark.py", *sys.argv[1:]])
            work = Path(tmp) / "case0"
            return benchmark_spectral(
                problem, overrides, args, out, base, work, run_case, machine(), command
            )
        settings = precision_settings(args.precisions)
        settings += comparison_settings(
            base,
            args.peers,
            args.compile,
            args.laplacian_apart,
            args.python_wrapper,
            args.full_guards,
        )
        args.missing = compile_missing(base, args.compile)
        points = args.sizes.get("points", [None])
        widths = args.sizes.get("width", [None])
        cases = []
        for n, width in itertools.product(points, widths):
            case = [*overrides, *case_overrides(base, n, width)]
            label = (
                f"{problem} points={n or base.problem.get('n_domain')} width={width or 'recipe'}"
            )
            work = Path(tmp) / f"case{len(cases)}"
            cases.append(run_case(case, args, steps, work, label, settings))
            print_case(problem, cases[-1], steps, args.warmup)
    record = {
        "problem": problem,
        "command": " ".join(["python", "scripts/benchmark.py", *sys.argv[1:]]),
        "machine": machine(),
        "settings": {
            "precisions": args.precisions,
            "steps": steps,
            "warmup": args.warmup,
            "turn": args.turn,
            "bare": args.bare,
            "peers": args.peers,
            "compile": args.compile,
            "overrides": overrides,
        },
        "cases": cases,
    }
    path = write_json(out if out.suffix == ".json" else out / f"{problem}.json", record)
    plot = plot_sizes(cases, path.with_name(f"{path.stem}_sizes.png"), plot_title(record))
    bars = plot_rows(cases, path.with_name(f"{path.stem}_rows.png"), rows_title(record))
    print(f"written: {path}" + "".join(f", {p}" for p in (plot, bars) if p))
    return record


def print_case(problem: str, case: dict[str, Any], steps: int, warmup: int) -> None:
    from mpsciml.benchmark.comparison import cpp_wrapper_lines, lean_guards_lines, loop_floor_lines
    from mpsciml.benchmark.matmul_share import notes as matmul_notes
    from mpsciml.benchmark.report import LAPLACIAN_APART, markdown_table, row_notes

    overhead = case["framework_overhead"]
    print(
        f"\n{problem} | {case['points']} domain points ({case['points_all_conditions']} in all) "
        f"| hidden {case['hidden']} | derivatives={case['derivatives']} | {case['device']} "
        f"| {torch.get_num_threads()} thread(s) | {steps} timed steps "
        f"(after {warmup} warm-up) per row | {case['seconds']:.0f} s\n"
    )
    print(markdown_table(case["rows"]))
    for note in row_notes(case["rows"]):
        print(f"- {note}")
    if overhead is not None:
        print(
            f"\nframework overhead, Lightning fp32 / bare PyTorch fp32: "
            f"{overhead['of_medians']:.3f}x (medians), {overhead['paired']:.3f}x (paired by turn)"
        )
    if apart := case.get("vs_laplacian_apart"):
        ratios = ", ".join(
            f"{name} {r['of_medians']:.3f}x ({r['paired']:.3f}x)" for name, r in apart.items()
        )
        print(f"over our Taylor step with the Laplacian apart, medians (paired by turn): {ratios}")
        apart_row = next(r for r in case["rows"] if r["name"] == LAPLACIAN_APART)
        if apart_row.get("laplacian") is None:
            print(
                "  (no residual here asks for a Laplacian in Taylor mode: those rows run the "
                "same step)"
            )
    for line in cpp_wrapper_lines(case.get("cpp_wrapper_gain")):
        print(line)
    for line in lean_guards_lines(case.get("lean_guards_gain")):
        print(line)
    for line in loop_floor_lines(case.get("lightning_loop")):
        print(line)
    for line in matmul_notes(case.get("matmul_share")):
        print(line)
    for name, failure in case["failures"].items():
        print(f"\n{name} failed:\n{failure}", file=sys.stderr)


def quiet() -> None:
    """Lightning's per-fit banners and dataloader hints would bury the table."""
    import pytorch_lightning  # noqa: F401 - its import sets its loggers to INFO; quiet them after

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers).*")
    for message in ("log_every_n_steps", "no `val_dataloader`", "treespec"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        register_resolvers()
        quiet()
        omp = os.environ.get("OMP_NUM_THREADS", "")
        threads = args.threads or (int(omp) if omp.isdigit() and int(omp) > 0 else None)
        if threads:
            torch.set_num_threads(threads)
        args.threads_set = bool(threads)
        problems = split_problems(args.overrides)
        out = args.out
        if out is None:
            out = ROOT / "outputs" / "benchmark"
        elif out.suffix == ".json" and len(problems) > 1:
            raise UsageError(
                f"--out {out} is one file; with {len(problems)} problems give a folder"
            )
        records = [benchmark_problem(p, o, args, out) for p, o in problems]
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r["name"] for rec in records for c in rec["cases"] for r in c["rows"] if r["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
