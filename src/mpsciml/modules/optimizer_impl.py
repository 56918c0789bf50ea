"""Which implementation of Adam a run uses: fused, foreach or torch's per-parameter loop.

Why it matters: a small PINN's Adam update is ~8 tiny tensors, so its cost is operator dispatch,
not arithmetic. torch's default on the CPU is the Python loop over parameters (~10 operators
each); `foreach` batches each operator over the tensors; `fused` does the whole update in one
kernel per (device, dtype), measured ~4x faster than the loop for a 2-[20]x3-1 MLP on a CPU core.

The rule, decided once when the optimisers are built (`SciMLModule.configure_optimizers`):
- `optimizer.adam.fused: null` (auto): fused where torch has the kernel for every parameter's
  device and dtype and the weights are fp32 or fp64; foreach otherwise (unless `foreach: false`).
  Fused is kept off for fp16/bf16 weights (pure fp16/bf16 runs): it computes each update in fp32
  from the half state, the loop and foreach in the weights' dtype, so a pure-fp16 run would
  train differently (weights 0.14 apart after 20 steps in a test), and `precision.adam_eps` is
  set for half arithmetic. foreach is bitwise the loop there.
- `fused: true`: fused, whatever the dtype (torch refuses a device without the kernel).
- `fused: false`: torch's own choice, i.e. the previous behaviour (the loop on the CPU, foreach
  on CUDA), unless `foreach` says otherwise.
Optimisers other than Adam/AdamW are built as configured.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

#: what `module.optimizer_impl` can be (None: no Adam phase)
IMPLS = ("fused", "foreach", "for-loop")
#: weight dtypes where fused Adam computes exactly what the loop computes (to rounding)
FULL_DTYPES = (torch.float32, torch.float64)
#: the optimisers whose implementation we choose (both have fused and foreach in torch)
ADAMS = (torch.optim.Adam, torch.optim.AdamW)


@functools.cache
def has_fused_adam(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch runs fused Adam for weights of this device and dtype: asked by doing one
    fused step on a one-element tensor, the only answer that cannot go stale across torch
    versions and devices (the supported lists are private and change)."""
    try:
        weight = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
        weight.grad = torch.ones_like(weight)
        torch.optim.Adam([weight], fused=True).step()
    except (RuntimeError, ValueError, TypeError, NotImplementedError):
        return False
    return True


def adam_keywords(
    params: Sequence[Tensor], fused: bool | None, foreach: bool | None
) -> dict[str, bool | None]:
    """`fused`/`foreach` keywords for an Adam over `params` by the module docstring's rule."""
    if fused is not None:
        return {"fused": fused, "foreach": None if fused else foreach}
    if foreach is False:
        return {"fused": None, "foreach": False}
    kinds = {(p.device, p.dtype) for p in params}
    full = all(dtype in FULL_DTYPES for _, dtype in kinds)
    if kinds and full and all(has_fused_adam(device, dtype) for device, dtype in kinds):
        return {"fused": True, "foreach": None}
    return {"fused": None, "foreach": True}


def build_optimizer(make: Callable[..., Optimizer], params: Sequence[Tensor]) -> Optimizer:
    """The optimiser `make(params)`; for Adam/AdamW with the implementation chosen here.
    `make` is the `_partial_` Hydra made of `optimizer.<phase>`; its own `fused`/`foreach`
    keywords (`null`: auto) are the user's request."""
    func = getattr(make, "func", None)
    if func not in ADAMS:
        return make(params)
    keywords: dict[str, Any] = getattr(make, "keywords", {})
    chosen = adam_keywords(params, keywords.get("fused"), keywords.get("foreach"))
    return make(params, **chosen)


def foreach_devices() -> tuple[str, ...]:
    """The device types where torch's Adam defaults to foreach (its list is private)."""
    try:
        from torch.utils._foreach_utils import _get_foreach_kernels_supported_devices

        return tuple(_get_foreach_kernels_supported_devices())
    except ImportError:  # pragma: no cover - a torch that moved it
        return ("cuda",)


def implementation(optimizer: Optimizer) -> str:
    """What `optimizer.step()` runs, "fused" | "foreach" | "for-loop", read from its first
    param group (after a resume that is the checkpoint's, since torch restores the group's
    settings). foreach=None means torch's default, which it takes per step: foreach when every
    parameter is on a device with foreach kernels (CUDA), else the loop."""
    group = optimizer.param_groups[0]
    if group.get("fused"):
        return "fused"
    foreach = group.get("foreach")
    if foreach is None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        foreach = bool(params) and all(p.device.type in foreach_devices() for p in params)
    return "foreach" if foreach else "for-loop"
