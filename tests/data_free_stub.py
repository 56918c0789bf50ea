"""A tiny data-free Poisson problem for the tests of the data-free solver, independent of the real
`poisson_grid` (whose physics has tests of its own): -div(nu grad u) = 0 on the unit square,
u = 1 at x = 0 and 0 at x = 1, zero flux elsewhere, trained on the Ritz energy

    E(u) = 1/2 sum_edges nu_edge (difference of u / h)^2 h^2     (nu averaged onto each edge)

whose exact discrete minimiser is the reference (a small quadratic problem solved directly), so
a perfectly trained network has zero error. Fields nu = exp(a cos(pi k x) cos(pi l y)).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mpsciml.problems.data_free_grid import DataFreeGridProblem


class TinyPoisson(DataFreeGridProblem):
    input_names = ("nu",)
    output_names = ("u",)
    coordinate_names = ("x", "y")
    grid_layout = "nodes"
    term_names = ("energy",)
    default_loss_weights: ClassVar[dict[str, float]] = {}

    def __init__(self, grid: Any = 8, batch_size: int = 4, n_test: int = 2, data_seed: int = 0):
        super().__init__(grid=grid, batch_size=batch_size, n_test=n_test, data_seed=data_seed)

    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        x, y = (np.linspace(0, 1, n) for n in self.grid)
        a, k, m = rng.uniform(-1, 1), rng.integers(1, 3), rng.integers(1, 3)
        field = np.exp(a * np.outer(np.cos(np.pi * k * x), np.cos(np.pi * m * y)))
        return field[None]

    def network_inputs(self, inputs: Tensor) -> Tensor:
        return inputs.log()

    def impose(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        left = torch.ones_like(outputs[:, :, :1])
        right = torch.zeros_like(outputs[:, :, :1])
        return torch.cat([left, outputs[:, :, 1:-1], right], dim=2)

    def residual_terms(self, inputs: Tensor, outputs: Tensor) -> dict[str, Tensor]:
        nu, u = self.assembled(inputs, outputs)
        return {"energy": energy(nu[:, 0], u[:, 0], self.spacings())}

    def solve_reference(self, inputs: np.ndarray, progress: bool = True) -> np.ndarray:
        solutions = []
        shape = (1, 1, *self.grid)
        for nu in torch.as_tensor(inputs):

            def e(values: Tensor, nu: Tensor = nu) -> Tensor:  # quadratic in the free nodes
                u = self.impose(nu[None], values.reshape(shape))
                return energy(nu[None, 0], u[:, 0], self.spacings()).sum()

            nodes = torch.zeros(shape, dtype=torch.float64).flatten()
            free = torch.ones(shape, dtype=torch.bool)
            free[:, :, [0, -1]] = False
            free = free.flatten()
            hessian = torch.func.hessian(e)(nodes)[free][:, free]
            nodes[free] = -torch.linalg.solve(hessian, torch.func.grad(e)(nodes)[free])
            solutions.append(self.impose(nu[None], nodes.reshape(shape))[0].numpy())
        return np.stack(solutions)

    def reference_params(self) -> dict[str, Any]:
        return {"stub": "tiny_poisson"}


def energy(nu: Tensor, u: Tensor, spacings: tuple[float, ...]) -> Tensor:
    """Per-sample Ritz energy of u (N, nx, ny) with diffusivity nu (N, nx, ny), the 5-point
    finite-volume form (nu averaged onto each edge): (N,)."""
    hx, hy = spacings
    x_edges = (nu[:, 1:] + nu[:, :-1]) / 2 * ((u[:, 1:] - u[:, :-1]) / hx).square()
    y_edges = (nu[:, :, 1:] + nu[:, :, :-1]) / 2 * ((u[:, :, 1:] - u[:, :, :-1]) / hy).square()
    return 0.5 * (x_edges.sum((1, 2)) + y_edges.sum((1, 2))) * hx * hy
