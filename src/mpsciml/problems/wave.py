"""The 1-D wave equation with a two-scale exact solution (the PINN failure case of Wang, Wang &
Perdikaris, "When and why PINNs fail to train", 2022).

    u_tt = c^2 u_xx   on (0, 1) x (0, 1],   u(0, t) = u(1, t) = 0,
    u(x, 0) = sin(pi x) + a sin(k pi x),   u_t(x, 0) = 0

Exact (standing waves, d'Alembert):

    u = sin(pi x) cos(c pi t) + a sin(k pi x) cos(c k pi t)

Multi-scale: with the defaults c = 2, k = 4, a = 0.5 the second mode oscillates 4x faster in
space and time than the first, which is what makes a plain PINN's residual loss stiff (the
Laplacian of the fast mode is 16x larger) and why loss balancing was invented on this problem.
Both initial conditions (value and velocity) are separate loss terms, `ic_u` and `ic_ut`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.jets import Column
from mpsciml.problems.base import Condition, Problem, require_counts
from mpsciml.problems.sampling import Box
from mpsciml.problems.transforms import OutputTransform
from mpsciml.seeding import Seed


class Wave(Problem):
    input_names = ("x", "t")
    output_names = ("u",)
    domain = Box(low=(0.0, 0.0), high=(1.0, 1.0))

    def __init__(
        self,
        speed: float = 2.0,
        mode: int = 4,
        amplitude: float = 0.5,
        n_domain: int = 4096,
        n_boundary: int = 256,
        n_initial: int = 256,
        sampling: str = "sobol",
        hard_constraints: bool = False,
        evaluation_grid: tuple[int, int] = (201, 201),
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        require_counts(n_domain=n_domain, n_boundary=n_boundary, n_initial=n_initial)
        if not (isinstance(speed, int | float) and speed > 0):
            raise ValueError(f"problem.speed={speed!r} is invalid: must be a number > 0")
        if not (isinstance(mode, int) and not isinstance(mode, bool) and mode >= 1):
            raise ValueError(
                f"problem.mode={mode!r} is invalid: must be an integer >= 1 (sin(k pi x) must "
                "vanish at both ends)"
            )
        self.speed, self.mode, self.amplitude = float(speed), mode, float(amplitude)
        self.n_domain, self.n_boundary, self.n_initial = n_domain, n_boundary, n_initial

    def exact(self, x: Tensor, t: Tensor) -> Tensor:
        pi, c, k = math.pi, self.speed, self.mode
        slow = torch.sin(pi * x) * torch.cos(c * pi * t)
        return slow + self.amplitude * torch.sin(k * pi * x) * torch.cos(c * k * pi * t)

    def pde(self, d: Derivatives) -> Tensor:
        return d("u", "t", "t") - self.speed**2 * d("u", "x", "x")

    def boundary(self, d: Derivatives) -> Tensor:
        return d["u"]

    def initial(self, d: Derivatives) -> dict[str, Tensor]:
        x, t = (d.coordinate(name).to(d["u"].dtype) for name in self.input_names)
        return {"u": d["u"] - self.exact(x, t), "ut": d("u", "t")}

    def output_transform(self) -> OutputTransform:
        description = "u = u(x, 0) + 4 t^2 x (1 - x) N(x, t)"
        return OutputTransform(self.hard_constraint, ("bc", "ic"), description)

    def hard_constraint(self, inputs: Sequence[Column], raw: Sequence[Column]) -> list[Column]:
        """u = u(x, 0) + 4 t^2 x (1 - x) N: the initial value and, through t^2, the initial
        velocity u_t = 0 at t = 0; zero at both ends (u(x, 0) vanishes there). The 4 scales the
        end factor to 1 in the middle, so N is of the solution's size."""
        x, t = inputs
        k = self.mode
        initial = (math.pi * x).sin() + self.amplitude * (k * math.pi * x).sin()
        return [initial + 4 * t * t * x * (1 - x) * raw[0]]

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        return self.evolution_conditions(seed, self.pde, self.boundary, self.initial)

    def reference(self, points: Tensor) -> Tensor:
        p = points.double().cpu()
        return self.exact(p[:, 0], p[:, 1]).unsqueeze(-1)
