"""Darcy flow operator: coefficient a -> solution u of -div(a grad u) = f on (0, 1)^2, u = 0 on
the walls (Li et al. 2021, the FNO's first benchmark).

Data from our finite-volume solver (`data.darcy`): a two-valued coefficient thresholded from a
Gaussian random field, solved on a fine grid and sampled at the cell centres of the training
resolution (x_i = (i + 1/2) / r: no sample on the walls, so the grid layout is "cells"). Every
generator option is a key of `problem.generator` (`data.darcy.DarcyParams`: high, low,
threshold, alpha, tau, modes, source, solve_grid), since public Darcy sets differ in them.

Defaults: 32x32 (1000 training, 100 test samples), zero-shot at 64x64 (100 samples). With
`coefficient_path` a user's own coefficients (a file with arrays `x`, (N, r, r), values > 0 per
cell; `.pt`/`.npz`/`.h5` as in `data.grid_files`) are solved by the same scheme on the grid
refined by the odd factor `solve_grid` asks for: the first `n_train` train, the next `n_test`
test. With `data_path` the pairs themselves come from the user (`GridOperatorProblem`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mpsciml.data.darcy import DarcyParams, darcy_dataset, fine_grid, solve_darcy_refined
from mpsciml.data.grid_files import read_grid_arrays
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem
from mpsciml.problems.operator import as_tensor


class Darcy(GridOperatorProblem):
    input_names = ("a",)
    output_names = ("u",)
    coordinate_names = ("x", "y")
    grid_layout = "cells"
    params_class = DarcyParams
    params: DarcyParams

    def __init__(self, *args: Any, coefficient_path: str | None = None, **kwargs: Any) -> None:
        """The options of `GridOperatorProblem`, and `coefficient_path`: a file of coefficient
        fields (array `x`, (N, r, r)) to solve for instead of drawing them."""
        super().__init__(*args, **kwargs)
        if coefficient_path and self.data_path:
            raise ValueError(
                "problem.coefficient_path and problem.data_path both given: coefficients to "
                "solve, or solved pairs, not both"
            )
        self.coefficient_path = coefficient_path

    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        arrays = darcy_dataset(n, seed, resolution, self.params)
        return GridData(
            as_tensor(arrays["coefficient"]).unsqueeze(1),
            as_tensor(arrays["solution"]).unsqueeze(1),
        )

    # ------------------------------------------------- a user's coefficients
    def model_sizes(self) -> dict[str, Any]:
        sizes = super().model_sizes()
        if self.coefficient_path:
            sizes["grid"] = self.train_data().grid
        return sizes

    def train_data(self) -> GridData:
        if self.coefficient_path:
            return self._solved_coefficients().head(self.n_train)
        return super().train_data()

    def test_data(self) -> GridData:
        if self.coefficient_path:
            solved = self._solved_coefficients()
            return GridData(*(t[self.n_train :] for t in (solved.inputs, solved.outputs)))
        return super().test_data()

    def zero_shot_data(self) -> GridData | None:
        """None with user coefficients: ours would come from another distribution."""
        return None if self.coefficient_path else super().zero_shot_data()

    def _solved_coefficients(self) -> GridData:
        return self.read_once(("coefficients", self.coefficient_path), self._solve_coefficients)

    def _solve_coefficients(self) -> GridData:
        """The first n_train + n_test coefficient fields of the file, solved."""
        key, path = "problem.coefficient_path", self.coefficient_path
        a = read_grid_arrays(path, key, {"x": 1}, spatial_dims=2)["x"][:, 0]
        needed = self.n_train + self.n_test
        if a.shape[0] < needed:
            raise ValueError(
                f"{key}={path} holds {a.shape[0]} coefficient fields, fewer than the {needed} "
                f"asked for (problem.n_train={self.n_train}, problem.n_test={self.n_test})"
            )
        if a.shape[1] != a.shape[2] or not bool((a > 0).all()):
            raise ValueError(
                f"{key}={path}: x of shape {tuple(a.shape)}; expected (N, r, r) with values > 0"
            )
        a = a[:needed].numpy()
        _, refine = fine_grid(a.shape[1], self.params.solve_grid)
        u = solve_darcy_refined(a, self.params.source, refine=refine)
        return GridData(as_tensor(a).unsqueeze(1), as_tensor(np.asarray(u)).unsqueeze(1))
