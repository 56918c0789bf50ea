"""Burgers operator: u(x, 0) -> u(x, 1) for u_t + u u_x = nu u_xx on the periodic unit interval
(Li et al. 2021's 1-D benchmark, nu = 0.1 by default).

Data from our pseudo-spectral solver (`data.burgers_periodic`): initial conditions from a
periodic Gaussian random field, the solution at t = 1 sampled at x_i = i / r (the grid layout is
"periodic"). Every generator option is a key of `problem.generator`
(`data.burgers_periodic.BurgersOperatorParams`, e.g. nu). Not the PINN problem `burgers` (one
initial condition, u(t, x) learnt pointwise): here the network learns the map between functions.
"""

from __future__ import annotations

from mpsciml.data.burgers_periodic import BurgersOperatorParams, burgers_dataset
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem
from mpsciml.problems.operator import as_tensor


class BurgersOperator(GridOperatorProblem):
    input_names = ("u0",)
    output_names = ("u",)
    coordinate_names = ("x",)
    grid_layout = "periodic"
    params_class = BurgersOperatorParams
    params: BurgersOperatorParams

    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        arrays = burgers_dataset(n, seed, resolution, self.params)
        return GridData(
            as_tensor(arrays["initial"]).unsqueeze(1), as_tensor(arrays["final"]).unsqueeze(1)
        )
