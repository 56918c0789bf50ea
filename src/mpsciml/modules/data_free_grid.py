"""Data-free training on grids (DiffNet, Botelho et al. 2020): the loss is the PDE's discretised
residual on the network's output, and no solution is ever shown to the network.

One step, for the parameter fields of the step (`data.parameter_batches`; a rank's share):

    outputs = problem.impose(inputs, model(problem.network_inputs(inputs)))
    terms   = {name: per_sample.sum() / problem.batch_size  for problem.residual_terms(...)}

Each term is this rank's part of the global batch mean (the loss-integrity contract of
`modules.base`): the parts of all ranks add up to the full-batch term, whatever the split, so
the loss does not depend on the number of processes. The weights are the problem's defaults
(`default_loss_weights`, e.g. 64 on Burgers' boundary and initial terms) overridden by
`loss_weights`, checked against `problem.term_names`.

Precision: the fields arrive float64 and are kept in >= fp32 (fp64 in an fp64 run); only what
the network sees (`network_inputs`, e.g. log nu) is cast to its input dtype. The raw output is
cast back up to >= fp32 before `impose` and the residual (assembled by the problem in >= fp32:
stencil second derivatives in fp16/bf16 are useless at 64x64), whatever the compute precision.
The training step, the optimiser phases (Adam -> L-BFGS) and the precision hand-offs are
`SciMLModule`'s.

Evaluation: held-out parameter fields with OUR solver's solutions (`problem.test_data()`); the
model runs in eval mode (BatchNorm on its running statistics, which a prediction must not
update) and the errors are the relative L2 and H1 of each output field (`grid_metrics`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from mpsciml.data.parameter_batches import ParameterBatch
from mpsciml.derivatives.autograd import assembly_dtype
from mpsciml.grid_metrics import field_errors
from mpsciml.grid_plots import plot_grid_sample
from mpsciml.modules.base import SciMLModule
from mpsciml.problems.grid_operator import GridData


class DataFreeGridModule(SciMLModule):
    """Trains `model` (N, C_in, *grid) -> (N, C_out, *grid) on a data-free problem's residual."""

    def __init__(
        self,
        problem: Any,
        model: nn.Module,
        optimizer: DictConfig,
        loss_weights: Mapping[str, float] | None = None,
        max_consecutive_skips: int = 100,
        eval_batch_size: int = 16,
    ) -> None:
        super().__init__(optimizer, max_consecutive_skips)
        self.problem = problem
        self.model = model
        self.output_names = tuple(problem.output_names)
        self.eval_batch_size = eval_batch_size
        self.term_names = list(problem.term_names)
        weights = {**problem.default_loss_weights, **dict(loss_weights or {})}
        self.loss_weights = self._resolve_weights(weights)
        self.test_set: GridData = problem.test_data()

    # ----------------------------------------------------------------- model
    def forward(self, inputs: Tensor) -> Tensor:
        """Parameter fields (N, C_in, *grid) -> imposed outputs (N, C_out, *grid) in >= fp32."""
        seen = self.problem.network_inputs(inputs).to(self.input_dtype())
        raw = self.model(seen)
        return self.problem.impose(inputs, raw.to(assembly_dtype(raw)))

    def batch_in_input_dtype(self, batch: Any) -> Any:
        """The fields in >= fp32 (fp64 in an fp64 run), never rounded to fp16: the residual needs
        them as they are, and only `network_inputs` goes to the network's dtype (`forward`)."""
        dtype = assembly_dtype(torch.empty((), dtype=self.input_dtype()))
        return self._cast(batch, dtype, lambda b: {k: v.to(dtype) for k, v in b.items()})

    # ----------------------------------------------------------------- losses
    def loss_terms(self, batch: ParameterBatch) -> dict[str, Tensor]:
        inputs = batch["inputs"]
        per_sample = self.problem.residual_terms(inputs, self(inputs))
        if set(per_sample) != set(self.term_names):
            raise RuntimeError(
                f"{type(self.problem).__name__}.residual_terms gave {sorted(per_sample)}, "
                f"not its term_names {sorted(self.term_names)}"
            )
        global_count = self.problem.batch_size  # this rank's part of the global mean
        return {name: per_sample[name].sum() / global_count for name in self.term_names}

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def predict(self, inputs: Tensor) -> Tensor:
        """The model on parameter fields (N, C_in, *grid), in eval mode and the run's precision,
        in chunks of `eval_batch_size`: (N, C_out, *grid) float64 on the CPU."""
        dtype = assembly_dtype(torch.empty((), dtype=self.input_dtype()))
        chunks = []
        with _eval_mode(self.model), self.forward_context():
            for chunk in inputs.split(self.eval_batch_size):
                chunks.append(self(chunk.to(self.device, dtype)).double().cpu())
        return torch.cat(chunks)

    def predict_evaluation(self) -> Tensor:
        """The held-out fields' predictions, (N_test, C_out, *grid)."""
        return self.predict(self.test_set.inputs)

    def evaluation_errors(self, prediction: Tensor) -> dict[str, float]:
        """{f: relative L2, h1_f: relative H1} of each output field against our solver."""
        reference = self.test_set.outputs
        return field_errors(prediction, reference, self.output_names, self.problem.grid_layout)

    def evaluation_plots(self, prediction: Tensor, out_dir: Path, title: str) -> list[Path]:
        """Parameter field, prediction, reference and error of held-out sample 0."""
        problem, test = self.problem, self.test_set
        return plot_grid_sample(
            test.inputs[0], prediction[0], test.outputs[0], problem.coordinates(test.grid),
            problem.input_names, self.output_names, problem.coordinate_names, out_dir,
            f"{title} | held-out sample 0",
        )  # fmt: skip


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (BatchNorm on running statistics, left untouched), then back."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
