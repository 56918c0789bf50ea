"""The physics-informed LightningModule: loss = weighted sum of the problem's residual terms.

The training step, optimiser phases and precision hand-offs live in `SciMLModule`; this file
says what a PINN's loss is (residuals of the problem's conditions at the collocation points of
the step's batch, from `data.points.CollocationPoints`) and how it is evaluated (the network on
the problem's grid against the reference solution).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mpsciml.data.points import PointsBatch, draw_conditions
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.engine import choose_pointwise_engine
from mpsciml.derivatives.taylor import TaylorDerivatives, probe_derivatives, supports_taylor
from mpsciml.distributed.integrity import global_means
from mpsciml.metrics import relative_l2
from mpsciml.modules.base import SciMLModule
from mpsciml.plots import plot_fields
from mpsciml.problems.base import Problem


class PINNModule(SciMLModule):
    def __init__(
        self,
        problem: Problem,
        model: nn.Module,
        optimizer: DictConfig,
        loss_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        eval_chunk: int = 32768,
        max_consecutive_skips: int = 100,
        derivatives: str = "autograd",
    ) -> None:
        super().__init__(optimizer, max_consecutive_skips)
        self.problem = problem
        self.output_names = problem.output_names
        self.model = model
        self.eval_chunk = eval_chunk
        # The residuals to evaluate, with the run's first points: the batches bring each step's
        # points; these find the loss terms and what Taylor mode carries before training.
        self.conditions = draw_conditions(problem, seed)
        self.grid = problem.evaluation_grid()
        # float64 on the CPU and deliberately not a buffer: a pure-fp16 run converts buffers.
        self.grid_reference = problem.reference(self.grid.points)
        # decided once, here: a model Taylor mode cannot run through is a logged, recorded fallback
        self.derivative_engine = choose_pointwise_engine(derivatives, model)
        self.derivatives = self.derivative_engine.used
        self.term_conditions = self._discover_terms()
        # Which derivatives each condition's residual asks for, carried forward by Taylor mode.
        self._carry = {
            name: probe_derivatives(
                c.residual, model, c.points, problem.input_names, problem.output_names
            )
            for name, c in self.conditions.items()
            if self.derivatives == "taylor"
        }
        self.term_names = list(self.term_conditions)
        self.loss_weights = self._resolve_weights(dict(loss_weights or {}))

    # ----------------------------------------------------------------- losses
    def loss_terms(self, batch: PointsBatch) -> dict[str, Tensor]:
        """Mean squared residual of every condition and equation at the batch's points, by term
        name (derivatives seeded and checked as `derivative_seeding` explains). Under DDP the
        batch holds this rank's slice of the points and each term is its part of the mean over
        all ranks' points (`integrity.global_means`)."""
        seed, scaled = self.derivative_seeding()
        # a step with forward hooks (the precision probe's first) goes through autograd
        taylor = self.derivatives == "taylor" and supports_taylor(self.model)
        names = (self.problem.input_names, self.problem.output_names)
        squares: dict[str, Tensor] = {}
        derivative_sets = []
        for name in self.conditions:
            inputs = batch[name].detach().requires_grad_(True)
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
                    squares[f"{name}_{equation}"] = value**2
            else:
                squares[name] = residual**2
        if scaled:
            self.report_nonfinite(derivative_sets)
        return global_means(squares)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict_grid(self) -> Tensor:
        """The network on the evaluation grid in the run's precision, returned as float64 CPU."""
        dtype = next(self.model.parameters()).dtype
        chunks = []
        with self.forward_context():
            for chunk in self.grid.points.split(self.eval_chunk):
                chunks.append(self.model(chunk.to(self.device, dtype)).double().cpu())
        return torch.cat(chunks)

    def field_errors(self, prediction: Tensor) -> dict[str, float]:
        return {
            field: relative_l2(prediction[:, i], self.grid_reference[:, i])
            for i, field in enumerate(self.problem.output_names)
        }

    def predict_evaluation(self) -> Tensor:
        return self.predict_grid()

    def evaluation_errors(self, prediction: Tensor) -> dict[str, float]:
        return self.field_errors(prediction)

    def evaluation_plots(self, prediction: Tensor, out_dir: Path, title: str) -> list[Path]:
        names = (self.problem.input_names, self.problem.output_names)
        return plot_fields(self.grid, prediction, self.grid_reference, *names, out_dir, title)

    # ---------------------------------------------------------------- helpers
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
