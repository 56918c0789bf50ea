"""Diffusion-reaction operator, the physics-informed DeepONet benchmark (Wang, Wang & Perdikaris
2021; Hayford et al. 2024): source v -> solution u of

    u_t = D u_xx + k u^2 + v(x),  x in [0, 1], t in [0, 1],  u(x, 0) = 0,  u(0, t) = u(1, t) = 0,

D = 0.01, k = -0.01, v from a GRF (l = 0.2) seen at m = 50 sensors. Trained from the physics
alone (no solution data unless `supervised`): the residual at collocation points of each
training function, plus the initial and boundary values. The reference for the 100 test
functions is our own finite-difference solution (`data.diffusion_reaction`, second order,
~1.5e-4 relative on its 101 x 101 grid).

The residual needs v at the collocation points; the points' x are drawn from the solver grid,
where v is stored, and t anywhere in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from mpsciml.data.diffusion_reaction import cached_diffusion_reaction_data
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import EvaluationGrid, require_counts
from mpsciml.problems.operator import (
    OperatorCondition,
    OperatorData,
    OperatorProblem,
    as_tensor,
    dataset_seed,
)
from mpsciml.seeding import torch_generator


class DiffusionReaction(OperatorProblem):
    input_names = ("x", "t")
    output_names = ("u",)

    def __init__(
        self,
        n_train: int = 1000,
        n_test: int = 100,
        m: int = 50,
        nx: int = 101,
        nt: int = 101,
        n_domain: int = 100,
        n_boundary: int = 50,
        n_initial: int = 50,
        diffusion: float = 0.01,
        reaction: float = -0.01,
        length_scale: float = 0.2,
        supervised: bool = False,
        functions_per_step: int | None = 50,
        data_loss: str = "mse",
        data_seed: int = 0,
        data_points_per_function: int | None = 100,
        hard_constraints: bool = False,
        physics_points_per_function: int | None = None,
    ) -> None:
        super().__init__(
            functions_per_step,
            data_loss,
            data_seed,
            data_points_per_function,
            physics_points_per_function,
        )
        require_counts(n_train=n_train, n_test=n_test, m=m, nx=nx, nt=nt, n_domain=n_domain)
        require_counts(n_boundary=n_boundary, n_initial=n_initial)
        self.n_train, self.n_test, self.n_sensors, self.nx, self.nt = n_train, n_test, m, nx, nt
        self.n_domain, self.n_boundary, self.n_initial = n_domain, n_boundary, n_initial
        self.diffusion, self.reaction, self.length_scale = diffusion, reaction, length_scale
        self.supervised = supervised
        self.hard_constraints = hard_constraints

    def _arrays(self, n: int, seed: int) -> dict[str, np.ndarray]:
        """The dataset, read from the cache once: data, physics points and branch share it."""
        return self.read_once((n, seed), lambda: self._load(n, seed))

    def _train_arrays(self) -> dict[str, np.ndarray]:
        return self._arrays(self.n_train, dataset_seed(self.data_seed, "train"))

    def _load(self, n: int, seed: int) -> dict[str, np.ndarray]:
        return cached_diffusion_reaction_data(
            n,
            self.n_sensors,
            self.nx,
            self.nt,
            self.length_scale,
            seed,
            diffusion=self.diffusion,
            reaction=self.reaction,
        )

    def _aligned(self, arrays: dict[str, np.ndarray]) -> OperatorData:
        """Solutions on the (x, t) grid in input order, t fastest (the plots' convention)."""
        x, t = as_tensor(arrays["x"]), as_tensor(arrays["t"])
        trunk = torch.cartesian_prod(x, t)
        outputs = as_tensor(arrays["u"]).transpose(1, 2).reshape(len(arrays["u"]), -1, 1)
        return OperatorData(as_tensor(arrays["branch"]), trunk, outputs)

    def train_data(self) -> OperatorData | None:
        if not self.supervised:
            return None
        return self._aligned(self._train_arrays())

    def test_data(self) -> OperatorData:
        return self._aligned(self._arrays(self.n_test, dataset_seed(self.data_seed, "test")))

    def test_grid(self) -> EvaluationGrid:
        x = torch.linspace(0.0, 1.0, self.nx, dtype=torch.float64)
        t = torch.linspace(0.0, 1.0, self.nt, dtype=torch.float64)
        return EvaluationGrid(torch.cartesian_prod(x, t), (self.nx, self.nt), [x, t])

    def physics_branch(self) -> Tensor:
        return as_tensor(self._train_arrays()["branch"])

    def pde(self, d: Derivatives, source: Tensor) -> Tensor:
        u = d["u"]
        return (
            d("u", "t")
            - self.diffusion * d("u", "x", "x")
            - self.reaction * u**2
            - source[:, 0].to(u.dtype)
        )

    def constrain_output(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        """u = x (1 - x) t N(x, t): zero initial and boundary values by construction."""
        if not self.hard_constraints:
            return outputs
        x, t = inputs[..., 0:1], inputs[..., 1:2]
        return x * (1 - x) * t * outputs

    def boundary_value(self, d: Derivatives, known: Tensor) -> Tensor:
        return d["u"]

    def physics_conditions(self) -> dict[str, OperatorCondition]:
        arrays = self._train_arrays()
        n, x_grid = self.n_train, as_tensor(arrays["x"])
        generator = torch_generator(self.data_seed, "physics_points")

        def uniform(*shape: int) -> Tensor:
            return torch.rand(*shape, generator=generator, dtype=torch.float64)

        # interior: x on the solver grid (where v is known), t anywhere
        column = torch.randint(0, self.nx, (n, self.n_domain), generator=generator)
        domain = torch.stack([x_grid[column], uniform(n, self.n_domain)], dim=-1)
        source = torch.gather(as_tensor(arrays["source"]), 1, column).unsqueeze(-1)
        pde = {"pde": OperatorCondition(domain, source, self.pde)}
        if self.hard_constraints:  # u = 0 at t = 0 and on the walls holds exactly
            return pde
        initial = torch.stack([uniform(n, self.n_initial), torch.zeros(n, self.n_initial)], -1)
        wall = (uniform(n, self.n_boundary) < 0.5).double()
        boundary = torch.stack([wall, uniform(n, self.n_boundary)], dim=-1)
        return pde | {
            "ic": OperatorCondition(
                initial, torch.zeros(n, self.n_initial, 0), self.boundary_value
            ),
            "bc": OperatorCondition(
                boundary, torch.zeros(n, self.n_boundary, 0), self.boundary_value
            ),
        }
