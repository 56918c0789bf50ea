"""The `bare_compiled` row: the bare PINN step in forward (Taylor) mode with its loss compiled.

This is the step issue 15 measured "outside any framework": `BareLoop`'s loss (every condition's
Taylor forward, residuals, squares and means) as one `torch.compile(fullgraph=True)` function,
`loss.backward()` through AOT autograd's compiled backward, and fused Adam where torch has it for
the parameters' device and dtype. Taylor mode is required, not a choice: torch.compile cannot
trace the double backward that nested autograd derivatives need. The inputs are not marked
`requires_grad` (`BareLoop(fallback=False)`): nothing is differentiated with respect to them.

Compile time is not a step time: the first call (tracing, AOT autograd, inductor's C++ build, or
a cache hit) runs before the timed steps, in `compile_seconds`, so the row's median is the steady
state that a long training run sees. Both bare rows compile as the run's `compile=true` does
(backend, mode, C++ wrapper), so they stay the reference for its compiled step.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from mpsciml.benchmark.bare_loop import BareLoop
from mpsciml.modules.compiled_loss import compile_options
from mpsciml.modules.fused_adam_step import adam_scalars, adam_update_

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


def adam_settings(module: Any) -> dict[str, Any]:
    """The module's Adam keyword arguments (lr, betas, ...), without Hydra's keys and without the
    implementation choice, which each bare row makes for itself."""
    settings = dict(module.optimizer_cfg.adam)
    for key in ("_target_", "_partial_", "fused", "foreach"):
        settings.pop(key, None)
    return settings


def compiled_bare_loop(
    module: Any,
    device: str,
    backend: str = "inductor",
    mode: str | None = None,
    cpp_wrapper: bool = False,
) -> tuple[BareLoop, dict[str, Any]]:
    """A `BareLoop` like `module` (same weights, points, residuals, Adam settings) in Taylor mode
    with its loss compiled; and its facts (backend, mode, optimizer, compile_seconds after the
    first call, filled in by `compile_now`). Raises ValueError where the model has no Taylor
    mode (torch.compile cannot do the nested autograd it would need)."""
    loop = BareLoop.like(module, device, derivatives="taylor", fallback=False)
    settings = adam_settings(module)
    impl = adam_impl(loop.model)
    loop.optimizer = torch.optim.Adam(loop.model.parameters(), **settings, **impl)
    how = compile_options(backend, mode, cpp_wrapper)
    loop.loss = torch.compile(loop.loss, **how, fullgraph=True)  # type: ignore[method-assign]
    facts: dict[str, Any] = {
        "compile_backend": backend,
        "compile_mode": mode,
        "cpp_wrapper": cpp_wrapper,
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


FUSED_NAME = "bare_fused"
#: its `optimizer_impl`: Adam is part of the compiled step (`report.fused_step` reads it)
FUSED_IMPL = "fused into the step"


class _LossOf(nn.Module):
    """The bare loop's loss as a `forward` (its network a child), so `functional_call` can run
    it on given weight values."""

    def __init__(self, loop: BareLoop) -> None:
        super().__init__()
        self.model = loop.model
        self._loop = [loop]  # a list: not registered as a child, no cycle through the model

    def forward(self) -> Tensor:
        return self._loop[0].loss()


class FusedBareLoop:
    """The `bare_fused` row: the bare Taylor-mode step as ONE compiled call, forward, weight
    gradient (`torch.func.grad_and_value`) and Adam's update (torch's fused-kernel order,
    `fused_adam_step.adam_update_`) together: the reference for `compile=true`'s fused step,
    as `bare_compiled` is for its compiled-loss step. `step()` returns the loss before the
    update, as `BareLoop.step` does."""

    def __init__(
        self,
        loop: BareLoop,
        adam: dict[str, Any],
        backend: str,
        mode: str | None,
        cpp_wrapper: bool = False,
    ) -> None:
        unsupported = {k: v for k, v in adam.items() if k not in ("lr", "betas", "eps")}
        if any(unsupported.values()):
            raise ValueError(f"the fused bare step implements plain Adam; got {unsupported}")
        self.loop, self.model = loop, loop.model
        self.loss_of = _LossOf(loop)
        self.params = list(self.loss_of.parameters())
        self.names = [name for name, _ in self.loss_of.named_parameters()]
        self.lr = float(adam.get("lr", 1e-3))
        self.betas = tuple(float(b) for b in adam.get("betas", (0.9, 0.999)))
        self.eps = float(adam.get("eps", 1e-8))
        self.state = [
            (torch.zeros((), device=p.device), torch.zeros_like(p), torch.zeros_like(p))
            for p in self.params
        ]
        self.steps_done = 0
        self.apply = torch.tensor(True, device=self.params[0].device)
        how = compile_options(backend, mode, cpp_wrapper)
        self.compiled = torch.compile(self._step, **how, fullgraph=True, dynamic=False)

    def _step(self, params: list[Tensor], scalars: Tensor) -> Tensor:
        def loss_of(values: list[Tensor]) -> Tensor:
            weights = dict(zip(self.names, values, strict=True))
            return torch.func.functional_call(self.loss_of, weights, ())

        grads, loss = torch.func.grad_and_value(loss_of)([p.detach() for p in params])
        adam_update_(params, grads, self.state, scalars, self.apply, kernel=True)
        return loss

    def step(self) -> Tensor:
        values = adam_scalars(self.lr, self.betas, self.eps, self.steps_done, kernel=True)
        scalars = torch.tensor(values, dtype=torch.float64, device=self.params[0].device)
        with torch.no_grad():
            loss = self.compiled(self.params, scalars)
        self.steps_done += 1
        return loss.detach()


def fused_bare_loop(
    module: Any,
    device: str,
    backend: str = "inductor",
    mode: str | None = None,
    cpp_wrapper: bool = False,
) -> tuple[FusedBareLoop, dict[str, Any]]:
    """A `FusedBareLoop` like `module` (same weights, points, residuals, Adam settings),
    compiled now: its first call is a whole step, so the weights and Adam's state are put back
    afterwards and the row starts from the initial network like every other row. ValueError
    where the model has no Taylor mode or Adam has options the fused update does not have."""
    settings = adam_settings(module)
    bare = BareLoop.like(module, device, derivatives="taylor", fallback=False)
    loop = FusedBareLoop(bare, settings, backend, mode, cpp_wrapper)
    initial = [p.detach().clone() for p in loop.params]
    started = time.perf_counter()
    float(loop.step())  # compiles forward, gradient and update (waits for CUDA too)
    seconds = time.perf_counter() - started
    with torch.no_grad():
        for param, value in zip(loop.params, initial, strict=True):
            param.copy_(value)
        for tensors in loop.state:
            for tensor in tensors:
                tensor.zero_()
    loop.steps_done = 0
    facts: dict[str, Any] = {
        "compile_backend": backend,
        "compile_mode": mode,
        "cpp_wrapper": cpp_wrapper,
        "optimizer_impl": FUSED_IMPL,
        "derivatives": "taylor",
        "compile_seconds": round(seconds, 2),
    }
    return loop, facts
