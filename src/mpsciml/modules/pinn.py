"""The physics-informed LightningModule: loss = weighted sum of the problem's residual terms.

Optimisation is manual (`automatic_optimization = False`) because the usual PINN recipe is Adam
followed by L-BFGS, and L-BFGS needs a closure that re-evaluates the loss several times per step;
doing it by hand keeps one code path for both and lets the precision plugin scale the backward.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn

from mpsciml.diff import Derivatives
from mpsciml.metrics import relative_l2
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.problems.base import Problem
from mpsciml.taylor import TaylorDerivatives, probe_derivatives, supports_taylor

log = logging.getLogger(__name__)


class PINNModule(pl.LightningModule):
    def __init__(
        self,
        problem: Problem,
        model: nn.Module,
        optimizer: DictConfig,
        loss_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        eval_chunk: int = 32768,
        max_consecutive_skips: int = 100,
        resample_every: int | None = None,
        derivatives: str = "autograd",
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.problem = problem
        self.model = model
        self.optimizer_cfg = optimizer
        self.eval_chunk = eval_chunk
        self.seed = seed
        self.resample_every = resample_every
        self.conditions = problem.conditions(seed)
        self.grid = problem.evaluation_grid()
        # float64 on the CPU and deliberately not a buffer: a pure-fp16 run converts buffers.
        self.grid_reference = problem.reference(self.grid.points)
        if derivatives not in ("autograd", "taylor"):
            raise ValueError(f"derivatives={derivatives!r} is unknown; allowed: autograd, taylor")
        self.derivatives = derivatives
        self.term_conditions = self._discover_terms()
        # Which derivatives each condition's residual asks for, carried forward by Taylor mode.
        self._carry = {
            name: probe_derivatives(
                c.residual, model, c.points, problem.input_names, problem.output_names
            )
            for name, c in self.conditions.items()
            if derivatives == "taylor"
        }
        self.term_names = list(self.term_conditions)
        self.loss_weights = self._resolve_weights(dict(loss_weights or {}))
        self._points: dict[str, Tensor] = {}
        self._points_key: tuple[torch.device, torch.dtype] | None = None
        self.last_terms: dict[str, Tensor] = {}
        self.max_skips = max_consecutive_skips
        self.diverged = False

    # ----------------------------------------------------------------- losses
    def loss_terms(self) -> dict[str, Tensor]:
        """Mean squared residual of every condition and equation, by term name.

        Under fp16 compute the input derivatives are seeded per order by the precision plugin's
        derivative scaler, and their health is reported back to it, so the plugin can skip a
        step whose derivatives overflowed instead of blaming (and shrinking) the loss scale.
        """
        plugin = self._precision_plugin()
        scaled = plugin is not None and plugin.derivative_scaler is not None
        seed = plugin.derivative_seed if scaled else None
        taylor = self.derivatives == "taylor" and supports_taylor(self.model)
        names = (self.problem.input_names, self.problem.output_names)
        terms: dict[str, Tensor] = {}
        derivative_sets = []
        for name, points in self._device_points().items():
            inputs = points.detach().requires_grad_(True)
            if taylor:
                derivatives: Derivatives = TaylorDerivatives(
                    self.model,
                    inputs,
                    *names,
                    seed=seed,
                    track_nonfinite=scaled,
                    carry=self._carry[name],
                )
            else:
                derivatives = Derivatives(
                    inputs, self.model(inputs), *names, seed=seed, track_nonfinite=scaled
                )
            derivative_sets.append(derivatives)
            residual = self.conditions[name].residual(derivatives)
            if isinstance(residual, Mapping):
                for equation, value in residual.items():
                    terms[f"{name}_{equation}"] = torch.mean(value**2)
            else:
                terms[name] = torch.mean(residual**2)
        if scaled:
            counts: dict[int, Tensor] = {}
            for derivatives in derivative_sets:
                for order, count in derivatives.nonfinite.items():
                    counts[order] = counts.get(order, 0) + count
            plugin.report_derivatives({o: int(c) for o, c in counts.items()})  # one sync/step
        return terms

    def total_loss(self, terms: Mapping[str, Tensor]) -> Tensor:
        return sum((self.loss_weights[name] * value for name, value in terms.items()), start=0.0)

    # --------------------------------------------------------------- training
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        optimizer = self._current_optimizer()

        def closure() -> Tensor:
            optimizer.zero_grad(set_to_none=True)
            terms = self.loss_terms()
            loss = self.total_loss(terms)
            self.manual_backward(loss)
            self.last_terms = {k: v.detach() for k, v in terms.items()}
            self.last_terms["total"] = loss.detach()
            return loss

        optimizer.step(closure=closure)
        scheduler = self.lr_schedulers()
        if scheduler is not None and self._in_first_phase():
            scheduler.step()
        self.log("train/loss", self.last_terms["total"], prog_bar=True, batch_size=1)
        for name, value in self.last_terms.items():
            if name != "total":
                self.log(f"train/loss_{name}", value, batch_size=1)
        return self.last_terms["total"]

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._maybe_resample()
        self._leave_low_precision_for_lbfgs()

    def _maybe_resample(self) -> None:
        """Fresh collocation points every `resample_every` steps (seeded by seed and step, so
        still reproducible): a fixed set of ~2000 points is ~0.04 apart, while Burgers' shock is
        ~0.003 wide; moving the points lets the residual see the shock from many sides."""
        step = self.global_step
        if not self.resample_every or step == 0 or step % self.resample_every:
            return
        if not self._in_first_phase():
            return  # L-BFGS needs one fixed objective
        self.conditions = self.problem.conditions(self.seed + 1_000_003 * step)
        self._points_key = None

    def _leave_low_precision_for_lbfgs(self) -> None:
        """Entering the L-BFGS phase: leave a low precision first (L-BFGS needs exact losses for
        its line search, and a loss scaler cannot sit inside its closure)."""
        plugin = self._precision_plugin()
        if plugin is None or plugin.spec.name in ("fp32", "fp64"):
            return
        if not isinstance(self._current_optimizer().optimizer, torch.optim.LBFGS):
            return
        target = "fp64" if plugin.spec.param_dtype == torch.float64 else "fp32"
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
        params = list(self.model.parameters())
        optimizers = [
            instantiate(self.optimizer_cfg[phase])(params)
            for phase in ("adam", "lbfgs")
            if self.optimizer_cfg.get(phase) is not None
        ]
        scheduler_cfg = self.optimizer_cfg.get("scheduler")
        if scheduler_cfg is None or self.optimizer_cfg.get("adam") is None:
            return optimizers
        return optimizers, [instantiate(scheduler_cfg)(optimizers[0])]

    def _in_first_phase(self) -> bool:
        """Adam's phase (the only phase of adam-only or lbfgs-only configs)."""
        cfg = self.optimizer_cfg
        switch = cfg.get("switch_step")
        two_phases = cfg.get("adam") is not None and cfg.get("lbfgs") is not None
        return not two_phases or switch is None or self.global_step < int(switch)

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

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict_grid(self) -> Tensor:
        """The network on the evaluation grid in the run's precision, returned as float64 CPU."""
        dtype = next(self.model.parameters()).dtype
        chunks = []
        context = (
            self.trainer.precision_plugin.forward_context()
            if self._trainer is not None
            else torch.autocast("cpu", enabled=False)
        )
        with context:
            for chunk in self.grid.points.split(self.eval_chunk):
                chunks.append(self.model(chunk.to(self.device, dtype)).double().cpu())
        return torch.cat(chunks)

    def field_errors(self, prediction: Tensor) -> dict[str, float]:
        return {
            field: relative_l2(prediction[:, i], self.grid_reference[:, i])
            for i, field in enumerate(self.problem.output_names)
        }

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        errors = self.field_errors(self.predict_grid())
        for field, error in errors.items():
            self.log(
                f"val/l2_{field}",
                error,
                prog_bar=field == self.problem.output_names[0],
                batch_size=1,
            )
        finite = [e for e in errors.values() if math.isfinite(e)]
        self.log("val/l2", sum(finite) / len(finite) if finite else math.nan, batch_size=1)

    # ---------------------------------------------------------------- helpers
    def _device_points(self) -> dict[str, Tensor]:
        """Collocation points on the model's device and dtype, cast once (again only on change)."""
        dtype = next(self.model.parameters()).dtype
        key = (self.device, dtype)
        if key != self._points_key:
            self._points = {
                name: c.points.to(self.device, dtype) for name, c in self.conditions.items()
            }
            self._points_key = key
        return self._points

    def _discover_terms(self) -> dict[str, str]:
        """Term name -> its condition, found by evaluating every residual on two points once, so
        loss weights can be checked before training starts."""
        terms: dict[str, str] = {}
        for name, condition in self.conditions.items():
            inputs = condition.points[:2].float().requires_grad_(True)
            derivatives = Derivatives(
                inputs, self.model(inputs), self.problem.input_names, self.problem.output_names
            )
            residual = condition.residual(derivatives)
            if isinstance(residual, Mapping):
                terms.update({f"{name}_{equation}": name for equation in residual})
            else:
                terms[name] = name
        return terms

    def _resolve_weights(self, weights: dict[str, float]) -> dict[str, float]:
        """A weight may name a term (`pde_continuity`) or a whole condition (`bc`)."""
        conditions = set(self.conditions)
        for key, value in weights.items():
            if key not in self.term_names and key not in conditions:
                raise ValueError(
                    f"loss_weights.{key} names no loss term; terms: {', '.join(self.term_names)}"
                )
            if not value >= 0:
                raise ValueError(f"loss_weights.{key}={value} must be >= 0")
        return {
            term: float(weights.get(term, weights.get(condition, 1.0)))
            for term, condition in self.term_conditions.items()
        }
