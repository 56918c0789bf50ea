"""A module's local loss terms as one `torch.compile`d function (`compile=true`).

Why: a small PINN's step is hundreds of tiny eager operators (Burgers in DeepXDE's setting: ~400
per step, matmuls ~20% of the time), so Python dispatch, not arithmetic, sets its speed. One
compiled function for every condition's forward (Taylor) pass, residuals and squares/means, whose
backward AOT autograd compiles too, removes most of that. Nested autograd (reverse-mode input
derivatives, then a weight backward through them) cannot be compiled: torch.compile has no double
backward; forward-mode derivatives are plain differentiable ops, so the step needs Taylor mode.

What this wrapper adds to `torch.compile`:
- `fullgraph=True`: a graph break is an error, never a silent slow path;
- its own recompile budget (`isolate_recompiles`), so several modules in one process (tests, the
  precision probe's candidates) do not use up one shared budget of the same code object;
- the facts a run reports (`facts()`): backend, mode, compile time (the first compiled step,
  forward and backward: AOT autograd compiles the backward at its first call), graph breaks and
  recompiles (`torch._dynamo` counters, read before and after each call; a compile during a call
  is this function's, as nothing else runs meanwhile);
- compiled lazily and dropped from pickles and deep copies: a copy compiles its own function for
  its own network (a compiled bound method would keep training the original's weights);
- inductor's C++ wrapper where it pays (`compile_cpp_wrapper`, `compile_options`): by default the
  generated code runs a step from a Python function, one statement per kernel call, allocation
  and free; the C++ wrapper makes those calls from C++. `scripts/benchmark.py --compile
  --python-wrapper` on a Zen 4 CPU: 0.89-0.93x the step on Burgers in DeepXDE's setting,
  0.97-0.99x on Navier-Stokes (its matmuls dominate), the same losses; compiling costs about
  the same (Burgers from an empty cache: 30.5 s against 32.1 s; cached 3.6 s against 3.8 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch._dynamo.utils import counters

from mpsciml.modules.lean_guards import LeanGuards

#: the modes `compile_mode` accepts besides null (torch.compile's own; inductor only)
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_options(backend: str, mode: str | None, cpp_wrapper: Any = "auto") -> None:
    """One line for a backend torch does not know, a mode it cannot take, or a C++ wrapper
    asked of a backend that generates no code."""
    backends = torch._dynamo.list_backends(exclude_tags=())
    if backend not in backends:
        raise ValueError(f"compile_backend={backend!r} is unknown; allowed: {', '.join(backends)}")
    if mode is not None and mode not in MODES:
        raise ValueError(f"compile_mode={mode!r} is unknown; allowed: null, {', '.join(MODES)}")
    if mode is not None and backend != "inductor":
        raise ValueError(
            f"compile_mode={mode} applies to compile_backend=inductor only, not {backend}"
        )
    if not (isinstance(cpp_wrapper, bool) or cpp_wrapper == "auto"):
        raise ValueError(
            f"compile_cpp_wrapper={cpp_wrapper!r} is unknown; allowed: auto, true, false"
        )
    if cpp_wrapper is True and backend != "inductor":
        raise ValueError(
            f"compile_cpp_wrapper=true applies to compile_backend=inductor only, not {backend}"
        )


def resolve_cpp_wrapper(cpp_wrapper: Any, backend: str, device: str) -> bool:
    """`compile_cpp_wrapper` for a run on `device`: auto is on for inductor on a CPU, where it
    was measured to pay, and off elsewhere (on CUDA, `compile_mode=reduce-overhead`'s CUDA
    graphs remove the launches instead; `compile_cpp_wrapper=true` asks for it there)."""
    check_compile_options(backend, None, cpp_wrapper)
    if cpp_wrapper == "auto":
        return backend == "inductor" and device == "cpu"
    return bool(cpp_wrapper)


def compile_options(
    backend: str, mode: str | None, cpp_wrapper: bool, guard_filter: Any = None
) -> dict[str, Any]:
    """`torch.compile`'s keyword arguments for backend, mode, C++ wrapper and dynamo's
    `guard_filter_fn` (`lean_guards`). torch.compile takes a mode or options, never both: where
    options are needed (the wrapper, the filter), the mode is given as the options it stands
    for (`torch._inductor.list_mode_options`), so both still apply."""
    if not cpp_wrapper and guard_filter is None:
        return {"backend": backend, "mode": mode}
    from torch._inductor import list_mode_options

    options = dict(list_mode_options(mode or "default"))
    if cpp_wrapper:
        options["cpp_wrapper"] = True
    if guard_filter is not None:
        options["guard_filter_fn"] = guard_filter
    return {"backend": backend, "options": options}


class CompiledLoss:
    """`function` compiled on its first call with `torch.compile(fullgraph=True)`; counts what
    compiling cost. `begin_step`/`end_step` bracket a training step, so the first compiled
    step's wall time (compile of forward and backward included) is `compile_seconds`."""

    def __init__(
        self,
        function: Callable[..., Any],
        backend: str = "inductor",
        mode: str | None = None,
        cpp_wrapper: bool = False,
        guard_filter: LeanGuards | None = None,
    ) -> None:
        check_compile_options(backend, mode, cpp_wrapper)
        self.function = function
        #: the guards kept (`lean_guards`; None: every guard dynamo installs)
        self.guard_filter = guard_filter
        self.backend, self.mode, self.cpp_wrapper = backend, mode, cpp_wrapper
        self._compiled: Callable[..., Any] | None = None
        self.compiles = 0
        self.graph_breaks = 0
        self.compile_seconds: float | None = None
        self.compile_steps: list[int] = []
        self._started: float | None = None
        self._new_compile, self._step = False, 0

    def __call__(self, *args: Any) -> Any:
        if self._compiled is None:
            how = (self.backend, self.mode, self.cpp_wrapper, self.guard_filter)
            self._compiled = torch.compile(
                self.function,
                **compile_options(*how),
                fullgraph=True,
                dynamic=False,  # the points' shapes change with nothing but the config
                isolate_recompiles=True,
            )
        if self.compile_seconds is None and self._started is None:
            self._started = time.perf_counter()
        graphs = counters["stats"]["unique_graphs"]
        breaks = sum(counters["graph_break"].values())
        result = self._compiled(*args)
        new = counters["stats"]["unique_graphs"] - graphs
        self.graph_breaks += sum(counters["graph_break"].values()) - breaks
        if new:
            self.compiles += new
            self._new_compile = True
        return result

    def begin_step(self, step: int) -> None:
        self._new_compile, self._step = False, step

    def end_step(self) -> None:
        """After the step's backward: the first compiled step's time, and where compiles hit."""
        if self._new_compile:
            self.compile_steps.append(self._step)
        if self._started is not None and self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - self._started
            self._started = None

    @property
    def recompiles(self) -> int:
        return max(self.compiles - 1, 0)

    def facts(self) -> dict[str, Any]:
        """For summary.json `compile`: what ran and what compiling cost."""
        return {
            "enabled": True,
            "backend": self.backend,
            "mode": self.mode,
            "cpp_wrapper": self.cpp_wrapper,
            "compile_seconds": self.compile_seconds,
            "graph_breaks": self.graph_breaks,
            "recompiles": self.recompiles,
            "compile_steps": list(self.compile_steps),
            "guards": "full" if self.guard_filter is None else self.guard_filter.facts(),
        }

    def __getstate__(self) -> dict[str, Any]:
        """Without the compiled function (not picklable; a copy compiles its own)."""
        state = self.__dict__.copy()
        state["_compiled"] = None
        state["_started"] = None
        return state


def merged_facts(loss: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    """One `compile` record for a run whose steps ran two compiled functions (the loss terms,
    the fused Adam step): compile seconds, graph breaks and recompiles added, compile steps
    merged; backend, mode and C++ wrapper are the run's, the same for both; the guards each kept
    (`lean_guards`: only the fused step filters its guards)."""
    seconds = [s for s in (loss["compile_seconds"], step["compile_seconds"]) if s is not None]
    return {
        **loss,
        "compile_seconds": sum(seconds) if seconds else None,
        "graph_breaks": loss["graph_breaks"] + step["graph_breaks"],
        "recompiles": loss["recompiles"] + step["recompiles"],
        "compile_steps": sorted({*loss["compile_steps"], *step["compile_steps"]}),
        "guards": {"loss_terms": loss.get("guards"), "fused_step": step.get("guards")},
    }
