"""One Lightning precision plugin for all six precisions, switchable during a run.

Why our own plugin instead of Lightning's strings:
- `16-mixed` on the CPU silently becomes bf16 in Lightning; here `mixed` is fp16 autocast with a
  `torch.amp.GradScaler` on every device (on CUDA that is exactly what Lightning's 16-mixed does).
- pure fp16 needs loss scaling that `GradScaler` refuses (fp16 gradients): `DynamicLossScaler`.
- Lightning refuses L-BFGS under AMP; the PINN module switches the plugin to a full precision for
  the L-BFGS phase, and `switch_to` also serves precision schedules (fp16 first, fp32 later).
- PDE residuals take input derivatives through fp16 matmuls: `DerivativeScaler` keeps them in
  range, and a step with a non-finite derivative or gradient is skipped, never applied.
- a layer may declare a precision policy (`mpsciml.precision.policy`): casting, autocast and the
  diagnostics honour it, and `layer_policies` records the ones that ran.

What a precision means (which scaler, whether derivatives are seeded, what L-BFGS falls back to)
is read from its `PrecisionSpec`; nothing here compares precision names.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import Precision
from torch import Tensor
from torch.optim import LBFGS, Optimizer

from mpsciml.precision.derivative_scaler import DerivativeScaler
from mpsciml.precision.diagnostics import (
    YARDSTICK,
    count_nonfinite,
    gradient_underflow_fraction,
    lost_update_fraction,
)
from mpsciml.precision.loss_scaler import DynamicLossScaler, unscale_and_check
from mpsciml.precision.policy import (
    PolicyHooks,
    attach_hooks,
    cast_module,
    find_policies,
    policy_parameters,
)
from mpsciml.precision.registry import LossScaler, PrecisionSpec, get_spec


class SciMLPrecision(Precision):
    def __init__(
        self,
        name: str,
        device: str,
        loss_scaling: bool = True,
        init_scale: float = 2.0**16,
        derivative_scaling: bool = True,
    ) -> None:
        self.device = device
        self.loss_scaling = loss_scaling
        self.init_scale = init_scale
        self.derivative_scaling = derivative_scaling
        self.skipped_steps = 0
        self.consecutive_skips = 0
        self.skip_reasons: Counter[str] = Counter()
        self.switches: list[dict[str, Any]] = []
        self.measure_next_step = False
        self.last_measurement: dict[str, float] = {}
        self.derivative_nonfinite_total = 0
        self.last_derivative_nonfinite = 0
        self._derivative_health: tuple[set[int], set[int]] = (set(), set())
        self.layer_policies: dict[str, str] = {}  # qualified layer name -> policy, as cast
        self._full_params: set[int] = set()  # ids of the parameters policies keep full
        self._configure(get_spec(name))

    # --------------------------------------------------------------- the mode
    def _configure(self, spec: PrecisionSpec) -> None:
        self.spec = spec
        self.precision = spec.lightning  # what Lightning and its loggers show
        self.grad_scaler: torch.amp.GradScaler | None = None
        self.fp16_scaler: DynamicLossScaler | None = None
        if spec.scaler is LossScaler.GRAD_SCALER and self.loss_scaling:
            self.grad_scaler = torch.amp.GradScaler(self.device, init_scale=self.init_scale)
        elif spec.scaler is LossScaler.DYNAMIC and self.loss_scaling:
            self.fp16_scaler = DynamicLossScaler(init_scale=self.init_scale)
        seeded = spec.seeds_derivatives and self.derivative_scaling
        self.derivative_scaler = DerivativeScaler() if seeded else None

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """Autocast only for the mixed modes: weights stay fp32 and matmuls run low."""
        return self.spec.autocast_dtype

    @property
    def loss_scale(self) -> float | None:
        if self.grad_scaler is not None:
            return float(self.grad_scaler.get_scale())
        if self.fp16_scaler is not None:
            return self.fp16_scaler.get_scale()
        return None

    def derivative_seed(self, order: int) -> float:
        return self.derivative_scaler.seed(order) if self.derivative_scaler else 1.0

    def report_derivatives(self, nonfinite_counts: dict[int, int]) -> None:
        """Called by the module after computing a loss: non-finite derivative entries by order."""
        bad = {order for order, count in nonfinite_counts.items() if count > 0}
        self._derivative_health = (bad, set(nonfinite_counts))
        self.last_derivative_nonfinite = sum(nonfinite_counts.values())

    def switch_to(
        self, name: str, module: torch.nn.Module, optimizers: Iterable[Optimizer], step: int
    ) -> None:
        """Change precision mid-run: weights and optimizer state are cast, scalers rebuilt.
        The optimizer state follows its parameter's new dtype (layer policies included)."""
        new, old = get_spec(name), self.spec
        if new.name == old.name:
            return
        if new.param_dtype != old.param_dtype:
            self._cast_with_policies(module, new)
            for optimizer in optimizers:
                for param, state in optimizer.state.items():
                    for key, value in state.items():
                        if torch.is_tensor(value) and value.is_floating_point() and key != "step":
                            state[key] = value.to(param.dtype)
        self._configure(new)
        self.switches.append({"step": step, "from": old.name, "to": new.name})

    # ------------------------------------------------- Lightning plugin hooks
    def convert_module(self, module: torch.nn.Module) -> torch.nn.Module:
        self._cast_with_policies(module, self.spec)
        return module

    def _cast_with_policies(self, module: torch.nn.Module, spec: PrecisionSpec) -> None:
        """Cast to the spec's weights, the layers with a policy to its full precision, and
        (re)attach their forward hooks with the dtypes they now run between."""
        policies = find_policies(module)
        cast_module(module, spec.param_dtype, policies, spec.full_dtype)
        for layer, policy in policies.values():
            attach_hooks(layer, PolicyHooks(policy, spec.full_dtype, spec.param_dtype))
        self.layer_policies = {name: policy.value for name, (_, policy) in policies.items()}
        self._full_params = {id(param) for param in policy_parameters(policies)}

    @contextlib.contextmanager
    def forward_context(self) -> Generator[None, None, None]:
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(self.device, dtype=dtype):
            yield

    def pre_backward(self, tensor: Tensor, module: pl.LightningModule) -> Tensor:  # type: ignore[override]
        if self.grad_scaler is not None:
            tensor = self.grad_scaler.scale(tensor)
        elif self.fp16_scaler is not None:
            tensor = self.fp16_scaler.scale_loss(tensor)
        return super().pre_backward(tensor, module)

    def optimizer_step(  # type: ignore[override]
        self,
        optimizer: Any,
        model: pl.LightningModule,
        closure: Callable[[], Any],
        **kwargs: Any,
    ) -> Any:
        if isinstance(optimizer, LBFGS):
            if not self.spec.is_full:
                raise RuntimeError(
                    f"L-BFGS cannot run under precision={self.spec.name}; the module switches to "
                    "a full precision before its L-BFGS phase"
                )
            return optimizer.step(closure=partial(self._wrap_closure, model, optimizer, closure))
        if getattr(closure, "updates_weights", False):
            return self._fused_step(optimizer, closure)
        closure_result = closure()
        self._after_closure(model, optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        nonfinite_orders, orders_seen = self._derivative_health
        self._derivative_health = (set(), set())
        if self.derivative_scaler is not None:
            self.derivative_scaler.update(nonfinite_orders, orders_seen)
        if nonfinite_orders:
            self.derivative_nonfinite_total += 1
            return self._skip(optimizer, "derivative_overflow", closure_result)
        grads_finite = self._unscale(optimizer, params)
        measuring, self.measure_next_step = self.measure_next_step, False
        if measuring:
            grads = [p.grad for p in params]  # the step reads them, never writes them
            before = [p.detach().clone() for p in params]
            self.last_measurement = self.measure_gradients(params)
        if not grads_finite:
            self._update_scaler(found_nonfinite=True)
            return self._skip(optimizer, "gradient_overflow", closure_result)
        if self.grad_scaler is not None:
            self.grad_scaler.step(optimizer, **kwargs)
        else:
            optimizer.step(**kwargs)
        self._update_scaler(found_nonfinite=False)
        self.consecutive_skips = 0
        if measuring:
            self.last_measurement["lost_update_fraction"] = lost_update_fraction(
                before, params, grads
            )
        return closure_result

    def _fused_step(self, optimizer: Any, closure: Any) -> Any:
        """A closure that updated the weights itself (`modules.fused_adam_step`, full precision
        only: nothing to unscale); its finite check decided whether it applied the update. A
        skip is counted and a measured step measured here as the step above does it, from the
        gradients the closure leaves in `p.grad` and the weights from before it ran."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        measuring, self.measure_next_step = self.measure_next_step, False
        before = [p.detach().clone() for p in params] if measuring else []
        closure_result = closure()
        if measuring:
            self.last_measurement = self.measure_gradients(params)
        if not closure.applied:
            return self._skip(optimizer, "gradient_overflow", closure_result)
        self.consecutive_skips = 0
        if measuring:
            grads = [p.grad for p in params]
            self.last_measurement["lost_update_fraction"] = lost_update_fraction(
                before, params, grads
            )
        return closure_result

    # --------------------------------------------------------------- helpers
    def measure_gradients(self, params: list[Tensor]) -> dict[str, float]:
        """Non-finite and underflowed gradient entries; a parameter that a layer policy keeps
        full is measured against its own dtype, every other one against fp16."""
        grads = [p.grad for p in params]
        yardsticks = [p.dtype if id(p) in self._full_params else YARDSTICK for p in params]
        return {
            "grad_nonfinite": count_nonfinite(grads),
            "grad_underflow_fraction": gradient_underflow_fraction(grads, yardsticks),
        }

    def _unscale(self, optimizer: Optimizer, params: list[Tensor]) -> bool:
        """Unscale gradients in place (if scaled); True when every gradient is finite. Every
        step of every precision asks, fp32 too (a NaN residual must skip, not poison Adam), so
        the check is one fused kernel and one host read (`unscale_and_check`), not a Python loop
        over the parameters."""
        if self.grad_scaler is not None:
            self.grad_scaler.unscale_(optimizer)
        elif self.fp16_scaler is not None:
            return self.fp16_scaler.unscale_(params)
        return unscale_and_check([p.grad for p in params if p.grad is not None])

    def _update_scaler(self, found_nonfinite: bool) -> None:
        if self.grad_scaler is not None:
            self.grad_scaler.update()  # unscale_ recorded whether it found inf: backs off if so
        elif self.fp16_scaler is not None:
            self.fp16_scaler.update(found_nonfinite)

    def _skip(self, optimizer: Optimizer, reason: str, closure_result: Any) -> Any:
        optimizer.zero_grad(set_to_none=True)
        self.skipped_steps += 1
        self.consecutive_skips += 1
        self.skip_reasons[reason] += 1
        return closure_result

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler else None,
            "fp16_scaler": self.fp16_scaler.state_dict() if self.fp16_scaler else None,
            "derivative_scaler": (
                self.derivative_scaler.state_dict() if self.derivative_scaler else None
            ),
            # the run's record so far, so that a resumed run's summary tells the whole run
            "skipped_steps": self.skipped_steps,
            "skip_reasons": dict(self.skip_reasons),
            "switches": [dict(switch) for switch in self.switches],
            "derivative_nonfinite_total": self.derivative_nonfinite_total,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._configure(get_spec(state_dict["name"]))
        for attribute in ("grad_scaler", "fp16_scaler", "derivative_scaler"):
            if state_dict.get(attribute) is not None and getattr(self, attribute) is not None:
                getattr(self, attribute).load_state_dict(state_dict[attribute])
        self.skipped_steps = int(state_dict.get("skipped_steps", 0))
        self.skip_reasons = Counter(state_dict.get("skip_reasons", {}))
        self.switches = [dict(switch) for switch in state_dict.get("switches", [])]
        self.derivative_nonfinite_total = int(state_dict.get("derivative_nonfinite_total", 0))


def build_precision_plugin(
    name: str,
    device: str,
    allow_tf32: bool = False,
    loss_scaling: bool = True,
    init_scale: float = 2.0**16,
    derivative_scaling: bool = True,
) -> SciMLPrecision:
    """The plugin for precision `name` on `device`; also sets the global TF32 switches, since
    fp32 must mean IEEE fp32 unless the user opts into TF32 (CUDA only)."""
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    torch.set_float32_matmul_precision("high" if allow_tf32 else "highest")
    return SciMLPrecision(
        name,
        device,
        loss_scaling=loss_scaling,
        init_scale=init_scale,
        derivative_scaling=derivative_scaling,
    )
