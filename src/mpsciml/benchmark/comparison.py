"""The rows of issue 15's comparison, besides the precisions: compiled, as shipped, peers.

`scripts/benchmark.py --peers` and `--compile` add, to the fp32 row and the bare eager loop:

    fp32_compiled          our row with compile=true (--compile)
    fp32_laplacian_apart   our row with taylor_laplacian=apart (--laplacian-apart): each term
                           of a Laplacian its own Taylor stream, as before the summed stream
    fp32_compiled_full_guards  compile=true with compile_guards=full (--compile --full-guards):
                           the fused step checking every dynamo guard, not only the lean set
    fp32_compiled_python_wrapper  compile=true with compile_cpp_wrapper=false (--compile
                           --python-wrapper): inductor's generated code called from Python
    fp32_shipped           what `python train.py` runs (progress bar on, default callbacks:
                           checkpoint every 1000 steps, stop-on-signal), logger off (--peers)
    fp32_compiled_shipped  the same with compile=true (--compile with --peers); not run while
                           the bar is Rich's (one live display at a time: the other row has it)
    lightning_loop         the run as shipped with a training step that does nothing but count
                           the step (--peers): Lightning's loop, hooks and our callbacks alone,
                           the least any row run by `trainer.fit` adds to its step
    bare_compiled          the bare loop in Taylor mode with its loss under torch.compile
    bare_fused             the bare loop's whole step (forward, gradient, Adam) as one compiled
                           call: the reference for compile=true's fused step
    deepxde_fp32, pina_fp32  the peers (`peers.py`; --peers)

`settings.DEEPXDE_SETTING` is DeepXDE's Burgers example setting (`--deepxde-setting`).
"""

from __future__ import annotations

import shutil
from typing import Any

from omegaconf import DictConfig

from mpsciml.benchmark.bare_compiled import FUSED_NAME as BARE_FUSED
from mpsciml.benchmark.bare_compiled import NAME as BARE_COMPILED
from mpsciml.benchmark.bare_compiled import compile_now, compiled_bare_loop, fused_bare_loop
from mpsciml.benchmark.bare_loop import BareLoop
from mpsciml.benchmark.report import paired_rows
from mpsciml.benchmark.runner import Runner, bare_runner, linear_layers, loop_runner
from mpsciml.benchmark.settings import Setting
from mpsciml.modules.compiled_loss import resolve_cpp_wrapper

SHIPPED = ("trainer.enable_progress_bar=true", "callbacks=default")
#: the row of the loop alone (`runner.idle_training_step`)
LIGHTNING_LOOP = "lightning_loop"
PYTHON_WRAPPER = "fp32_compiled_python_wrapper"
FULL_GUARDS = "fp32_compiled_full_guards"
COMPILE_MISSING = "this checkout has no `compile` option"


def comparison_settings(
    base: DictConfig,
    peers: bool,
    compile_: bool,
    laplacian_apart: bool = False,
    python_wrapper: bool = False,
    full_guards: bool = False,
) -> list[Setting]:
    """The Lightning rows these flags add (after the precisions); compile rows only where the
    config has the `compile` key (see `compile_missing`)."""
    compiled = compile_ and "compile" in base
    rows = []
    if laplacian_apart:
        apart = ("precision=fp32", "taylor_laplacian=apart")
        rows.append(Setting("fp32_laplacian_apart", "fp32, Laplacian terms apart", apart))
    if compiled:
        rows.append(
            Setting("fp32_compiled", "fp32, compile=true", ("precision=fp32", "compile=true"))
        )
    if compiled and python_wrapper:
        python = ("precision=fp32", "compile=true", "compile_cpp_wrapper=false")
        rows.append(Setting(PYTHON_WRAPPER, "fp32, compile=true, Python wrapper", python))
    if compiled and full_guards:
        full = ("precision=fp32", "compile=true", "compile_guards=full")
        rows.append(Setting(FULL_GUARDS, "fp32, compile=true, every guard", full))
    if peers:
        rows.append(Setting("fp32_shipped", "fp32, as shipped", ("precision=fp32", *SHIPPED)))
    if peers and compiled:
        shipped = ("precision=fp32", "compile=true", *SHIPPED)
        rows.append(Setting("fp32_compiled_shipped", "fp32, compile=true, as shipped", shipped))
    if peers:
        loop = ("precision=fp32", *SHIPPED)
        rows.append(Setting(LIGHTNING_LOOP, "Lightning's loop alone, as shipped", loop, idle=True))
    return rows


def compile_missing(base: DictConfig, compile_: bool) -> dict[str, tuple[str, str]]:
    """The compiled rows listed as not run when the config has no `compile` key."""
    if not compile_ or "compile" in base:
        return {}
    return {"fp32_compiled": (COMPILE_MISSING, "compile=true is not a key of conf/config.yaml")}


def inductor_refusal(backend: str, device: str) -> str | None:
    """Inductor on the CPU builds C++: without a compiler the row cannot run (say so)."""
    if backend != "inductor" or device != "cpu":
        return None
    from torch._inductor import config as inductor_config

    compilers = [c for c in inductor_config.cpp.cxx if c] or ["g++"]
    if not any(shutil.which(c) for c in compilers):
        return "inductor on the CPU needs a C++ compiler (none found); compile_backend=aot_eager"
    return None


def bare_compiled_runner(
    module: Any, cfg: DictConfig, device: str, steps: int, turn: int, fused: bool = False
) -> tuple[Runner | None, tuple[str, str] | None]:
    """The `bare_compiled` runner (`fused`: `bare_fused`), compiled now (before the rows take
    turns), or why not."""
    backend = str(cfg.get("compile_backend") or "inductor")
    mode = cfg.get("compile_mode")
    why = inductor_refusal(backend, device)
    if why is not None:
        return None, (why, why)
    try:  # compiled as the run's compile=true is: its C++ wrapper setting too
        cpp_wrapper = resolve_cpp_wrapper(cfg.get("compile_cpp_wrapper", "auto"), backend, device)
        if fused:
            loop, facts = fused_bare_loop(module, device, backend, mode, cpp_wrapper)
        else:
            loop, facts = compiled_bare_loop(module, device, backend, mode, cpp_wrapper)
            compile_now(loop, facts)
    except Exception as exc:  # a model without Taylor mode, a backend that fails here
        return None, (f"not compiled: {type(exc).__name__}", str(exc))
    runner = loop_runner(BARE_FUSED if fused else BARE_COMPILED, loop, steps, turn)
    runner.facts.update(facts)
    what = "one compiled call per step" if fused else "loss under torch.compile"
    runner.facts["label"] = f"bare, Taylor mode, {what} ({backend})"
    runner.facts["_linears"] = lambda: linear_layers(loop.model)
    return runner, None


def second_rich_bar(runner: Runner, runners: list[Runner]) -> bool:
    """Whether `runner` would draw a Rich progress bar while one of `runners` draws one: Rich
    allows one live display per console, a second crashes both rows."""
    rich = "RichProgressBar"
    return runner.facts.get("progress_bar") == rich and any(
        r.facts.get("progress_bar") == rich for r in runners
    )


def reference_rows(
    module: Any, cfg: DictConfig, device: str, steps: int, args: Any
) -> tuple[list[Runner], dict[str, tuple[str, str, str]], BareLoop]:
    """The rows built from a PINN's fp32 module before it trains (same weights and points):
    `bare_fp32`; with `args.peers` or `args.compile` also `bare_compiled` and `bare_fused`; with
    `args.peers` the peers. Returns them, the rows not run (name -> (reason, detail, kind)), and
    the reference loop that evaluates our loss at every row's final weights
    (`peers.loss_ours_end`)."""
    from mpsciml.benchmark.peers import peer_rows

    runners = [bare_runner(module, device, steps, args.turn)]
    not_run: dict[str, tuple[str, str, str]] = {}
    if args.peers or args.compile:
        for name, fused in ((BARE_COMPILED, False), (BARE_FUSED, True)):
            compiled, why = bare_compiled_runner(module, cfg, device, steps, args.turn, fused)
            if compiled is not None:
                runners.append(compiled)
            elif why is not None:
                not_run[name] = (*why, "bare")
    if args.peers:
        peers, missing = peer_rows(module, device, steps, args.turn)
        runners += peers
        not_run |= {name: (*why, "peer") for name, why in missing.items()}
    return runners, not_run, BareLoop.like(module, device, derivatives="autograd")


def loop_floor(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Where the framework's overhead comes from: the `lightning_loop` row's step (the loop
    alone) added to the fastest bare step (`bare_fused`, else `bare_compiled`) is the least a
    step run by `trainer.fit` can cost; our fastest row as shipped against that floor says how
    much of its overhead is our own step's work around the compiled call. Medians; None without
    the rows."""
    timed = {r["name"]: r["median_ms"] for r in rows if r.get("median_ms") and not r.get("error")}
    loop = timed.get(LIGHTNING_LOOP)
    reference = next((n for n in (BARE_FUSED, BARE_COMPILED) if n in timed), None)
    shipped = next((n for n in ("fp32_compiled_shipped", "fp32_shipped") if n in timed), None)
    if loop is None or reference is None:
        return None
    floor = timed[reference] + loop
    record: dict[str, Any] = {
        "loop_ms": loop,
        "reference": reference,
        "reference_ms": timed[reference],
        "floor_ms": floor,
        "floor_x_reference": floor / timed[reference],
    }
    if shipped is not None:
        by_name = {r["name"]: r for r in rows}
        record |= {
            "shipped": shipped,
            "shipped_ms": timed[shipped],
            "shipped_x_reference": timed[shipped] / timed[reference],
            "shipped_x_reference_paired": paired_rows(by_name[shipped], by_name[reference]),
            "shipped_beyond_floor_ms": timed[shipped] - floor,
        }
    return record


def loop_floor_lines(floor: dict[str, Any] | None) -> list[str]:
    """`loop_floor` in words, for the printed report."""
    if floor is None:
        return []
    lines = [
        f"Lightning's loop alone (as shipped, a step that does nothing): {floor['loop_ms']:.2f} "
        f"ms/step; with {floor['reference']} ({floor['reference_ms']:.2f} ms) that is "
        f"{floor['floor_ms']:.2f} ms = {floor['floor_x_reference']:.2f}x {floor['reference']}: "
        "the least a step run by trainer.fit costs here"
    ]
    if "shipped" in floor:
        ratio = floor.get("shipped_x_reference_paired")
        paired = "" if ratio is None else f" (paired by turn {ratio:.2f}x)"
        lines.append(
            f"  {floor['shipped']} {floor['shipped_ms']:.2f} ms = "
            f"{floor['shipped_x_reference']:.2f}x {floor['reference']}{paired}, "
            f"{floor['shipped_beyond_floor_ms']:+.2f} ms beyond that floor (our step's own work "
            "around the step it runs)"
        )
    return lines


def twin_ratio(rows: list[dict[str, Any]], twin: str) -> dict[str, Any] | None:
    """`fp32_compiled` over a compile=true twin row (medians, and paired by turn); None
    without both rows."""
    by_name = {r["name"]: r for r in rows if r.get("median_ms") and not r.get("error")}
    ours, other = by_name.get("fp32_compiled"), by_name.get(twin)
    if ours is None or other is None:
        return None
    return {
        "cpp_wrapper": bool((ours.get("compile") or {}).get("cpp_wrapper")),
        "of_medians": ours["median_ms"] / other["median_ms"],
        "paired": paired_rows(ours, other),
    }


def cpp_wrapper_gain(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`fp32_compiled` over `fp32_compiled_python_wrapper`: what inductor's C++ wrapper saves per
    step, with whether the compiled row really had it (`compile_cpp_wrapper: auto` is off off
    the CPU)."""
    return twin_ratio(rows, PYTHON_WRAPPER)


def lean_guards_gain(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """`fp32_compiled` (`compile_guards: lean`) over `fp32_compiled_full_guards`: what checking
    only the guards that can change inside a run saves per step."""
    return twin_ratio(rows, FULL_GUARDS)


def cpp_wrapper_lines(gain: dict[str, Any] | None) -> list[str]:
    """`cpp_wrapper_gain` in words, for the printed report."""
    if gain is None:
        return []
    paired = "" if gain["paired"] is None else f" (paired by turn {gain['paired']:.3f}x)"
    how = "C++ wrapper" if gain["cpp_wrapper"] else "also the Python wrapper: auto is off here"
    return [
        f"fp32_compiled ({how}) / {PYTHON_WRAPPER}: {gain['of_medians']:.3f}x (medians){paired}"
    ]


def lean_guards_lines(gain: dict[str, Any] | None) -> list[str]:
    """`lean_guards_gain` in words, for the printed report."""
    if gain is None:
        return []
    paired = "" if gain["paired"] is None else f" (paired by turn {gain['paired']:.3f}x)"
    ratio = f"{gain['of_medians']:.3f}x (medians){paired}"
    return [f"fp32_compiled (lean guards) / {FULL_GUARDS}: {ratio}"]
