"""Operator learning on grids (the FNO): a relative L2 or H1 loss on mini-batches of fields.

Normalisation (as neuraloperator's UnitGaussianNormalizer): inputs and outputs are shifted and
scaled per channel by the mean and standard deviation of the training set
(`problem.normalisation()`: over samples and grid points, per channel, not per point, so they
apply at any resolution, which zero-shot evaluation needs). The model maps normalised inputs to
normalised outputs; the loss and every error are taken in physical units, after decoding. The
statistics are buffers, so a checkpoint carries them and a resumed or reloaded model decodes as
it was trained.

Precision: the batch arrives float64 and is normalised in >= fp32, then cast to the model's
input dtype; the network's output is decoded and the loss assembled in >= fp32 (fp64 in an fp64
run), whatever the compute precision, as the PINN residuals are. Targets are never rounded to
fp16 (Darcy's u ~ 1e-2 would lose three digits).

Errors (`evaluation_errors`): for each output field f, the mean over test samples of the relative
L2 error (`f`) and H1 error (`h1_f`) at the training resolution, and the same on the zero-shot
set at the finer grid (`zero_shot_f`, `zero_shot_h1_f`) when the problem has one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mpsciml.data.grid_batches import GridBatch
from mpsciml.derivatives.autograd import assembly_dtype
from mpsciml.distributed.integrity import global_means
from mpsciml.grid_metrics import field_errors, squared_norms
from mpsciml.grid_plots import plot_grid_sample
from mpsciml.modules.base import SciMLModule
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem


class GridOperatorModule(SciMLModule):
    """Trains `model` (N, C_in, *grid) -> (N, C_out, *grid) on the problem's training fields."""

    def __init__(
        self,
        problem: GridOperatorProblem,
        model: nn.Module,
        optimizer: DictConfig,
        loss_weights: Mapping[str, float] | None = None,
        max_consecutive_skips: int = 100,
        eval_batch_size: int = 20,
    ) -> None:
        super().__init__(optimizer, max_consecutive_skips)
        self.problem = problem
        self.model = model
        self.output_names = problem.output_names
        self.eval_batch_size = eval_batch_size
        self.test_set: GridData = problem.test_data()
        self.zero_shot_set: GridData | None = problem.zero_shot_data()
        for name, (mean, std) in problem.normalisation().items():
            self.register_buffer(f"{name}_mean", mean.float())
            self.register_buffer(f"{name}_std", std.float())
        self.term_names = [problem.loss]
        self.loss_weights = self._resolve_weights(dict(loss_weights or {}))

    # ---------------------------------------------------------- normalisation
    def encode(self, inputs: Tensor) -> Tensor:
        """Physical inputs (N, C_in, *grid) -> the model's normalised inputs, in >= fp32."""
        dtype = assembly_dtype(inputs)
        return (inputs.to(dtype) - _channels(self.input_mean, inputs, dtype)) / _channels(
            self.input_std, inputs, dtype
        )

    def decode(self, outputs: Tensor) -> Tensor:
        """The model's normalised outputs (N, C_out, *grid) -> physical units, in >= fp32."""
        dtype = assembly_dtype(outputs)
        outputs = outputs.to(dtype)
        return outputs * _channels(self.output_std, outputs, dtype) + _channels(
            self.output_mean, outputs, dtype
        )

    def forward(self, inputs: Tensor) -> Tensor:
        """Physical inputs -> physical predictions, (N, C_out, *grid) in >= fp32."""
        return self.decode(self.model(self.encode(inputs).to(self.input_dtype())))

    # ----------------------------------------------------------------- losses
    def batch_in_input_dtype(self, batch: Any) -> Any:
        """Inputs and targets in >= fp32 (fp64 in an fp64 run), never rounded to fp16: the
        inputs go to the model's dtype only after normalisation (`forward`)."""
        dtype = assembly_dtype(torch.empty((), dtype=self.input_dtype()))
        return self._cast(batch, dtype, lambda b: {k: v.to(dtype) for k, v in b.items()})

    def loss_terms(self, batch: GridBatch) -> dict[str, Tensor]:
        """The mean over samples of the relative error (`grid_metrics.relative_loss`, per
        sample here): under DDP this rank's part of the mean over the whole step's samples."""
        prediction, target = self(batch["inputs"]), batch["outputs"]
        kind, layout = self.problem.loss, self.problem.grid_layout
        error = squared_norms(prediction - target, kind, layout).sum(1)
        norm = squared_norms(target, kind, layout).sum(1)
        return global_means({kind: torch.sqrt(error / norm)})

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """The model on physical inputs (N, C_in, *grid) of any grid, in the run's precision,
        in chunks of `eval_batch_size`: (N, C_out, *grid) float64 on the CPU."""
        chunks = []
        with self.forward_context():
            for chunk in inputs.split(self.eval_batch_size):
                chunks.append(self(chunk.to(self.device)).double().cpu())
        return torch.cat(chunks)

    def predict_evaluation(self) -> Tensor:
        """The test set's predictions at the training resolution, (N_test, C_out, *grid)."""
        return self.predict(self.test_set.inputs)

    def evaluation_errors(self, prediction: Tensor) -> dict[str, float]:
        """{f, h1_f} on the test set, and {zero_shot_f, zero_shot_h1_f} on the finer grid."""
        errors = self._errors(prediction, self.test_set, "")
        if self.zero_shot_set is not None:
            zero_shot = self.predict(self.zero_shot_set.inputs)
            errors.update(self._errors(zero_shot, self.zero_shot_set, "zero_shot_"))
        return errors

    def _errors(self, prediction: Tensor, data: GridData, prefix: str) -> dict[str, float]:
        layout = self.problem.grid_layout
        return field_errors(prediction, data.outputs, self.output_names, layout, prefix=prefix)

    def evaluation_plots(self, prediction: Tensor, out_dir: Path, title: str) -> list[Path]:
        """Input, prediction, reference and error of test sample 0 (and of zero-shot sample 0)."""
        problem = self.problem
        names = (problem.input_names, self.output_names, problem.coordinate_names)
        test = self.test_set
        axes = problem.coordinates(test.grid)
        paths = plot_grid_sample(
            test.inputs[0], prediction[0], test.outputs[0], axes, *names, out_dir,
            f"{title} | test sample 0",
        )  # fmt: skip
        if self.zero_shot_set is not None:
            zero_shot = self.zero_shot_set
            fine = self.predict(zero_shot.inputs[:1])
            paths += plot_grid_sample(
                zero_shot.inputs[0], fine[0], zero_shot.outputs[0],
                problem.coordinates(zero_shot.grid), *names, out_dir,
                f"{title} | zero-shot {'x'.join(map(str, zero_shot.grid))} sample 0",
                suffix="_zero_shot",
            )  # fmt: skip
        return paths

    # ---------------------------------------------------------------- helpers


def _channels(statistic: Tensor, like: Tensor, dtype: torch.dtype) -> Tensor:
    """A per-channel statistic (C,) shaped to broadcast against (N, C, *grid)."""
    return statistic.to(like.device, dtype).reshape(1, -1, *([1] * (like.dim() - 2)))
