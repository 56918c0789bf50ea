"""How far a precision's weight gradient is from the full-precision gradient of the same step.

The quantity of Hayford et al. (2024, Theorem 1): the gradient g that a low-precision step
computes against the reference gradient r of the same loss at the same weights on the same
batch, with every operation in full precision. Two numbers say it:

- cosine(g, r): the direction. Adam moves each weight by about lr * sign, so a gradient whose
  direction is right trains like the reference even if its length is a little off;
- |g - r| / |r| (relative error of the 2-norm of the difference): how much of the gradient is
  rounding noise. 0.1 already implies cosine >= 0.995, so the two together say "direction kept
  and noise small".

The theorem also gives a bound on this error; its statement (constants, assumptions on the
network) was not available to us, so the bound is NOT evaluated: `BOUND_NOTE` says so wherever a
record is written, instead of a made-up number.

The reference is computed with `torch.autograd.grad` on copies of the weights, so `p.grad` of
the step being taken is never touched: autocast off, weights and floating inputs in the full
dtype (fp32; fp64 for an fp64 run) through `torch.func.functional_call`, which also serves pure
fp16/bf16 runs whose weights are stored low. Known limit: a layer whose precision policy hook
casts its output back to a pure fp16/bf16 network's dtype still does so inside the reference.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Generator, Sequence
from typing import Any

import torch
from lightning_utilities.core.apply_func import apply_to_collection
from torch import Tensor, nn

from mpsciml.distributed.integrity import all_reduce_sum, world_size

#: what a record says about Hayford et al.'s bound (see the module docstring)
BOUND_NOTE = "Hayford et al. Theorem 1 bound not evaluated (statement not available here)"


class _TermsOf(nn.Module):
    """`module.loss_terms(batch)` as a forward, so that functional_call can run it on
    substituted weights (functional_call swaps parameters of a module's forward)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self.inner.loss_terms(batch)


@contextlib.contextmanager
def _derivative_health_untouched(module: Any) -> Generator[None, None, None]:
    """While the reference runs, the module must not seed derivatives for fp16 nor report their
    health to the precision plugin: the plugin decides on the step being taken from that report
    (`SciMLPrecision.report_derivatives`), which the reference would overwrite."""
    trainer = getattr(module, "_trainer", None)
    plugin = getattr(trainer, "precision_plugin", None) if trainer is not None else None
    saved = getattr(plugin, "derivative_scaler", None)
    if saved is not None:
        plugin.derivative_scaler = None
    try:
        yield
    finally:
        if saved is not None:
            plugin.derivative_scaler = saved


def reference_gradient(
    module: Any, batch: Any, params: Sequence[Tensor], dtype: torch.dtype = torch.float32
) -> list[Tensor]:
    """The gradient of `module`'s total loss on `batch` w.r.t. `params` (some or all of the
    module's parameters), everything in `dtype`, autocast off; `p.grad` is left as it is.

    Under DDP the loss is this rank's part of the global mean (`SciMLModule.loss_terms`), so the
    full-batch gradient is the sum of the ranks' gradients: one all-reduce, on every rank (the
    callers ask on the same steps everywhere)."""

    def total(terms: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"total": module.total_loss(terms)}

    return reference_gradients(module, batch, params, total, dtype)["total"]


def reference_gradients(
    module: Any,
    batch: Any,
    params: Sequence[Tensor],
    losses: Callable[[dict[str, Tensor]], dict[str, Tensor]],
    dtype: torch.dtype = torch.float32,
) -> dict[str, list[Tensor]]:
    """`reference_gradient` of several losses built from one forward: `losses(terms)` maps the
    module's loss terms (computed in `dtype` on copies of the weights) to named scalars, and
    each gets its gradient w.r.t. `params` (the loss weighting asks for one per term). Under
    DDP all of them are summed over the ranks in one all-reduce."""
    wanted = {id(p) for p in params}
    names = {id(p): name for name, p in module.named_parameters()}
    copies = {
        f"inner.{names[id(p)]}": p.detach().to(dtype).requires_grad_(id(p) in wanted)
        for p in module.parameters()
    }
    buffers = {
        f"inner.{name}": (b.to(dtype) if b.is_floating_point() else b.clone())
        for name, b in module.named_buffers()
    }
    full_batch = apply_to_collection(
        batch, Tensor, lambda t: t.detach().to(dtype) if t.is_floating_point() else t
    )
    device = next(iter(copies.values())).device.type if copies else "cpu"
    inputs = [copies[f"inner.{names[id(p)]}"] for p in params]
    gradients: dict[str, list[Tensor]] = {}
    with torch.enable_grad(), torch.autocast(device, enabled=False):
        with _derivative_health_untouched(module):
            terms = torch.func.functional_call(
                _TermsOf(module), {**copies, **buffers}, (full_batch,)
            )
            named = losses(terms)
        for index, (name, loss) in enumerate(named.items()):
            last = index == len(named) - 1
            grads = torch.autograd.grad(loss, inputs, allow_unused=True, retain_graph=not last)
            gradients[name] = [
                torch.zeros_like(x) if g is None else g.detach()
                for g, x in zip(grads, inputs, strict=True)
            ]
    if world_size() > 1 and gradients:
        every = [g for grads in gradients.values() for g in grads]
        flat = all_reduce_sum(torch.cat([g.reshape(-1).double() for g in every]))
        parts = iter(flat.split([g.numel() for g in every]))
        gradients = {
            name: [next(parts).view_as(g).to(g.dtype) for g in grads]
            for name, grads in gradients.items()
        }
    return gradients


def agreement(gradient: Sequence[Tensor | None], reference: Sequence[Tensor]) -> dict[str, Any]:
    """cosine(g, r), |g - r| / |r| (float64, over all parameters as one vector), and whether g
    was finite. A missing gradient (a parameter the loss did not reach) counts as zero. A
    non-finite g gives None for both numbers: it agrees with nothing."""
    g = torch.cat(
        [
            (torch.zeros_like(r) if x is None else x.detach()).reshape(-1).double()
            for x, r in zip(gradient, reference, strict=True)
        ]
    )
    r = torch.cat([x.detach().reshape(-1).double() for x in reference])
    finite = bool(torch.isfinite(g).all())
    record: dict[str, Any] = {"finite": finite, "grad_cosine": None, "grad_rel_error": None}
    if not finite:
        return record
    r_norm, g_norm = float(r.norm()), float(g.norm())
    if r_norm == 0.0:
        record["grad_rel_error"] = 0.0 if g_norm == 0.0 else math.inf
        record["grad_cosine"] = 1.0 if g_norm == 0.0 else 0.0
        return record
    record["grad_rel_error"] = float((g - r).norm()) / r_norm
    record["grad_cosine"] = float(g @ r) / (g_norm * r_norm) if g_norm > 0 else 0.0
    return record
