"""The `bare_compiled` row: the bare PINN step in forward (Taylor) mode with its loss compiled.

This is the step issue 15 measured "outside any framework": `BareLoop`'s loss (every condition's
Taylor forward, residuals, squares and means) as one `torch.compile(fullgraph=True)` function,
`loss.backward()` through AOT autograd's compiled backward, and fused Adam where torch has it for
the parameters' device and dtype. Taylor mode is required, not a choice: torch.compile cannot
trace the double backward that nested autograd derivatives need. The inputs are not marked
`requires_grad` (`BareLoop(fallback=False)`): nothing is differentiated with respect to them.

Compile time is not a step time: the first call (tracing, AOT autograd, inductor's C++ build, or
a cache hit) runs before the timed steps, in `compile_seconds`, so the row's median is the steady
state that a long training run sees.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from mpsciml.benchmark.bare_loop import BareLoop

NAME = "bare_compiled"


def adam_impl(model: nn.Module) -> dict[str, bool]:
    """Fused Adam where torch has a fused kernel for the parameters' device and dtype (CPU and
    CUDA, fp32 since torch 2.4), else foreach: the keyword to pass `torch.optim.Adam`."""
    try:
        probe = torch.optim.Adam(
            [torch.zeros(1, device=next(model.parameters()).device, requires_grad=True)],
            fused=True,
        )
        del probe
        return {"fused": True}
    except (RuntimeError, ValueError):
        return {"foreach": True}


def compiled_bare_loop(
    module: Any, device: str, backend: str = "inductor", mode: str | None = None
) -> tuple[BareLoop, dict[str, Any]]:
    """A `BareLoop` like `module` (same weights, points, residuals, Adam settings) in Taylor mode
    with its loss compiled; and its facts (backend, mode, optimizer, compile_seconds after the
    first call, filled in by `compile_now`). Raises ValueError where the model has no Taylor
    mode (torch.compile cannot do the nested autograd it would need)."""
    loop = BareLoop.like(module, device, derivatives="taylor", fallback=False)
    settings = dict(module.optimizer_cfg.adam)
    for key in ("_target_", "_partial_", "fused", "foreach"):
        settings.pop(key, None)
    impl = adam_impl(loop.model)
    loop.optimizer = torch.optim.Adam(loop.model.parameters(), **settings, **impl)
    loop.loss = torch.compile(loop.loss, backend=backend, mode=mode, fullgraph=True)  # type: ignore[method-assign]
    facts: dict[str, Any] = {
        "compile_backend": backend,
        "compile_mode": mode,
        "optimizer_impl": "fused" if impl.get("fused") else "foreach",
        "derivatives": "taylor",
        "compile_seconds": None,
    }
    return loop, facts


def compile_now(loop: BareLoop, facts: dict[str, Any]) -> None:
    """Compile the loss's forward and backward by running both once, without an optimizer step
    (the weights stay the initial ones, so every row still starts from the same network), and
    record the time in `facts["compile_seconds"]`. Called before the rows take turns: compiling
    is not a step, and it should not hold the baton."""
    started = time.perf_counter()
    loss = loop.loss()
    loss.backward()
    float(loss.detach())  # waits for the work on CUDA too
    loop.optimizer.zero_grad(set_to_none=True)
    facts["compile_seconds"] = round(time.perf_counter() - started, 2)
