"""Steady incompressible Navier-Stokes: Kovasznay flow (Kovasznay 1948), Re = 20.

The flow behind a periodic array of cylinders has a closed form, so every error is exact:

    u = 1 - exp(lam x) cos(2 pi y),  v = lam / (2 pi) exp(lam x) sin(2 pi y),
    p = (1 - exp(2 lam x)) / 2,      lam = Re/2 - sqrt(Re^2/4 + 4 pi^2).

The network is trained on the momentum and continuity residuals inside, the exact velocity on the
whole boundary and the exact pressure on the outlet x = 1 (pressure is otherwise fixed only up to
a constant), the setting of the DeepXDE example and of the mixed-precision paper.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import Condition, Problem, require_counts
from mpsciml.problems.sampling import Box
from mpsciml.seeding import Seed, seed_stream


def steady_incompressible(d: Derivatives, reynolds: float) -> dict[str, Tensor]:
    """The steady incompressible Navier-Stokes residuals in (x, y) for outputs (u, v, p), density
    1 and viscosity 1/Re: one definition for every steady flow problem (Kovasznay, the cavity)."""
    nu = 1 / reynolds
    u, v = d["u"], d["v"]
    return {
        "momentum_x": u * d("u", "x") + v * d("u", "y") + d("p", "x") - nu * d.laplacian("u"),
        "momentum_y": u * d("v", "x") + v * d("v", "y") + d("p", "y") - nu * d.laplacian("v"),
        "continuity": d("u", "x") + d("v", "y"),
    }


class NavierStokes(Problem):
    input_names = ("x", "y")
    output_names = ("u", "v", "p")
    domain = Box(low=(-0.5, -0.5), high=(1.0, 1.5))

    def __init__(
        self,
        reynolds: float = 20.0,
        n_domain: int = 2601,
        n_boundary: int = 400,
        n_outlet: int = 100,
        sampling: str = "sobol",
        evaluation_grid: tuple[int, int] = (151, 201),
        hard_constraints: bool = False,  # no output transform: true is refused by name
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        require_counts(n_domain=n_domain, n_boundary=n_boundary, n_outlet=n_outlet)
        self.reynolds = reynolds
        self.lam = reynolds / 2 - math.sqrt(reynolds**2 / 4 + 4 * math.pi**2)
        self.n_domain, self.n_boundary, self.n_outlet = n_domain, n_boundary, n_outlet

    def exact(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        decay = torch.exp(self.lam * x)
        u = 1 - decay * torch.cos(2 * math.pi * y)
        v = self.lam / (2 * math.pi) * decay * torch.sin(2 * math.pi * y)
        p = 0.5 * (1 - torch.exp(2 * self.lam * x))
        return u, v, p

    def reference(self, points: Tensor) -> Tensor:
        return torch.stack(self.exact(points[:, 0], points[:, 1]), dim=-1)

    def momentum_and_continuity(self, d: Derivatives) -> dict[str, Tensor]:
        return steady_incompressible(d, self.reynolds)

    def boundary_velocity(self, d: Derivatives) -> dict[str, Tensor]:
        u, v, _ = self.exact(d.coordinate("x"), d.coordinate("y"))
        return {"u": d["u"] - u, "v": d["v"] - v}

    def outlet_pressure(self, d: Derivatives) -> Tensor:
        _, _, p = self.exact(d.coordinate("x"), d.coordinate("y"))
        return d["p"] - p

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        box, method = self.domain, self.sampling
        pde, bc, outlet = (seed_stream(seed, name) for name in ("pde", "bc", "outlet"))
        return {
            "pde": Condition(
                box.interior(self.n_domain, method, pde), self.momentum_and_continuity
            ),
            "bc": Condition(box.faces(self.n_boundary, method, bc), self.boundary_velocity),
            "outlet": Condition(
                box.face(0, "high", self.n_outlet, method, outlet), self.outlet_pressure
            ),
        }
