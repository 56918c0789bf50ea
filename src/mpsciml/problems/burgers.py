"""Viscous Burgers: u_t + u u_x = nu u_xx, the benchmark of Raissi et al. and Hayford et al.

x in [-1, 1], t in [0, 0.99], u(x, 0) = -sin(pi x), u(+-1, t) = 0, nu = 0.01 / pi. A shock
forms at x = 0 (|u_x| ~ 150 at t = 0.99), which makes it a good test of derivatives in low
precision. Reference: the exact Cole-Hopf solution (`burgers_exact`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.jets import Column
from mpsciml.problems.base import Condition, Problem, require_counts
from mpsciml.problems.burgers_exact import burgers_exact
from mpsciml.problems.sampling import Box
from mpsciml.problems.transforms import OutputTransform
from mpsciml.seeding import Seed


class Burgers(Problem):
    input_names = ("x", "t")
    output_names = ("u",)
    domain = Box(low=(-1.0, 0.0), high=(1.0, 0.99))

    def __init__(
        self,
        nu: float = 0.01 / math.pi,
        n_domain: int = 2048,
        n_boundary: int = 64,
        n_initial: int = 128,
        sampling: str = "sobol",
        hard_constraints: bool = False,
        evaluation_grid: tuple[int, int] = (256, 100),
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        require_counts(n_domain=n_domain, n_boundary=n_boundary, n_initial=n_initial)
        self.nu = nu
        self.n_domain, self.n_boundary, self.n_initial = n_domain, n_boundary, n_initial

    def pde(self, d: Derivatives) -> Tensor:
        return d("u", "t") + d["u"] * d("u", "x") - self.nu * d("u", "x", "x")

    def boundary(self, d: Derivatives) -> Tensor:
        return d["u"]

    def initial(self, d: Derivatives) -> Tensor:
        return d["u"] + torch.sin(math.pi * d.coordinate("x"))

    def output_transform(self) -> OutputTransform:
        description = "u = -sin(pi x) + t (1 - x)(1 + x) N(x, t)"
        return OutputTransform(self.hard_constraint, ("bc", "ic"), description)

    def hard_constraint(self, inputs: Sequence[Column], raw: Sequence[Column]) -> list[Column]:
        """u = -sin(pi x) + t (1 - x)(1 + x) N: the initial value at t = 0 and zero at x = +-1
        (a method, not a closure: the wrapped model must pickle)."""
        x, t = inputs
        return [-(math.pi * x).sin() + t * (1 - x) * (1 + x) * raw[0]]

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        return self.evolution_conditions(seed, self.pde, self.boundary, self.initial)

    def reference(self, points: Tensor) -> Tensor:
        x, t = points[:, 0].double().cpu().numpy(), points[:, 1].double().cpu().numpy()
        return torch.from_numpy(burgers_exact(x, t, nu=self.nu)).unsqueeze(-1)
