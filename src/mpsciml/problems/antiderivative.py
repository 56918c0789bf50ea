"""Antiderivative operator: u(x) = integral_0^x v(s) ds on [0, 1], v from a GRF (l = 0.2).

The first DeepONet benchmark (Lu et al. 2021; DeepXDE's antiderivative examples): m = 100
sensors, 1000 training and 1000 test functions, outputs on 100 points. The data are exact
antiderivatives of the sensor interpolant (`data.antiderivative`), so the only error is the
network's. Training data come in either layout; the test set is always aligned.
"""

from __future__ import annotations

import numpy as np
import torch

from mpsciml.data.antiderivative import cached_antiderivative_data
from mpsciml.problems.base import EvaluationGrid, require_counts
from mpsciml.problems.operator import OperatorData, OperatorProblem, as_tensor, dataset_seed

LAYOUTS = ("aligned", "unaligned")


class Antiderivative(OperatorProblem):
    input_names = ("x",)
    output_names = ("u",)

    def __init__(
        self,
        n_train: int = 1000,
        n_test: int = 1000,
        n_points: int = 100,
        m: int = 100,
        length_scale: float = 0.2,
        layout: str = "aligned",
        functions_per_step: int | None = None,
        data_loss: str = "mse",
        data_seed: int = 0,
    ) -> None:
        super().__init__(functions_per_step, data_loss, data_seed)
        if layout not in LAYOUTS:
            raise ValueError(f"problem.layout={layout!r} is unknown; allowed: {', '.join(LAYOUTS)}")
        require_counts(n_train=n_train, n_test=n_test, n_points=n_points, m=m)
        self.n_train, self.n_test, self.n_points = n_train, n_test, n_points
        self.n_sensors, self.length_scale, self.layout = m, length_scale, layout

    def _data(self, n: int, layout: str, seed: int) -> OperatorData:
        return self.read_once((n, layout, seed), lambda: self._read(n, layout, seed))

    def _read(self, n: int, layout: str, seed: int) -> OperatorData:
        arrays = cached_antiderivative_data(
            n, self.n_points, self.n_sensors, self.length_scale, layout, seed
        )
        branch, trunk, outputs = (as_tensor(arrays[k]) for k in ("branch", "trunk", "outputs"))
        if layout == "aligned":
            return OperatorData(branch, trunk, outputs.unsqueeze(-1))
        # unaligned rows repeat each function's sensor values; keep one row per function
        index = torch.from_numpy(arrays["function_index"]).long()
        first_rows = np.unique(arrays["function_index"], return_index=True)[1]
        return OperatorData(branch[first_rows], trunk, outputs, index)

    def train_data(self) -> OperatorData:
        return self._data(self.n_train, self.layout, dataset_seed(self.data_seed, "train"))

    def test_data(self) -> OperatorData:
        return self._data(self.n_test, "aligned", dataset_seed(self.data_seed, "test"))

    def test_grid(self) -> EvaluationGrid:
        x = torch.linspace(0.0, 1.0, self.n_points, dtype=torch.float64)
        return EvaluationGrid(points=x[:, None], shape=(self.n_points,), axes=[x])
