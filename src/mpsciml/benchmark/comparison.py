"""The rows of issue 15's comparison, besides the precisions: compiled, as shipped, peers.

`scripts/benchmark.py --peers` and `--compile` add, to the fp32 row and the bare eager loop:

    fp32_compiled          our row with compile=true (--compile)
    fp32_shipped           what `python train.py` runs (progress bar on, default callbacks:
                           checkpoint every 1000 steps, stop-on-signal), logger off (--peers)
    fp32_compiled_shipped  the same with compile=true (--compile with --peers); not run while
                           the bar is Rich's (one live display at a time: the other row has it)
    bare_compiled          the bare loop in Taylor mode with its loss under torch.compile
    deepxde_fp32, pina_fp32  the peers (`peers.py`; --peers)

`settings.DEEPXDE_SETTING` is DeepXDE's Burgers example setting (`--deepxde-setting`).
"""

from __future__ import annotations

import shutil
from typing import Any

from omegaconf import DictConfig

from mpsciml.benchmark.bare_compiled import NAME as BARE_COMPILED
from mpsciml.benchmark.bare_compiled import compile_now, compiled_bare_loop
from mpsciml.benchmark.runner import Runner, linear_layers
from mpsciml.benchmark.settings import Setting
from mpsciml.benchmark.timing import StepClock

SHIPPED = ("trainer.enable_progress_bar=true", "callbacks=default")
COMPILE_MISSING = "this checkout has no `compile` option"


def comparison_settings(base: DictConfig, peers: bool, compile_: bool) -> list[Setting]:
    """The Lightning rows these flags add (after the precisions); compile rows only where the
    config has the `compile` key (see `compile_missing`)."""
    compiled = compile_ and "compile" in base
    rows = []
    if compiled:
        rows.append(
            Setting("fp32_compiled", "fp32, compile=true", ("precision=fp32", "compile=true"))
        )
    if peers:
        rows.append(Setting("fp32_shipped", "fp32, as shipped", ("precision=fp32", *SHIPPED)))
    if peers and compiled:
        shipped = ("precision=fp32", "compile=true", *SHIPPED)
        rows.append(Setting("fp32_compiled_shipped", "fp32, compile=true, as shipped", shipped))
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
    module: Any, cfg: DictConfig, device: str, steps: int, turn: int
) -> tuple[Runner | None, tuple[str, str] | None]:
    """The `bare_compiled` runner, compiled now (before the rows take turns), or why not."""
    backend = str(cfg.get("compile_backend") or "inductor")
    mode = cfg.get("compile_mode")
    why = inductor_refusal(backend, device)
    if why is not None:
        return None, (why, why)
    try:
        loop, facts = compiled_bare_loop(module, device, backend, mode)
        compile_now(loop, facts)
    except Exception as exc:  # a model without Taylor mode, a backend that fails here
        return None, (f"not compiled: {type(exc).__name__}", str(exc))
    runner = Runner(BARE_COMPILED, "bare", StepClock(None, 0, steps, turn))

    def body() -> None:
        for step in range(runner.total_steps):
            runner.step_started()
            loss = loop.step()
            runner.step_ended()
            if step == 0 or step >= steps:  # no host sync inside the timed steps
                runner.losses.append(float(loss))

    runner.body = body
    runner.facts.update(facts)
    runner.facts["label"] = f"bare, Taylor mode, torch.compile ({backend})"
    runner.facts["_linears"] = lambda: linear_layers(loop.model)
    return runner, None
