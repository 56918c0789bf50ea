"""Operator learning (DeepONet, any `contract.SensorOperator`): a data loss on function pairs
and/or a physics loss.

Terms: `data` (MSE, or the mean relative L2 error over functions) on the problem's training
pairs, and one term per physics condition (`pde`, `ic`, `bc`, ...) for a physics-informed
DeepONet: the residual at each training function's collocation points, with the derivatives
taken through the trunk input (the query coordinates) by the same `Derivatives` the PINNs use,
so derivative seeding and fp32 residual assembly under fp16 carry over unchanged.

Each step's batch (from `data.functions.FunctionBatches`) holds `problem.functions_per_step`
training functions with their data pairs and collocation points; the module owns only the
residuals, the model and the test set. The reported error is the mean over held-out test
functions of the relative L2 error per output field, the usual DeepONet metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from mpsciml.contract import SensorOperator
from mpsciml.data.functions import FunctionBatch
from mpsciml.derivatives.autograd import Derivatives, assembly_dtype
from mpsciml.derivatives.engine import choose_operator_engine
from mpsciml.distributed.integrity import global_means
from mpsciml.modules.base import SciMLModule
from mpsciml.plots import plot_fields
from mpsciml.problems.base import EvaluationGrid
from mpsciml.problems.operator import OperatorProblem


class OperatorModule(SciMLModule):
    def __init__(
        self,
        problem: OperatorProblem,
        model: SensorOperator,
        optimizer: DictConfig,
        loss_weights: Mapping[str, float] | None = None,
        max_consecutive_skips: int = 100,
        eval_functions: int = 64,
        derivatives: str = "autograd",
    ) -> None:
        super().__init__(optimizer, max_consecutive_skips)
        self.problem = problem
        self.model = model
        self.derivative_engine = choose_operator_engine(derivatives)
        self.output_names = problem.output_names
        self.eval_functions = eval_functions
        self.has_data = problem.train_data() is not None
        self.residuals = {n: c.residual for n, c in problem.physics_conditions().items()}
        if not self.has_data and not self.residuals:
            raise ValueError(f"problem {problem.name} gives neither training data nor physics")
        self.test_set = problem.test_data()
        self.term_names = (["data"] if self.has_data else []) + list(self.residuals)
        self.loss_weights = self._resolve_weights(dict(loss_weights or {}))

    # ----------------------------------------------------------------- losses
    def loss_terms(self, batch: FunctionBatch) -> dict[str, Tensor]:
        """Each term is the mean of a quantity over the step's functions (or their points);
        under DDP this rank's part of it (`integrity.global_means`: the ranks' values together
        are the whole step's, counted in one all-reduce)."""
        values: dict[str, Tensor] = {}
        if self.has_data:
            values["data"] = self._data_term(batch["data"])
        if self.residuals:
            values.update(self._physics_terms(batch["physics"]))
        return global_means(values)

    def _data_term(self, data: dict[str, Tensor]) -> Tensor:
        """What the data term is the mean of: every function of the batch on the shared grid
        (`trunk`), or (function, point) rows."""
        branch, target = data["branch"], data["outputs"]
        if "trunk" in data:
            return self._data_loss(self._predict_aligned(branch, data["trunk"]), target)
        index = data["index"]
        prediction = self._predict_indexed(branch, data["points"], index)
        return self._data_loss(prediction, target, index, n_functions=branch.shape[0])

    def _data_loss(
        self,
        prediction: Tensor,
        target: Tensor,
        index: Tensor | None = None,
        n_functions: int | None = None,
    ) -> Tensor:
        """The values whose mean is the data loss: squared errors (MSE), or ||error|| /
        ||target|| per function (assembled in >= fp32); rows (`index` given) belong to
        `n_functions` functions."""
        dtype = assembly_dtype(prediction)
        error = prediction.to(dtype) - target.to(dtype)
        if self.problem.data_loss == "mse":
            return error**2
        if index is None:  # aligned: (N, P, out) -> one ratio per function
            squared_error = error.pow(2).sum(dim=(1, 2))
            squared_norm = target.to(dtype).pow(2).sum(dim=(1, 2))
        else:  # rows: accumulate per function
            if n_functions is None:
                raise ValueError("rows of function pairs need n_functions")
            zeros = error.new_zeros(n_functions)
            squared_error = zeros.index_add(0, index, error.pow(2).sum(-1))
            squared_norm = zeros.index_add(0, index, target.to(dtype).pow(2).sum(-1))
            present = squared_norm > 0
            squared_error, squared_norm = squared_error[present], squared_norm[present]
        return torch.sqrt(squared_error / squared_norm)

    def _physics_terms(self, physics: dict[str, Any]) -> dict[str, Tensor]:
        """The squared residual of every condition at each batch function's points."""
        seed, scaled = self.derivative_seeding()
        names = (self.problem.input_names, self.problem.output_names)
        branch = physics["branch"]
        terms: dict[str, Tensor] = {}
        derivative_sets = []
        for name, residual in self.residuals.items():
            points, known = physics["points"][name], physics["known"][name]
            n_functions, per_function = points.shape[:2]
            index = torch.arange(n_functions, device=points.device)
            index = index.repeat_interleave(per_function)
            inputs = points.reshape(-1, points.shape[-1]).detach().requires_grad_(True)
            outputs = self._predict_indexed(branch, inputs, index)
            derivatives = Derivatives(inputs, outputs, *names, seed=seed, track_nonfinite=scaled)
            derivative_sets.append(derivatives)
            value = residual(derivatives, known.reshape(inputs.shape[0], -1))
            terms[name] = value**2
        if scaled:
            self.report_nonfinite(derivative_sets)
        return terms

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict_test(self) -> Tensor:
        """The network on every test function and point, (N, P, out), float64 on the CPU."""
        dtype = next(self.model.parameters()).dtype
        trunk = self.test_set.trunk.to(self.device, dtype)
        chunks = []
        with self.forward_context():
            for branch in self.test_set.branch.split(self.eval_functions):
                prediction = self._predict_aligned(branch.to(self.device, dtype), trunk)
                chunks.append(prediction.double().cpu())
        return torch.cat(chunks)

    def predict_evaluation(self) -> Tensor:
        return self.predict_test()

    def evaluation_errors(self, prediction: Tensor) -> dict[str, float]:
        return function_errors(prediction, self.test_set.outputs, self.output_names)

    def evaluation_plots(self, prediction: Tensor, out_dir: Path, title: str) -> list[Path]:
        """Prediction, reference and error of the first test function."""
        grid = self.problem.test_grid() or EvaluationGrid(
            self.test_set.trunk, (self.test_set.trunk.shape[0],), [self.test_set.trunk[:, 0]]
        )
        names = (self.problem.input_names, self.output_names)
        title = f"{title} | test function 0"
        return plot_fields(grid, prediction[0], self.test_set.outputs[0], *names, out_dir, title)

    # ---------------------------------------------------------------- helpers
    def _predict_aligned(self, branch: Tensor, trunk: Tensor) -> Tensor:
        """(N, P, out) predictions, with the problem's hard constraints applied."""
        return self.problem.constrain_output(trunk, self.model.forward_aligned(branch, trunk))

    def _predict_indexed(self, branch: Tensor, points: Tensor, index: Tensor) -> Tensor:
        """(B, out) predictions at points of the functions `index`, constraints applied."""
        outputs = self.model.forward_indexed(branch, points, index)
        return self.problem.constrain_output(points, outputs)


def function_errors(
    prediction: Tensor, reference: Tensor, output_names: tuple[str, ...]
) -> dict[str, float]:
    """Mean over functions of the relative L2 error of each output field, (N, P, out) inputs."""
    error = (prediction.double() - reference.double()).pow(2).sum(dim=1)
    norm = reference.double().pow(2).sum(dim=1)
    per_function = torch.sqrt(error / norm)  # (N, out)
    return {name: float(per_function[:, i].mean()) for i, name in enumerate(output_names)}
