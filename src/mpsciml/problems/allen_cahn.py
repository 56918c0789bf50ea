"""Allen-Cahn: the stiff 1-D reaction-diffusion benchmark of Raissi et al. (2019).

    u_t - eps u_xx + 5 u^3 - 5 u = 0,   x in [-1, 1], t in [0, 1],   eps = 1e-4,
    u(x, 0) = x^2 cos(pi x),   periodic in x

Sharp interfaces (width ~ sqrt(2 eps / 5) ~ 0.006) form between the stable states +-1, which is
what makes it hard for a plain PINN (the literature reports relative L2 errors of order 1 without
adaptive weighting or sampling, issue 16's training strategies).

The boundary condition: the benchmark is periodic, but a periodic condition pairs a point at
x = -1 with one at x = +1, and a DDP run slices every condition's points by rank (data/points.py),
which could split a pair. Since the initial datum is even, the periodic solution is even too, so
its x-derivative vanishes at x = +-1 (u_x is odd and periodic); the Neumann problem, u_x(+-1, t) =
0, therefore has the same unique solution, and it is a pointwise condition. So this problem
enforces u_x = 0 at x = +-1: exact for this datum, not an approximation. With periodic inputs
(`model.periodic=problem`: the network sees cos(pi x), sin(pi x)) the network is periodic by
construction and this condition leaves the loss (`periodic_condition`).

No output transform (hard constraint): u = x^2 cos(pi x) + t N would meet the initial condition
exactly, but x^2 cos(pi x) is not periodic in its slope (u_x(+-1, 0) = -+2), so that u would break
the periodicity (and u_x(+-1) = 0) for every t > 0 whatever N is; the initial condition stays a
loss term.

Reference: our own spectral solver (`data/allen_cahn_spectral.py`: Fourier pseudo-spectral with
`resolution` modes, ETDRK4 in time, cached on disk), evaluated at any point by its series.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from mpsciml.data.allen_cahn_spectral import allen_cahn_reference, evaluate
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import Condition, Problem, require_counts
from mpsciml.problems.sampling import Box
from mpsciml.seeding import Seed


class AllenCahn(Problem):
    input_names = ("x", "t")
    output_names = ("u",)
    domain = Box(low=(-1.0, 0.0), high=(1.0, 1.0))
    periodic_inputs: ClassVar[Mapping[str, float]] = {"x": 2.0}
    periodic_condition: ClassVar[str | None] = "bc"

    def __init__(
        self,
        eps: float = 1e-4,
        n_domain: int = 8192,
        n_boundary: int = 256,
        n_initial: int = 512,
        resolution: int = 1024,
        dt: float = 1e-3,
        sampling: str = "sobol",
        hard_constraints: bool = False,
        evaluation_grid: tuple[int, int] = (201, 101),
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        require_counts(n_domain=n_domain, n_boundary=n_boundary, n_initial=n_initial)
        if not (isinstance(eps, int | float) and eps > 0):
            raise ValueError(f"problem.eps={eps!r} is invalid: must be a number > 0")
        if not (isinstance(resolution, int) and resolution >= 8 and resolution % 2 == 0):
            raise ValueError(
                f"problem.resolution={resolution!r} is invalid: must be an even integer >= 8 "
                "(Fourier modes of the reference solver)"
            )
        if not (isinstance(dt, int | float) and dt > 0):
            raise ValueError(f"problem.dt={dt!r} is invalid: must be a number > 0")
        self.eps, self.resolution, self.dt = float(eps), resolution, float(dt)
        self.n_domain, self.n_boundary, self.n_initial = n_domain, n_boundary, n_initial
        self._solution: dict[str, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return "allen_cahn"

    def pde(self, d: Derivatives) -> Tensor:
        u = d["u"]
        return d("u", "t") - self.eps * d("u", "x", "x") + 5 * u**3 - 5 * u

    def neumann(self, d: Derivatives) -> Tensor:
        return d("u", "x")

    def initial(self, d: Derivatives) -> Tensor:
        x = d.coordinate("x").to(d["u"].dtype)
        return d["u"] - x**2 * torch.cos(math.pi * x)

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        return self.evolution_conditions(seed, self.pde, self.neumann, self.initial)

    def reference(self, points: Tensor) -> Tensor:
        if self._solution is None:
            self._solution = allen_cahn_reference(self.resolution, self.dt, self.eps)
        x, t = points[:, 0].double().cpu().numpy(), points[:, 1].double().cpu().numpy()
        return torch.from_numpy(evaluate(self._solution, x, t)).unsqueeze(-1)
