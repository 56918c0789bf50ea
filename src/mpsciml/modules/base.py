"""What every mpsciml LightningModule shares: the training step, the optimiser phases, the
precision hand-offs and the divergence stop.

Optimisation is manual (`automatic_optimization = False`) because the usual SciML recipe is Adam
followed by L-BFGS, and L-BFGS needs a closure that re-evaluates the loss several times per step;
doing it by hand keeps one code path for both and lets the precision plugin scale the backward.

A subclass says what the loss of a batch is (`loss_terms`) and how far the model is from the
reference (`predict_evaluation` + `evaluation_errors`); PINNs and operator learning differ only
there. The batches come from the problem kind's DataModule (`mpsciml.data`); the module owns
what is not data: the model, the residuals, the optimisers and the reference to evaluate on.
"""

from __future__ import annotations

import inspect
import logging
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_utilities.core.apply_func import apply_to_collection
from omegaconf import DictConfig
from torch import Tensor

from mpsciml.data.same_batch import SameBatchMemo
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.distributed.integrity import all_reduce_sum, reduce_terms, world_size
from mpsciml.log_steps import is_log_step
from mpsciml.modules.optimizer_impl import build_optimizer, implementation
from mpsciml.modules.plain_attributes import PlainAttributes
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.policy import input_dtype

log = logging.getLogger(__name__)


def first_floating(model: torch.nn.Module) -> tuple[torch.nn.Module, str] | tuple[()]:
    """(module, name) of the tensor `policy.input_dtype` reads: the first floating parameter
    or buffer in registration order; () if none. Where it lives does not change when the
    plugin casts the model (a parameter keeps its identity, a buffer its name), so the input
    dtype is that tensor's dtype at any later time."""
    for module in model.modules():
        named = (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False))
        for name, tensor in named:
            if tensor.is_floating_point():
                return module, name
    return ()


class SciMLModule(PlainAttributes, pl.LightningModule):
    """Manual-optimisation module: loss = sum of weighted terms, Adam and/or L-BFGS phases."""

    #: the output field shown in the progress bar
    output_names: tuple[str, ...]
    #: the network being trained (set by the subclass)
    model: torch.nn.Module

    def __init__(self, optimizer: DictConfig, max_consecutive_skips: int = 100) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.optimizer_cfg = optimizer
        self.loss_weights: dict[str, float] = {}
        self.last_terms: dict[str, Tensor] = {}  # under DDP: rank parts until global_terms()
        self._terms_are_global = True
        self.max_skips = max_consecutive_skips
        self.diverged = False
        self._phases: tuple[bool, int | None] | None = None  # see first_phase_end
        self._cast = SameBatchMemo()  # see batch_in_input_dtype
        self._has_scheduler = False  # set by configure_optimizers; spares a lookup per step
        self._input_dtype_source: tuple[torch.nn.Module, str] | tuple[()] | None = None
        #: Adam's implementation, "fused" | "foreach" | "for-loop" (None: no Adam phase);
        #: chosen in configure_optimizers (`modules.optimizer_impl`), read by the summary
        self.optimizer_impl: str | None = None
        #: what a training strategy attached to this module reports in summary.json: key ->
        #: a function called once when the run's summary is written (also for a failed run), so
        #: a strategy (loss weighting, adaptive points, unknown coefficients) reports itself
        #: without train.py knowing it
        self.summary_parts: dict[str, Callable[[], Any]] = {}
        #: callbacks a strategy needs (added to the trainer's through `configure_callbacks`)
        self.strategy_callbacks: list[pl.Callback] = []

    # ----------------------------------------------------------- subclass API
    @abstractmethod
    def loss_terms(self, batch: Any) -> dict[str, Tensor]:
        """The unweighted loss terms of one step's batch (in the input dtype), by name. Under DDP
        the batch is this rank's share and each term THIS RANK'S PART of the global mean (sum
        over the rank's items / global item count; `integrity.global_means`), so the parts add
        up over the ranks to the full-batch term; with one process it is the plain mean."""

    @abstractmethod
    def predict_evaluation(self) -> Tensor:
        """The model where the reference is known, in the run's precision (float64, CPU).
        Computed once per evaluation and handed to the two methods below."""

    @abstractmethod
    def evaluation_errors(self, prediction: Tensor) -> dict[str, float]:
        """Relative L2 error per output field against the reference solution."""

    @abstractmethod
    def evaluation_plots(self, prediction: Tensor, out_dir: Path, title: str) -> list[Path]:
        """Pictures of prediction vs reference, written under out_dir."""

    def _resolve_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """A weight per loss term (default 1) from `loss_weights`, checked against the terms the
        subclass named in `self.term_names`, so a typo is an error and not a silent no-op."""
        for key, value in weights.items():
            if key not in self.term_names:
                raise ValueError(
                    f"loss_weights.{key} names no loss term; terms: {', '.join(self.term_names)}"
                )
            if not value >= 0:
                raise ValueError(f"loss_weights.{key}={value} must be >= 0")
        return {term: float(weights.get(term, 1.0)) for term in self.term_names}

    def total_loss(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum of the terms, in their order. A weight of 1 multiplies nothing and
        the sum starts at the first term, not at 0.0: bitwise the same total and gradient
        (1 * x and 0 + x are x for a non-negative term), two operators fewer per term."""
        total: Tensor | None = None
        for name, value in terms.items():
            weight = self.loss_weights.get(name, 1.0)
            term = value if weight == 1.0 else weight * value
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())

    # --------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self._current_optimizer()
        batch = self.batch_in_input_dtype(batch)
        lbfgs = isinstance(optimizer.optimizer, torch.optim.LBFGS)
        ranks = world_size()
        params = [p for group in optimizer.param_groups for p in group["params"]]

        def closure() -> Tensor:
            """Under DDP: backward of `ranks * (this rank's part)`, which DDP's gradient average
            turns into the full-batch gradient; L-BFGS gets the all-reduced loss, so every rank
            takes the same line-search decisions (the gradients agree already)."""
            for param in params:  # = optimizer.zero_grad(set_to_none=True), without its
                param.grad = None  # profiler record and dynamo guard (~1% of a compiled step)
            terms = self.loss_terms(batch)
            loss = self.total_loss(terms)
            self.manual_backward(loss * ranks if ranks > 1 else loss)
            self.last_terms = {k: v.detach() for k, v in terms.items()}
            self.last_terms["total"] = loss.detach()
            self._terms_are_global = ranks == 1
            if lbfgs and ranks > 1:
                return self.global_terms()["total"]
            return loss

        optimizer.step(closure=self.fused_closure(optimizer.optimizer, batch) or closure)
        if self._has_scheduler and self._in_first_phase():
            self.lr_schedulers().step()  # type: ignore[union-attr]
        self._log_losses()
        return self.last_terms["total"]

    def fused_closure(self, optimizer: torch.optim.Optimizer, batch: Any) -> Any:
        """A closure that runs the whole step, update included (`modules.fused_adam_step`), where
        the module has one and this step allows it; None: the closure above."""
        return None

    def _log_losses(self) -> None:
        """The loss terms, only on the steps Lightning writes to the loggers
        (`log_every_n_steps`). Each `self.log` costs ~0.3 ms of Python (Lightning's result
        collection), as much as a small PINN's backward pass; unwritten, it is wasted. The
        progress bar reads `last_terms` itself on its refresh steps (`callbacks/progress.py`)."""
        if not is_log_step(self.trainer):
            return
        terms = self.global_terms()  # one all-reduce under DDP, on the same steps on every rank
        self.log("train/loss", terms["total"], batch_size=1)
        for name, value in terms.items():
            if name != "total":
                self.log(f"train/loss_{name}", value, batch_size=1)

    def global_terms(self) -> dict[str, Tensor]:
        """`last_terms` as global values (the sum of the ranks' parts), all-reduced once per
        step and only when asked: a collective, so every rank asks on the same steps (logged
        or shown steps, every L-BFGS closure, the end of training). One process: no-op."""
        if not self._terms_are_global:
            self.last_terms = reduce_terms(self.last_terms)
            self._terms_are_global = True
        return self.last_terms

    def on_train_end(self) -> None:
        """What the run reports after fit (`last_terms` in summary.json) is global."""
        if self.last_terms:
            self.global_terms()

    def input_dtype(self) -> torch.dtype:
        """The dtype the model takes its inputs in: its weights', or fp32 where its first layer
        keeps a full-precision policy (coordinates rounded to fp16 before Fourier features
        would cost ~0.05 of accuracy before the layer even runs). Asked every step: after the
        first answer, the tensor that gave it is looked up by where it lives (`first_floating`)
        instead of walking the model again (~1% of a compiled step)."""
        where = self._input_dtype_source
        if where is None:
            where = self._input_dtype_source = first_floating(self.model)
        if where:
            tensor = getattr(where[0], where[1], None)
            if isinstance(tensor, Tensor):
                return tensor.dtype
        return input_dtype(self.model) or next(self.parameters()).dtype

    def batch_in_input_dtype(self, batch: Any) -> Any:
        """The batch's floating tensors in the input dtype (indices stay integers), cast once
        per new batch: after the precision hand-offs of `on_train_batch_start`."""
        dtype = self.input_dtype()

        def cast(tensor: Tensor) -> Tensor:
            return tensor.to(dtype) if tensor.is_floating_point() else tensor

        return self._cast(batch, dtype, lambda b: apply_to_collection(b, Tensor, cast))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._leave_low_precision_for_lbfgs()

    def _leave_low_precision_for_lbfgs(self) -> None:
        """Entering the L-BFGS phase: leave a low precision first (L-BFGS needs exact losses for
        its line search, and a loss scaler cannot sit inside its closure)."""
        plugin = self._precision_plugin()
        if plugin is None or plugin.spec.is_full:
            return
        if not isinstance(self._current_optimizer().optimizer, torch.optim.LBFGS):
            return
        target = plugin.spec.full_precision
        log.warning(
            "step %d: L-BFGS phase starts; precision %s -> %s for it",
            self.global_step,
            plugin.spec.name,
            target,
        )
        plugin.switch_to(target, self, self._all_optimizers(), self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Stop a run that cannot make progress: steps skipped in a row, or a non-finite loss
        from L-BFGS (which has no skip logic of its own)."""
        plugin = self._precision_plugin()
        too_many_skips = plugin is not None and plugin.consecutive_skips >= self.max_skips
        lbfgs_blew_up = isinstance(
            self._current_optimizer().optimizer, torch.optim.LBFGS
        ) and not torch.isfinite(self.last_terms["total"])
        if too_many_skips or lbfgs_blew_up:
            self.diverged = True
            self.trainer.should_stop = True
            log.warning("step %d: training diverged; stopping", self.global_step)

    def configure_optimizers(self) -> Any:
        """Adam and/or L-BFGS over the weights as they will train (Lightning calls this after
        the precision plugin cast them), so Adam's implementation is chosen for their real
        device and dtype (`optimizer_impl.build_optimizer`: fused where it computes what the
        loop computes, else foreach)."""
        params = list(self.parameters())
        optimizers = [
            build_optimizer(instantiate(self.optimizer_cfg[phase]), params)
            for phase in ("adam", "lbfgs")
            if self.optimizer_cfg.get(phase) is not None
        ]
        has_adam = self.optimizer_cfg.get("adam") is not None
        self.optimizer_impl = implementation(optimizers[0]) if has_adam else None
        scheduler_cfg = self.optimizer_cfg.get("scheduler")
        self._has_scheduler = scheduler_cfg is not None and has_adam
        if not self._has_scheduler:
            return optimizers
        return optimizers, [instantiate(scheduler_cfg)(optimizers[0])]

    def on_train_start(self) -> None:
        """A resumed run's Adam has the checkpoint's settings (torch restores a param group's
        `fused`/`foreach`), so what runs is read again once the state is restored."""
        if self.optimizer_cfg.get("adam") is not None:
            self.optimizer_impl = implementation(self._all_optimizers()[0].optimizer)

    def configure_callbacks(self) -> list[pl.Callback]:
        """The strategies' callbacks, next to the ones the config lists."""
        return list(self.strategy_callbacks)

    def summary_facts(self) -> dict[str, Any]:
        """The strategies' reports for summary.json (`summary_parts`)."""
        return {key: report() for key, report in self.summary_parts.items()}

    def _in_first_phase(self) -> bool:
        """Adam's phase (the only phase of adam-only or lbfgs-only configs)."""
        switch = self.first_phase_end()
        return switch is None or self.global_step < switch

    def first_phase_end(self) -> int | None:
        """The step where L-BFGS takes over from Adam; None for a single-phase config. The config
        is read once: reading an interpolated key (`${int_fraction:...}`) parses it anew, ~1 ms,
        and this runs several times per step."""
        if self._phases is None:
            cfg = self.optimizer_cfg
            switch = cfg.get("switch_step")
            two_phases = cfg.get("adam") is not None and cfg.get("lbfgs") is not None
            self._phases = (two_phases, None if switch is None else int(switch))
        two_phases, switch = self._phases
        return switch if two_phases else None

    def _all_optimizers(self) -> list[Any]:
        optimizers = self.optimizers()
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def _current_optimizer(self) -> Any:
        optimizers = self._all_optimizers()
        return optimizers[0] if self._in_first_phase() else optimizers[-1]

    def _precision_plugin(self) -> SciMLPrecision | None:
        if self._trainer is None:
            return None
        plugin = self._trainer.precision_plugin
        return plugin if isinstance(plugin, SciMLPrecision) else None

    def derivative_seeding(self) -> tuple[Any, bool]:
        """(seed per derivative order or None, whether derivative health is tracked).

        Under fp16 compute the input derivatives are seeded per order by the precision plugin's
        derivative scaler, and their health is reported back to it (`report_nonfinite`), so the
        plugin can skip a step whose derivatives overflowed instead of blaming (and shrinking)
        the loss scale.
        """
        plugin = self._precision_plugin()
        scaled = plugin is not None and plugin.derivative_scaler is not None
        return (plugin.derivative_seed if scaled else None), scaled

    def report_nonfinite(self, derivative_sets: list[Derivatives]) -> None:
        """Sum the non-finite derivative counts per order and tell the plugin (one sync/step).
        Under DDP the counts are summed over the ranks too (the same all-reduce on every rank),
        so every rank's plugin takes the same skip decision and the weights stay identical."""
        plugin = self._precision_plugin()
        if plugin is None:
            return
        counts: dict[int, Tensor] = {}
        for derivatives in derivative_sets:
            for order, count in derivatives.nonfinite.items():
                counts[order] = counts.get(order, 0) + count
        orders = sorted(counts)
        if orders and world_size() > 1:
            local = torch.stack([torch.as_tensor(counts[o]).double() for o in orders])
            counts = dict(zip(orders, all_reduce_sum(local), strict=True))
        plugin.report_derivatives({o: int(c) for o, c in counts.items()})

    def forward_context(self) -> Any:
        """The run's compute precision for inference (autocast for the mixed modes)."""
        if self._trainer is not None:
            return self.trainer.precision_plugin.forward_context()
        return torch.autocast("cpu", enabled=False)

    # ------------------------------------------------------------- validation
    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Every error as `val/l2_<name>`; `val/l2` is the mean relative L2 of the output fields
        only (the H1 and zero-shot errors of a grid run would blur a checkpoint's choice).
        Under DDP every rank evaluates the same weights on the same reference, so the values
        agree; `sync_dist` says so to Lightning (an all-reduce of equal numbers per log)."""
        errors = self.evaluation_errors(self.predict_evaluation())
        sync = world_size() > 1
        for name, error in errors.items():
            shown = name == self.output_names[0]
            self.log(f"val/l2_{name}", error, prog_bar=shown, batch_size=1, sync_dist=sync)
        fields = [errors[n] for n in self.output_names if math.isfinite(errors.get(n, math.nan))]
        mean = sum(fields) / len(fields) if fields else math.nan
        self.log("val/l2", mean, batch_size=1, sync_dist=sync)


# Lightning reads training_step's signature on every step (`_build_kwargs`: does it take
# batch_idx?); `inspect` returns a function's `__signature__` as it is instead of rebuilding it
# (~30 us per step on a busy core). The signature is the function's own, so the answer is too.
SciMLModule.training_step.__signature__ = inspect.signature(SciMLModule.training_step)  # type: ignore[attr-defined]
