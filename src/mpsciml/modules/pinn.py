"""The physics-informed LightningModule: loss = weighted sum of the problem's residual terms.

The training step, optimiser phases and precision hand-offs live in `SciMLModule`; this file
says what a PINN's loss is (residuals of the problem's conditions at the collocation points of
the step's batch, from `data.points.CollocationPoints`) and how it is evaluated (the network on
the problem's grid against the reference solution). With `compile=true` the loss terms are
one `torch.compile`d function in Taylor mode (`_taylor_terms`, `modules.compiled_loss`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mpsciml.data.points import PointsBatch, draw_conditions
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.carry import (
    LAPLACIAN_MODES,
    is_laplacian,
    laplacian_streams,
    laplacians_apart,
)
from mpsciml.derivatives.engine import choose_pointwise_engine
from mpsciml.derivatives.taylor import TaylorDerivatives, probe_derivatives, supports_taylor
from mpsciml.distributed.integrity import global_means, world_size
from mpsciml.metrics import relative_l2
from mpsciml.modules.base import SciMLModule
from mpsciml.modules.compiled_loss import CompiledLoss, merged_facts
from mpsciml.modules.fused_adam_step import FusedAdamStep
from mpsciml.modules.unknowns import attach_unknowns
from mpsciml.plots import plot_fields
from mpsciml.problems.base import Problem, values_key
from mpsciml.problems.observations import first_values, is_values_key


def squared_terms(condition: str, residual: Tensor | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A condition's squared residuals by loss-term name: the condition's name for one residual,
    `<condition>_<equation>` for each equation of a mapping (Navier-Stokes' momentum and
    continuity). One naming rule for the eager, the compiled and the term-discovery paths."""
    if isinstance(residual, Mapping):
        return {f"{condition}_{equation}": value**2 for equation, value in residual.items()}
    return {condition: residual**2}


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
        compile: bool = False,
        compile_backend: str = "inductor",
        compile_mode: str | None = None,
        compile_cpp_wrapper: bool = False,
        taylor_laplacian: str = "summed",
        compile_guards: str = "lean",
    ) -> None:
        super().__init__(optimizer, max_consecutive_skips)
        self.problem = problem
        self.output_names = problem.output_names
        self.model = model
        self.eval_chunk = eval_chunk
        # coefficients the problem leaves unknown: trainable, fp32 master (`modules.unknowns`)
        self.unknowns = attach_unknowns(self, problem)
        # The residuals to evaluate, with the run's first points: the batches bring each step's
        # points; these find the loss terms and what Taylor mode carries before training.
        self.conditions = draw_conditions(problem, seed)
        self.grid = problem.evaluation_grid()
        # float64 on the CPU and deliberately not a buffer: a pure-fp16 run converts buffers.
        self.grid_reference = problem.reference(self.grid.points)
        # decided once, here: a model Taylor mode cannot run through is a logged, recorded fallback
        self.derivative_engine = choose_pointwise_engine(derivatives, model, compiled=compile)
        self.derivatives = self.derivative_engine.used
        self.term_conditions = self._discover_terms()
        # Which derivatives each condition's residual asks for, carried forward by Taylor mode;
        # a Laplacian as one summed stream unless taylor_laplacian=apart (`derivatives.carry`).
        if taylor_laplacian not in LAPLACIAN_MODES:
            raise ValueError(
                f"taylor_laplacian={taylor_laplacian!r} is unknown; allowed: "
                + ", ".join(LAPLACIAN_MODES)
            )
        self._carry = {
            name: probe_derivatives(
                partial(c.evaluate, values=first_values(c)),
                model,
                c.points,
                problem.input_names,
                problem.output_names,
            )
            for name, c in self.conditions.items()
            if self.derivatives == "taylor"
        }
        #: summary.json `derivatives.laplacian`: how the residuals' Laplacians travel (None:
        #: no residual asks for one)
        self.laplacian_streams = laplacian_streams(self._carry.values(), problem.input_names)
        if taylor_laplacian == "apart" and self.laplacian_streams is not None:
            names = problem.input_names
            self._carry = {name: laplacians_apart(k, names) for name, k in self._carry.items()}
            self.laplacian_streams = "apart"
        self.term_names = list(self.term_conditions)
        self.loss_weights = self._resolve_weights(dict(loss_weights or {}))
        self.compiled: CompiledLoss | None = None
        #: the whole Adam step as one compiled call, where a step allows it (`fused_adam_step`)
        self.fused: FusedAdamStep | None = None
        #: why the last step was not fused ("" if it was): summary.json `compile.fused_refusal`
        self.fused_refusal = ""
        #: the step's points as trained on: adaptive collocation replaces or extends the batch's
        #: drawn points (`data.adaptive_points`); None: the batch as drawn
        self.adapt_points: Callable[[PointsBatch], PointsBatch] | None = None
        if compile:
            self._check_compilable()
            how = (compile_backend, compile_mode, compile_cpp_wrapper)
            self.compiled = CompiledLoss(self._taylor_terms, *how)
            self.fused = FusedAdamStep(self, *how, guards=compile_guards)

    # ----------------------------------------------------------------- losses
    def loss_terms(self, batch: PointsBatch) -> dict[str, Tensor]:
        """Mean squared residual of every condition and equation at the batch's points, by term
        name (derivatives seeded and checked as `derivative_seeding` explains). Under DDP the
        batch holds this rank's slice of the points and each term is its part of the mean over
        all ranks' points (`integrity.global_means`)."""
        if self.adapt_points is not None:
            batch = self.adapt_points(batch)
        seed, scaled = self.derivative_seeding()
        # a step with forward hooks (the precision probe's first) goes through autograd
        taylor = self.derivatives == "taylor" and supports_taylor(self.model)
        if taylor and self.compiled is not None:
            return self._compiled_terms(batch, seed, scaled)
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
            residual = self.conditions[name].evaluate(derivatives, batch.get(values_key(name)))
            squares.update(squared_terms(name, residual))
        if scaled:
            self.report_nonfinite(derivative_sets)
        return global_means(squares)

    # --------------------------------------------------------- compiled step
    def _compiled_terms(self, batch: PointsBatch, seed: Any, scaled: bool) -> dict[str, Tensor]:
        """`loss_terms` through the compiled function. The seeds enter as one tensor, so the
        derivative scaler moving them is new data, not a recompile; under DDP the collective
        of `global_means` stays outside the graph (the compiled part returns the squares)."""
        assert self.compiled is not None
        seeds = None
        if scaled:
            seeds = torch.tensor([float(seed(1)), float(seed(2))], device=self.device)
        points = {name: batch[name] for name in self.conditions}
        points |= {key: batch[key] for key in map(values_key, self.conditions) if key in batch}
        distributed = world_size() > 1
        values, nonfinite = self.compiled(points, seeds, not distributed)
        if scaled:
            self.report_nonfinite([SimpleNamespace(nonfinite=nonfinite)])
        return global_means(values) if distributed else values

    def fused_closure(self, optimizer: torch.optim.Optimizer, batch: PointsBatch) -> Any:
        """The fused step's closure where it can run (`FusedAdamStep.refusal`: an Adam phase,
        one process, ...), on the step's points (adapted where adaptive sampling is on)."""
        if self.fused is None or self.derivatives != "taylor" or not supports_taylor(self.model):
            return None
        self.fused_refusal = self.fused.refusal(optimizer, self.trainer, self._precision_plugin())
        if self.fused_refusal:
            return None
        if self.adapt_points is not None:
            batch = self.adapt_points(batch)
        points = {name: batch[name] for name in self.conditions}
        points |= {key: batch[key] for key in map(values_key, self.conditions) if key in batch}
        return self.fused.closure(optimizer, points)

    def _taylor_terms(
        self, points: dict[str, Tensor], seeds: Tensor | None, means: bool
    ) -> tuple[dict[str, Tensor], dict[int, Tensor]]:
        """What is compiled: every condition's Taylor forward, residuals and squares (`means`:
        their means, one process), and the non-finite derivative counts by order when the
        derivatives are seeded. No autograd w.r.t. the inputs (`fallback=False`)."""
        names = (self.problem.input_names, self.problem.output_names)
        order_seed = None if seeds is None else (lambda order: seeds[order - 1])
        squares: dict[str, Tensor] = {}
        nonfinite: dict[int, Tensor] = {}
        for name, condition in self.conditions.items():
            derivatives = TaylorDerivatives(
                self.model,
                points[name],
                *names,
                seed=order_seed,
                track_nonfinite=seeds is not None,
                carry=self._carry[name],
                fallback=False,
            )
            residual = condition.evaluate(derivatives, points.get(values_key(name)))
            squares.update(squared_terms(name, residual))
            for order, count in derivatives.nonfinite.items():
                nonfinite[order] = nonfinite[order] + count if order in nonfinite else count
        if means:
            return {term: torch.mean(value) for term, value in squares.items()}, nonfinite
        return squares, nonfinite

    def _check_compilable(self) -> None:
        """Every derivative a residual asks for must come from the Taylor streams (first and
        unmixed second derivatives): the autograd fallback for the rest cannot be compiled."""
        for name, wanted in self._carry.items():
            for wrt in sorted(wanted):
                if is_laplacian(wrt):  # a sum of unmixed second derivatives: streamed
                    continue
                if len(wrt) > 2 or (len(wrt) == 2 and wrt[0] != wrt[1]):
                    raise ValueError(
                        f"compile=true: condition {name} asks for d/d{'d'.join(wrt)}, which "
                        "Taylor mode takes by autograd (only first and unmixed second "
                        "derivatives are streamed); use compile=false"
                    )

    def compile_facts(self) -> dict[str, Any]:
        """summary.json `compile`: {enabled, backend, mode, compile_seconds, graph_breaks,
        recompiles, compile_steps}; {enabled: False} for an eager run."""
        if self.compiled is None:
            return {"enabled": False}
        facts = self.compiled.facts()
        if self.fused is not None:
            facts = merged_facts(facts, self.fused.compiled.facts())
            facts["fused_steps"] = self.fused.steps
            facts["fused_refusal"] = self.fused_refusal or None
        return facts

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        if self.compiled is not None:
            self.compiled.begin_step(self.global_step)
        if self.fused is not None:
            self.fused.compiled.begin_step(self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.compiled is not None:
            self.compiled.end_step()
        if self.fused is not None:
            self.fused.compiled.end_step()
        super().on_train_batch_end(outputs, batch, batch_idx)

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
        """Relative L2 per field over the grid points in the domain (all, for a box)."""
        inside = slice(None) if self.grid.mask is None else self.grid.mask
        prediction, reference = prediction[inside], self.grid_reference[inside]
        return {
            field: relative_l2(prediction[:, i], reference[:, i])
            for i, field in enumerate(self.problem.output_names)
        }

    def predict_evaluation(self) -> Tensor:
        return self.problem.fix_gauge(self.predict_grid(), self.grid, self.grid_reference)

    def batch_in_input_dtype(self, batch: PointsBatch) -> PointsBatch:
        """Points in the input dtype; observed values in the assembly dtype (fp32, fp64 for
        fp64), where the residual compares them, so a pure fp16/bf16 run does not round data."""
        dtype = self.input_dtype()
        data = torch.float64 if dtype == torch.float64 else torch.float32

        def cast(points: PointsBatch) -> PointsBatch:
            return {k: v.to(data if is_values_key(k) else dtype) for k, v in points.items()}

        return self._cast(batch, dtype, cast)

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
            residual = condition.evaluate(derivatives, first_values(condition))
            terms.update(dict.fromkeys(squared_terms(name, residual), name))
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
