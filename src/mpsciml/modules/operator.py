"""Operator learning (DeepONet): a data loss on function pairs and/or a physics loss.

Terms: `data` (MSE, or the mean relative L2 error over functions) on the problem's training
pairs, and one term per physics condition (`pde`, `ic`, `bc`, ...) for a physics-informed
DeepONet: the residual at each training function's collocation points, with the derivatives
taken through the trunk input (the query coordinates) by the same `Derivatives` the PINNs use,
so derivative seeding and fp32 residual assembly under fp16 carry over unchanged.

Each step draws `problem.functions_per_step` training functions (seeded by the run seed and the
step, so runs are reproducible); the data and points are moved to the device and dtype once.
The reported error is the mean over held-out test functions of the relative L2 error per
output field, the usual DeepONet metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives, assembly_dtype
from mpsciml.models.deeponet import DeepONet
from mpsciml.modules.base import SciMLModule
from mpsciml.plots import plot_fields
from mpsciml.problems.base import EvaluationGrid
from mpsciml.problems.operator import OperatorData, OperatorProblem


class OperatorModule(SciMLModule):
    def __init__(
        self,
        problem: OperatorProblem,
        model: DeepONet,
        optimizer: DictConfig,
        loss_weights: Mapping[str, float] | None = None,
        seed: int = 0,
        max_consecutive_skips: int = 100,
        eval_functions: int = 64,
    ) -> None:
        super().__init__(optimizer, max_consecutive_skips)
        self.problem = problem
        self.model = model
        self.output_names = problem.output_names
        self.seed = seed
        self.eval_functions = eval_functions
        self.train_set = problem.train_data()
        self.test_set = problem.test_data()
        self.conditions = dict(problem.physics_conditions())
        self.physics_branch = problem.physics_branch() if self.conditions else None
        if self.train_set is None and not self.conditions:
            raise ValueError(f"problem {problem.name} gives neither training data nor physics")
        self.term_names = (["data"] if self.train_set is not None else []) + list(self.conditions)
        self.loss_weights = self._resolve_weights(dict(loss_weights or {}))
        self._on_device: dict[str, Tensor] = {}
        self._device_key: tuple[torch.device, torch.dtype] | None = None

    @property
    def n_train_functions(self) -> int:
        if self.train_set is not None:
            return self.train_set.n_functions
        assert self.physics_branch is not None
        return self.physics_branch.shape[0]

    # ----------------------------------------------------------------- losses
    def loss_terms(self) -> dict[str, Tensor]:
        data = self._device_data()
        batch = self._function_batch()
        terms: dict[str, Tensor] = {}
        if self.train_set is not None:
            terms["data"] = self._data_term(data, batch)
        if self.conditions:
            terms.update(self._physics_terms(data, batch))
        return terms

    def _function_batch(self) -> Tensor | None:
        """Indices of this step's training functions (None: all of them)."""
        k, n = self.problem.functions_per_step, self.n_train_functions
        if k is None or k >= n:
            return None
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.global_step)
        return torch.randperm(n, generator=generator)[:k].to(self.device)

    def _data_term(self, data: dict[str, Tensor], batch: Tensor | None) -> Tensor:
        branch, trunk, target = data["branch"], data["trunk"], data["outputs"]
        if self.train_set is not None and self.train_set.aligned:
            if batch is not None:
                branch, target = branch[batch], target[batch]
            if self.problem.data_points_per_function is not None:
                return self._sampled_data_term(branch, trunk, target)
            prediction = self._predict_aligned(branch, trunk)
            return self._data_loss(prediction, target, None)
        index = data["index"]
        if batch is not None:
            rows = torch.isin(index, batch)
            trunk, target, index = trunk[rows], target[rows], index[rows]
        prediction = self._predict_indexed(branch, trunk, index)
        return self._data_loss(prediction, target, index)

    def _sampled_data_term(self, branch: Tensor, trunk: Tensor, target: Tensor) -> Tensor:
        """The data term on a random subset of each function's grid points (seeded by step)."""
        n_functions, n_points = target.shape[:2]
        per_function = min(self.problem.data_points_per_function or n_points, n_points)
        generator = torch.Generator().manual_seed(self.seed * 1_000_033 + self.global_step)
        columns = torch.randint(0, n_points, (n_functions, per_function), generator=generator)
        columns = columns.to(target.device)
        rows = torch.arange(n_functions, device=target.device).repeat_interleave(per_function)
        points = trunk[columns.flatten()]
        prediction = self._predict_indexed(branch, points, rows)
        return self._data_loss(prediction, target[rows, columns.flatten()], rows)

    def _data_loss(self, prediction: Tensor, target: Tensor, index: Tensor | None) -> Tensor:
        """MSE, or the mean over functions of ||error|| / ||target|| (assembled in >= fp32)."""
        dtype = assembly_dtype(prediction)
        error = prediction.to(dtype) - target.to(dtype)
        if self.problem.data_loss == "mse":
            return torch.mean(error**2)
        if index is None:  # aligned: (N, P, out) -> one ratio per function
            squared_error = error.pow(2).sum(dim=(1, 2))
            squared_norm = target.to(dtype).pow(2).sum(dim=(1, 2))
        else:  # unaligned rows: accumulate per function
            n = self.n_train_functions
            squared_error = error.new_zeros(n).index_add_(0, index, error.pow(2).sum(-1))
            squared_norm = error.new_zeros(n).index_add_(0, index, target.to(dtype).pow(2).sum(-1))
            present = squared_norm > 0
            squared_error, squared_norm = squared_error[present], squared_norm[present]
        return torch.mean(torch.sqrt(squared_error / squared_norm))

    def _physics_terms(self, data: dict[str, Tensor], batch: Tensor | None) -> dict[str, Tensor]:
        seed, scaled = self.derivative_seeding()
        names = (self.problem.input_names, self.problem.output_names)
        branch = data["physics_branch"]
        if batch is not None:
            branch = branch[batch]
        terms: dict[str, Tensor] = {}
        derivative_sets = []
        for name, condition in self.conditions.items():
            points, known = data[f"{name}/points"], data[f"{name}/known"]
            if batch is not None:
                points, known = points[batch], known[batch]
            points, known = self._sampled_physics_points(name, points, known)
            n_functions, per_function = points.shape[:2]
            index = torch.arange(n_functions, device=points.device)
            index = index.repeat_interleave(per_function)
            inputs = points.reshape(-1, points.shape[-1]).detach().requires_grad_(True)
            outputs = self._predict_indexed(branch, inputs, index)
            derivatives = Derivatives(inputs, outputs, *names, seed=seed, track_nonfinite=scaled)
            derivative_sets.append(derivatives)
            residual = condition.residual(derivatives, known.reshape(inputs.shape[0], -1))
            terms[name] = torch.mean(residual**2)
        if scaled:
            self.report_nonfinite(derivative_sets)
        return terms

    def _sampled_physics_points(
        self, name: str, points: Tensor, known: Tensor
    ) -> tuple[Tensor, Tensor]:
        """`physics_points_per_function` of each function's points (seeded by step and term)."""
        n_functions, pool = points.shape[:2]
        per_step = self.problem.physics_points_per_function
        if per_step is None or per_step >= pool:
            return points, known
        term_offset = list(self.conditions).index(name)
        generator = torch.Generator().manual_seed(
            self.seed * 1_000_037 + self.global_step * 17 + term_offset
        )
        columns = torch.rand(n_functions, pool, generator=generator).argsort(dim=1)[:, :per_step]
        columns = columns.to(points.device)
        pick = columns.unsqueeze(-1)
        return (
            torch.gather(points, 1, pick.expand(-1, -1, points.shape[-1])),
            torch.gather(known, 1, pick.expand(-1, -1, known.shape[-1])),
        )

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

    def _device_data(self) -> dict[str, Tensor]:
        """Training data and collocation points on the model's device and dtype, cast once."""
        dtype = next(self.model.parameters()).dtype
        key = (self.device, dtype)
        if key == self._device_key:
            return self._on_device
        host: dict[str, Tensor] = {}
        if self.train_set is not None:
            host |= _data_tensors(self.train_set)
        if self.physics_branch is not None:
            host["physics_branch"] = self.physics_branch
        for name, condition in self.conditions.items():
            host[f"{name}/points"], host[f"{name}/known"] = condition.points, condition.known
        self._on_device = {
            k: v.to(self.device) if k == "index" else v.to(self.device, dtype)
            for k, v in host.items()
        }
        self._device_key = key
        return self._on_device

    def _resolve_weights(self, weights: dict[str, float]) -> dict[str, float]:
        for key, value in weights.items():
            if key not in self.term_names:
                raise ValueError(
                    f"loss_weights.{key} names no loss term; terms: {', '.join(self.term_names)}"
                )
            if not value >= 0:
                raise ValueError(f"loss_weights.{key}={value} must be >= 0")
        return {term: float(weights.get(term, 1.0)) for term in self.term_names}


def _data_tensors(data: OperatorData) -> dict[str, Tensor]:
    tensors = {"branch": data.branch, "trunk": data.trunk, "outputs": data.outputs}
    if data.index is not None:
        tensors["index"] = data.index
    return tensors


def function_errors(
    prediction: Tensor, reference: Tensor, output_names: tuple[str, ...]
) -> dict[str, float]:
    """Mean over functions of the relative L2 error of each output field, (N, P, out) inputs."""
    error = (prediction.double() - reference.double()).pow(2).sum(dim=1)
    norm = reference.double().pow(2).sum(dim=1)
    per_function = torch.sqrt(error / norm)  # (N, out)
    return {name: float(per_function[:, i].mean()) for i, name in enumerate(output_names)}
