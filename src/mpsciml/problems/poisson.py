"""The Poisson equation -(u_xx + u_yy) = f in 2-D, on a square, a square with a hole, or an
L-shaped domain, each with an exact solution as its reference.

- `square`, (0, 1)^2: the manufactured solution of two scales
      u = sin(pi x) sin(pi y) + a sin(k pi x) sin(k pi y),   f = 2 pi^2 (u_1 + k^2 a u_k),
  u = 0 on the boundary. The k-mode carries a / sqrt(1 + a^2) of the norm of u (0.24 with the
  defaults a = 0.25, k = 4) and k^2 = 16 times its share of f: a network that has only the
  smooth mode (spectral bias) is left with a relative L2 error near 0.24, so the error measures
  the fine scale.
- `square_hole`: the same u and f on (0, 1)^2 minus a disc of radius 0.2 about (0.5, 0.5) (a
  regular 64-gon), Dirichlet data u on all five rings' edges: a domain with a hole.
- `l_shape`, (-1, 1)^2 minus [0, 1) x (-1, 0]: the classic singular solution of the re-entrant
  corner,
      u = r^(2/3) sin(2 theta / 3),   f = 0,
  with theta measured from the edge on the positive x axis through the domain (0 to 3 pi / 2),
  Dirichlet data u on the boundary (it vanishes on the two edges that meet at the corner). The
  gradient of u grows like r^(-1/3) at the origin: a smooth network cannot follow it, so the
  corner is where a PINN's error concentrates. This is the standard hard case; the error it
  reaches is reported as it is, not tuned away.

The boundary condition is Dirichlet (`bc`: u - u_exact on the edges, shared by length). With
`neumann=true` the edges along the bounding box's right and top sides (x = max, y = max) carry
Neumann data instead, the exact normal derivative: `neumann_x` (u_x - u_x exact on the right) and
`neumann_y` (u_y - u_y exact on the top), each its own loss term; one condition per side, so a
residual never has to tell from rounded coordinates which side a point is on. The errors count
only the evaluation-grid points inside the domain (`EvaluationGrid.mask`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import Condition, EvaluationGrid, Problem, require_counts
from mpsciml.problems.geometry import Polygon, circle_ring
from mpsciml.seeding import Seed, seed_stream

DOMAINS = {
    "square": lambda: Polygon.rectangle((0.0, 0.0), (1.0, 1.0)),
    "square_hole": lambda: Polygon(
        [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)], holes=[circle_ring((0.5, 0.5), 0.2)]
    ),
    "l_shape": lambda: Polygon(
        [(-1.0, -1.0), (0.0, -1.0), (0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (-1.0, 1.0)]
    ),
}


class Poisson(Problem):
    input_names = ("x", "y")
    output_names = ("u",)

    def __init__(
        self,
        domain: str = "square",
        amplitude: float = 0.25,
        wavenumber: int = 4,
        n_domain: int = 2048,
        n_boundary: int = 512,
        sampling: str = "sobol",
        evaluation_grid: tuple[int, int] = (101, 101),
        neumann: bool = False,
        hard_constraints: bool = False,  # no output transform: true is refused by name
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        if domain not in DOMAINS:
            raise ValueError(
                f"problem.domain={domain!r} is not a Poisson domain; allowed: {', '.join(DOMAINS)}"
            )
        require_counts(n_domain=n_domain, n_boundary=n_boundary)
        if not (
            isinstance(wavenumber, int) and not isinstance(wavenumber, bool) and wavenumber > 0
        ):
            # an integer keeps sin(k pi x) zero on the square's edges
            raise ValueError(
                f"problem.wavenumber={wavenumber!r} is invalid: must be an integer > 0"
            )
        if not (isinstance(amplitude, int | float) and math.isfinite(amplitude)):
            raise ValueError(f"problem.amplitude={amplitude!r} is invalid: must be a finite number")
        self.domain_name = domain
        self.domain = DOMAINS[domain]()  # type: ignore[assignment]
        self.amplitude, self.wavenumber = float(amplitude), wavenumber
        self.n_domain, self.n_boundary = n_domain, n_boundary
        self.neumann = bool(neumann)
        self._boundary_parts()  # refuses a boundary count too small for its parts, here

    # ------------------------------------------------------------- the solution
    def exact(self, x: Tensor, y: Tensor) -> Tensor:
        if self.domain_name == "l_shape":
            return corner_solution(x, y)
        pi, k = math.pi, self.wavenumber
        smooth = torch.sin(pi * x) * torch.sin(pi * y)
        return smooth + self.amplitude * torch.sin(k * pi * x) * torch.sin(k * pi * y)

    def source(self, x: Tensor, y: Tensor) -> Tensor:
        """f = -(u_xx + u_yy) of the exact solution (zero for the harmonic corner solution)."""
        if self.domain_name == "l_shape":
            return torch.zeros_like(x)
        pi, k, a = math.pi, self.wavenumber, self.amplitude
        smooth = torch.sin(pi * x) * torch.sin(pi * y)
        fine = torch.sin(k * pi * x) * torch.sin(k * pi * y)
        return 2 * pi**2 * (smooth + k**2 * a * fine)

    def exact_gradient(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """(u_x, u_y) of the exact solution: the Neumann data."""
        if self.domain_name == "l_shape":
            # grad r^(2/3) sin(2 theta/3) = (2/3) r^(-1/3) (-sin(theta/3), cos(theta/3))
            theta = torch.atan2(-(x + y), y - x) + 0.75 * math.pi
            scale = (2.0 / 3.0) * (x * x + y * y) ** (-1.0 / 6.0)
            return -scale * torch.sin(theta / 3.0), scale * torch.cos(theta / 3.0)
        pi, k, a = math.pi, self.wavenumber, self.amplitude
        sin_x, sin_y, cos_x, cos_y = (f(pi * v) for f in (torch.sin, torch.cos) for v in (x, y))
        fine_sin_x, fine_sin_y = torch.sin(k * pi * x), torch.sin(k * pi * y)
        fine_cos_x, fine_cos_y = torch.cos(k * pi * x), torch.cos(k * pi * y)
        u_x = pi * (cos_x * sin_y + a * k * fine_cos_x * fine_sin_y)
        u_y = pi * (sin_x * cos_y + a * k * fine_sin_x * fine_cos_y)
        return u_x, u_y

    # --------------------------------------------------------------- residuals
    def pde(self, d: Derivatives) -> Tensor:
        x, y = self._coordinates(d)
        return -d.laplacian("u", "x", "y") - self.source(x, y)

    def boundary(self, d: Derivatives) -> Tensor:
        return d["u"] - self.exact(*self._coordinates(d))

    def flux_x(self, d: Derivatives) -> Tensor:
        return d("u", "x") - self.exact_gradient(*self._coordinates(d))[0]

    def flux_y(self, d: Derivatives) -> Tensor:
        return d("u", "y") - self.exact_gradient(*self._coordinates(d))[1]

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        method, polygon = self.sampling, self.domain
        conditions = {
            "pde": Condition(
                polygon.interior(self.n_domain, method, seed_stream(seed, "pde")), self.pde
            )
        }
        residuals = {"bc": self.boundary, "neumann_x": self.flux_x, "neumann_y": self.flux_y}
        for name, (edges, count) in self._boundary_parts().items():
            points = polygon.boundary(count, method, seed_stream(seed, name), edges=edges)  # type: ignore[attr-defined]
            conditions[name] = Condition(points, residuals[name])
        return conditions

    def reference(self, points: Tensor) -> Tensor:
        p = points.double().cpu()
        return self.exact(p[:, 0], p[:, 1]).unsqueeze(-1)

    def evaluation_grid(self) -> EvaluationGrid:
        """The bounding box's grid with the points in the domain marked."""
        grid = super().evaluation_grid()
        return dataclasses.replace(grid, mask=self.domain.mask(grid.points))  # type: ignore[attr-defined]

    def _boundary_parts(self) -> dict[str, tuple[list[int], int]]:
        """Condition -> (its edges, its share of n_boundary by length): all edges Dirichlet, or
        the right and top sides Neumann with the rest Dirichlet."""
        polygon: Polygon = self.domain  # type: ignore[assignment]
        every = list(range(len(polygon.lengths)))
        if not self.neumann:
            return {"bc": (every, self.n_boundary)}
        (_, _), (x_max, y_max) = polygon.low, polygon.high
        starts, ends = polygon.starts, polygon.ends
        right = [e for e in every if starts[e, 0] == ends[e, 0] == x_max]
        top = [e for e in every if starts[e, 1] == ends[e, 1] == y_max]
        parts = {"bc": [e for e in every if e not in right + top], "neumann_x": right}
        parts["neumann_y"] = top
        lengths = np.array([float(polygon.lengths[edges].sum()) for edges in parts.values()])
        shares = self.n_boundary * lengths / lengths.sum()
        counts = np.floor(shares).astype(int)
        counts[np.argsort(-(shares - counts), kind="stable")[: self.n_boundary - counts.sum()]] += 1
        if counts.min() == 0:
            raise ValueError(
                f"problem.n_boundary={self.n_boundary} is too small for neumann=true: "
                "each of bc, neumann_x and neumann_y needs a point"
            )
        return {
            name: (edges, int(count))
            for (name, edges), count in zip(parts.items(), counts, strict=True)
        }

    def _coordinates(self, d: Derivatives) -> tuple[Tensor, Tensor]:
        """x and y in the residual's dtype, detached: exact values and sources are data, and the
        corner solution's gradient is infinite at the origin (a vertex of the boundary)."""
        dtype = d["u"].dtype
        return d.coordinate("x").detach().to(dtype), d.coordinate("y").detach().to(dtype)


def corner_solution(x: Tensor, y: Tensor) -> Tensor:
    """r^(2/3) sin(2 theta / 3) on the L-shape, theta in [0, 3 pi / 2] from the positive x axis.

    theta is computed with the branch cut of atan2 turned into the missing quadrant (along
    theta = -pi / 4): atan2 of the point rotated by 5 pi / 4, plus 3 pi / 4. A plain
    atan2(y, x) mod 2 pi would put the cut on the edge y = 0, x > 0, where a rounding of y to
    -1e-17 jumps theta from 0 to 2 pi and u from 0 to sin(4 pi / 3).
    """
    theta = torch.atan2(-(x + y), y - x) + 0.75 * math.pi
    radius_23 = (x * x + y * y) ** (1.0 / 3.0)
    return radius_23 * torch.sin(2.0 * theta / 3.0)
