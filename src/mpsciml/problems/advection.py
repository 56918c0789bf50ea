"""Advection operator: initial condition v -> solution u of u_t + u_x = 0, periodic in x.

The setting of Lu et al. (CMAME 2022) used by Hayford et al. for mixed precision: nx = nt = 40,
branch [40, 512, 512], trunk [2, 512, 512, 512], ReLU, and the mean relative L2 error as the
training loss. Data are exact (the initial condition shifted; `data.advection`).
"""

from __future__ import annotations

import torch

from mpsciml.data.advection import cached_advection_data
from mpsciml.problems.base import EvaluationGrid, require_counts
from mpsciml.problems.operator import OperatorData, OperatorProblem, as_tensor, dataset_seed


class Advection(OperatorProblem):
    input_names = ("x", "t")
    output_names = ("u",)

    def __init__(
        self,
        n_train: int = 1000,
        n_test: int = 200,
        nx: int = 40,
        nt: int = 40,
        length_scale: float = 0.2,
        functions_per_step: int | None = None,
        data_loss: str = "rel_l2",
        data_seed: int = 0,
    ) -> None:
        super().__init__(functions_per_step, data_loss, data_seed)
        require_counts(n_train=n_train, n_test=n_test, nx=nx, nt=nt)
        self.n_train, self.n_test, self.nx, self.nt = n_train, n_test, nx, nt
        self.n_sensors, self.length_scale = nx, length_scale

    def _data(self, n: int, seed: int) -> OperatorData:
        return self.read_once((n, seed), lambda: self._read(n, seed))

    def _read(self, n: int, seed: int) -> OperatorData:
        arrays = cached_advection_data(n, self.nx, self.nt, self.length_scale, 1.0, seed)
        branch, trunk, outputs = (as_tensor(arrays[k]) for k in ("branch", "trunk", "outputs"))
        return OperatorData(branch, trunk, outputs.unsqueeze(-1))

    def train_data(self) -> OperatorData:
        return self._data(self.n_train, dataset_seed(self.data_seed, "train"))

    def test_data(self) -> OperatorData:
        return self._data(self.n_test, dataset_seed(self.data_seed, "test"))

    def test_grid(self) -> EvaluationGrid:
        """The data's (x, t) grid, t fastest, built from its sizes (no dataset load)."""
        x = torch.arange(self.nx, dtype=torch.float64) / self.nx
        t = torch.linspace(0.0, 1.0, self.nt, dtype=torch.float64)
        return EvaluationGrid(torch.cartesian_prod(x, t), (self.nx, self.nt), [x, t])
