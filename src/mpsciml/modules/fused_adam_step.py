"""The whole Adam step of a compiled PINN as one compiled call (`compile=true`, full precision).

Why: with only the loss terms compiled (`compiled_loss`), a small PINN's step is still several
calls into generated code with Python between them: the compiled forward, AOT autograd's backward
through the autograd engine, the plugin's finite-gradient check, Adam's update, and the wrappers
around each (Lightning's backward hooks, the optimizer's profiling wrapper). Dynamo traces
`torch.func.grad_and_value`, so the Taylor forward, the weight gradient and Adam's update fit in
one graph: one call per step, Adam's arithmetic fused into the backward's loops (the README's
benchmark table has the measured times).

What it keeps of the step it replaces, so that both may alternate within one run:
- the loss: the compiled Taylor terms (`PINNModule._taylor_terms`) and their weighted sum in the
  same order as `total_loss` (a weight of 1 multiplies exactly);
- torch's Adam: its update in the operation order of the optimizer's own implementation (fused
  kernel, or for-loop/foreach), step size and bias corrections in Python floats as torch computes
  them (`adam_scalars`), on the optimizer's own state tensors (`step`, `exp_avg`,
  `exp_avg_sq`), so a checkpoint, a resume, an unfused step or the L-BFGS hand-off find what
  `torch.optim.Adam` would have left;
- the plugin's skip: a non-finite loss or gradient leaves weights and state as they were (chosen
  inside the graph); the plugin counts the skip from one host read per step, as the unfused step
  does with its finite check;
- `p.grad` holds the gradient the update used, as after an unfused step (the plugin measures
  it on the precision monitor's steps).

It runs only where nothing needs the gradient between backward and update
(`FusedAdamStep.refusal` says why not, and the compiled-loss step runs instead): Adam without
weight decay, AMSGrad or maximize in one parameter group; a full precision without loss scaling
or autocast (fp32, fp64); one process (DDP averages gradients in backward hooks); no callback or
module hook at `on_before_backward`, `on_after_backward` or `on_before_optimizer_step`; no
gradient clipping.
"""

from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.model_helpers import is_overridden
from torch import Tensor, nn

from mpsciml.distributed.integrity import world_size
from mpsciml.modules.compiled_loss import CompiledLoss
from mpsciml.modules.lean_guards import LeanGuards, check_guard_setting

#: hooks that would see the gradient before the update (or change it); fused, they cannot
GRADIENT_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
#: what the formula below implements of `torch.optim.Adam`'s options
ADAM_DEFAULTS = {"amsgrad": False, "maximize": False, "weight_decay": 0, "differentiable": False}


class _Terms(nn.Module):
    """The module's compiled loss terms as a `forward`, so `torch.func.functional_call` can run
    them on given parameter values (its parameters are the PINN module's, by the same names)."""

    def __init__(self, module: nn.Module, terms: Callable[..., Any]) -> None:
        super().__init__()
        self.pinn = module
        self.terms = terms

    def forward(self, points: dict[str, Tensor]) -> dict[str, Tensor]:
        return self.terms(points, None, True)[0]


def adam_scalars(
    lr: float, betas: tuple[float, float], eps: float, steps_done: float, kernel: bool
) -> tuple[float, ...]:
    """The scalars of Adam's next step (the `steps_done + 1`-th), in Python floats as torch's
    Adam computes them (its fused CPU kernel takes the square root with sqrt, its for-loop with
    `** 0.5`; a tensor power could differ from C's pow in the last bit): step size, the square
    root of the second bias correction, beta1, beta2, eps, 1 - beta1, 1 - beta2."""
    beta1, beta2 = betas
    step = steps_done + 1
    step_size = lr / (1 - beta1**step)
    correction2 = 1 - beta2**step
    root = math.sqrt(correction2) if kernel else correction2**0.5
    return step_size, root, beta1, beta2, eps, 1 - beta1, 1 - beta2


def adam_update_(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    state: Sequence[tuple[Tensor, Tensor, Tensor]],
    scalars: Tensor,
    apply: Tensor,
    kernel: bool = False,
) -> None:
    """torch's Adam in place, where `apply` (a 0-d bool) holds: the step count, both moments and
    the weights keep their values otherwise. `scalars` are `adam_scalars` in float64, each
    rounded to the weights' dtype where torch rounds it. `kernel`: the operation order of
    torch's fused CPU kernel (`fused=True`), else that of its for-loop and foreach updates
    (lerp, addcmul, addcdiv): each run's update is the one `torch.optim.Adam` makes with the
    same settings."""
    for param, grad, (step, exp_avg, exp_avg_sq) in zip(params, grads, state, strict=True):
        step_size, root, beta1, beta2, eps, take1, take2 = scalars.to(param.dtype).unbind()
        if kernel:
            new_avg = exp_avg * beta1 + grad * take1
            new_sq = exp_avg_sq * beta2 + grad * grad * take2
            new_param = param - step_size * new_avg / (new_sq.sqrt() / root + eps)
        else:
            new_avg = torch.lerp(exp_avg, grad, take1)
            new_sq = exp_avg_sq * beta2 + take2 * grad * grad
            new_param = param + (-step_size) * new_avg / (new_sq.sqrt() / root + eps)
        step.copy_(step + apply.to(step.dtype))
        exp_avg.copy_(torch.where(apply, new_avg, exp_avg))
        exp_avg_sq.copy_(torch.where(apply, new_sq, exp_avg_sq))
        param.copy_(torch.where(apply, new_param, param))


class FusedAdamStep:
    """One Adam step of `module` (a `PINNModule` with `compile=true`) as one compiled call:
    `closure(batch_points)` for `LightningOptimizer.step`, which the plugin recognises by its
    `updates_weights` attribute and does not step again."""

    def __init__(
        self,
        module: Any,
        backend: str,
        mode: str | None,
        cpp_wrapper: bool = False,
        guards: str = "lean",
    ) -> None:
        check_guard_setting(guards)
        self.module = module
        guard_filter = LeanGuards(GUARD_ROOTS) if guards == "lean" else None
        self.compiled = CompiledLoss(self._step, backend, mode, cpp_wrapper, guard_filter)
        self.terms = _Terms(module, module._taylor_terms)
        self.steps = 0  # fused steps run
        #: optimizer -> why its setup cannot be fused ("" if it can), found on its first step
        self._static: weakref.WeakKeyDictionary[torch.optim.Optimizer, str] = (
            weakref.WeakKeyDictionary()
        )
        #: optimizer -> its parameters' names in the module, in its order (found with the above)
        self._names: weakref.WeakKeyDictionary[torch.optim.Optimizer, list[str]] = (
            weakref.WeakKeyDictionary()
        )
        self._weights: tuple[tuple[float, ...], Tensor] | None = None

    # ---------------------------------------------------------------- deciding
    def refusal(self, optimizer: torch.optim.Optimizer, trainer: pl.Trainer, plugin: Any) -> str:
        """Why this step cannot be fused ("" where it can): the run's setup (checked once per
        optimizer) and this step's state (a measured step, a precision hand-off)."""
        static = self._static.get(optimizer)
        if static is None:
            static = self._static[optimizer] = self._setup_refusal(optimizer, trainer)
        if static:
            return static
        if plugin is None or not plugin.spec.is_full or plugin.autocast_dtype is not None:
            return "precision is not a full one"
        if plugin.grad_scaler is not None or plugin.fp16_scaler is not None:
            return "gradients are scaled"
        if plugin.derivative_scaler is not None:
            return "derivatives are scaled"
        return ""

    def _setup_refusal(self, optimizer: torch.optim.Optimizer, trainer: pl.Trainer) -> str:
        if type(optimizer) is not torch.optim.Adam:
            return f"{type(optimizer).__name__} is not torch.optim.Adam"
        if len(optimizer.param_groups) != 1:
            return "Adam has several parameter groups"
        group = optimizer.param_groups[0]
        for option, value in ADAM_DEFAULTS.items():
            if group.get(option, value) != value:
                return f"Adam's {option}={group[option]}"
        params = group["params"]
        if any(p.is_sparse or p.is_complex() or not p.is_floating_point() for p in params):
            return "a parameter is sparse, complex or not floating"
        if len({(p.device, p.dtype) for p in params}) != 1:
            return "parameters on several devices or dtypes"
        if params[0].device.type not in ("cpu", "cuda"):
            return f"device {params[0].device.type}"
        if trainer.gradient_clip_val:
            return "gradient clipping"
        if world_size() > 1:
            return "several processes (DDP averages the gradients in backward hooks)"
        for hook in GRADIENT_HOOKS:
            for callback in trainer.callbacks:  # type: ignore[attr-defined]
                if is_overridden(hook, callback, pl.Callback):
                    return f"{type(callback).__name__}.{hook} reads the gradient"
            if is_overridden(hook, self.module, pl.LightningModule):
                return f"the module's {hook}"
        names = {id(p): name for name, p in self.terms.named_parameters()}
        if any(id(p) not in names for p in params):
            return "Adam trains a tensor that is not the module's parameter"
        self._names[optimizer] = [names[id(p)] for p in params]
        return ""

    # ----------------------------------------------------------------- running
    def closure(self, optimizer: torch.optim.Optimizer, points: dict[str, Tensor]) -> FusedClosure:
        return FusedClosure(self, optimizer, points)

    def run(
        self, optimizer: torch.optim.Optimizer, points: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], Tensor, bool, list[Tensor]]:
        """Terms, total, whether the update was applied, and the gradients; weights and Adam's
        state updated in place. For an optimizer `refusal` accepted."""
        group = optimizer.param_groups[0]
        params: list[Tensor] = group["params"]
        state = [self._state(optimizer, p) for p in params]
        kernel = bool(group.get("fused"))
        steps_done = float(state[0][0])  # one count for all (a read of a CPU tensor, or a sync)
        values = adam_scalars(
            float(group["lr"]),
            tuple(map(float, group["betas"])),
            float(group["eps"]),
            steps_done,
            kernel,
        )
        scalars = torch.tensor(values, dtype=torch.float64, device=params[0].device)
        weights = self._weight_tensor(params[0])
        with torch.no_grad():  # the grad transform inside needs no outer graph
            terms, total, applied, grads = self.compiled(
                params, self._names[optimizer], state, scalars, weights, points, kernel
            )
        self.steps += 1
        return terms, total, bool(applied), grads

    def _step(
        self,
        params: list[Tensor],
        names: list[str],
        state: list[tuple[Tensor, Tensor, Tensor]],
        scalars: Tensor,
        weights: Tensor,
        points: dict[str, Tensor],
        kernel: bool,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, list[Tensor]]:
        """What is compiled: the weighted total's gradient at the current weights, and Adam."""
        term_names = self.module.term_names

        def total_of(values: list[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
            terms = torch.func.functional_call(
                self.terms, dict(zip(names, values, strict=True)), (points,), strict=False
            )
            total = terms[term_names[0]] * weights[0]
            for index, name in enumerate(term_names[1:], start=1):
                total = total + terms[name] * weights[index]
            return total, terms

        grad_and_value = torch.func.grad_and_value(total_of, has_aux=True)
        grads, (total, terms) = grad_and_value([p.detach() for p in params])
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        applied = finite & torch.isfinite(total)
        adam_update_(params, grads, state, scalars, applied, kernel)
        return terms, total, applied, grads

    # ----------------------------------------------------------------- inputs
    @staticmethod
    def _state(optimizer: torch.optim.Optimizer, param: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Adam's state for `param`, created as `torch.optim.Adam` creates it on its first step
        (`step` a 0-d float32 tensor: on the CPU, or on the device for fused/capturable)."""
        state = optimizer.state[param]
        if not state:
            group = optimizer.param_groups[0]
            on_device = group.get("fused") or group.get("capturable")
            state["step"] = torch.zeros(
                (), dtype=torch.float32, device=param.device if on_device else "cpu"
            )
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state["step"], state["exp_avg"], state["exp_avg_sq"]

    def _weight_tensor(self, like: Tensor) -> Tensor:
        """The loss weights in `term_names` order, in the terms' dtype (a weighting rule moves
        them every few hundred steps: new data, not a recompile)."""
        weights = self.module.loss_weights
        values = tuple(float(weights.get(name, 1.0)) for name in self.module.term_names)
        if self._weights is None or self._weights[0] != values:
            tensor = torch.tensor(values, dtype=like.dtype, device=like.device)
            self._weights = (values, tensor)
        return self._weights[1]

    def __getstate__(self) -> dict[str, Any]:
        """Caches dropped (a weak dictionary cannot be pickled); the compiled function is
        dropped by `CompiledLoss`."""
        state = self.__dict__.copy()
        state["_static"], state["_names"], state["_weights"] = None, None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._static, self._names = weakref.WeakKeyDictionary(), weakref.WeakKeyDictionary()


class FusedClosure:
    """The closure `LightningOptimizer.step` passes to the plugin: it runs the whole step;
    `updates_weights` tells the plugin not to step the optimizer again, `applied` whether the
    update was applied (False: the plugin counts a skip)."""

    updates_weights = True

    def __init__(
        self, step: FusedAdamStep, optimizer: torch.optim.Optimizer, points: dict[str, Tensor]
    ) -> None:
        self.step, self.optimizer, self.points = step, optimizer, points
        self.applied = False

    def __call__(self) -> Tensor:
        module = self.step.module
        terms, total, self.applied, grads = self.step.run(self.optimizer, self.points)
        params = self.optimizer.param_groups[0]["params"]
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad  # a skip's are dropped by the plugin, after it measured them
        module.last_terms = {**terms, "total": total}
        module._terms_are_global = True
        return total


#: where the values `FusedAdamStep._step` reads come from (`lean_guards`): its arguments, by
#: name, and the PINN module
GUARD_ROOTS = (*list(inspect.signature(FusedAdamStep._step).parameters)[1:], "self.module")
