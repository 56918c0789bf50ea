"""The lid-driven cavity: steady incompressible Navier-Stokes in the unit square, Re = 100.

    u u_x + v u_y + p_x - (1/Re) laplacian(u) = 0
    u v_x + v v_y + p_y - (1/Re) laplacian(v) = 0
    u_x + v_y = 0

on (0, 1)^2, no slip (u = v = 0) on the bottom and side walls, the lid y = 1 moving with
(u, v) = (U(x), 0), and the pressure level fixed by p = 0 at the middle of the bottom wall
(0.5, 0) (pressure is otherwise defined only up to a constant; the reference uses the same gauge).
NVIDIA found fp16 second derivatives overflow on this problem, which is why it is here.

The corners of the lid are handled deliberately (`problem.lid`, see `data/cavity_solver.py`):
by default the lid is regularised, U(x) = 1 - (2x - 1)^m with m = `lid_exponent` = 16, which is
1 over most of the lid and goes to 0 smoothly at both corners, so the flow is smooth, a network
can meet the boundary condition exactly and the error measures the PDE, not an unresolvable
jump. `problem.lid=discontinuous` is the classic cavity of Ghia et al. (U = 1 on the open lid, 0
at the corner points); the network then smears the jump and the pressure reference is singular at
the two top corners. The boundary condition and the reference always use the same
`lid_velocity`.

Reference: our own steady solver (`data/cavity_solver.py`: stream function-vorticity, Newton
with a sparse LU, `resolution` x `resolution` cells, cached on disk), interpolated to any point by
bicubic splines through its nodes; the default evaluation grid, 129 x 129, is the solver's nodes.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import RectBivariateSpline
from torch import Tensor

from mpsciml.data.cavity_solver import GAUGE, cavity_reference, check_lid, lid_velocity
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import Condition, Problem, require_counts
from mpsciml.problems.navier_stokes import steady_incompressible
from mpsciml.problems.sampling import Box
from mpsciml.seeding import Seed, seed_stream

# copies of the gauge point: one would do, but under DDP every rank needs a share of each
# condition's points (data/points.py), and repeating a point changes nothing in its mean square
GAUGE_COPIES = 8


class LidDrivenCavity(Problem):
    input_names = ("x", "y")
    output_names = ("u", "v", "p")
    domain = Box(low=(0.0, 0.0), high=(1.0, 1.0))

    def __init__(
        self,
        reynolds: float = 100.0,
        lid: str = "regularised",
        lid_exponent: int = 16,
        n_domain: int = 2000,
        n_boundary: int = 400,
        resolution: int = 128,
        sampling: str = "sobol",
        evaluation_grid: tuple[int, int] = (129, 129),
        hard_constraints: bool = False,  # no output transform: true is refused by name
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        require_counts(n_domain=n_domain, n_boundary=n_boundary)
        if n_boundary < 4:
            raise ValueError(f"problem.n_boundary={n_boundary} is invalid: must be >= 4 (walls)")
        if not (isinstance(reynolds, int | float) and reynolds > 0):
            raise ValueError(f"problem.reynolds={reynolds!r} is invalid: must be a number > 0")
        check_lid(lid, lid_exponent)
        if not (isinstance(resolution, int) and resolution >= 4 and resolution % 2 == 0):
            raise ValueError(
                f"problem.resolution={resolution!r} is invalid: must be an even integer >= 4 "
                "(the reference solver's cells per side)"
            )
        self.reynolds, self.lid, self.lid_exponent = float(reynolds), lid, lid_exponent
        self.n_domain, self.n_boundary, self.resolution = n_domain, n_boundary, resolution
        self._splines: list[RectBivariateSpline] | None = None

    @property
    def name(self) -> str:
        return "lid_driven_cavity"

    # ------------------------------------------------------------------ residuals
    def momentum_and_continuity(self, d: Derivatives) -> dict[str, Tensor]:
        return steady_incompressible(d, self.reynolds)

    def lid_condition(self, d: Derivatives) -> dict[str, Tensor]:
        x = d.coordinate("x").to(d["u"].dtype)  # the lid profile in fp32 at least
        return {"u": d["u"] - lid_velocity(x, self.lid, self.lid_exponent), "v": d["v"]}

    def no_slip(self, d: Derivatives) -> dict[str, Tensor]:
        return {"u": d["u"], "v": d["v"]}

    def pressure_gauge(self, d: Derivatives) -> Tensor:
        return d["p"]

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        box, method = self.domain, self.sampling
        pde, lid, walls = (seed_stream(seed, name) for name in ("pde", "lid", "walls"))
        n_lid = max(1, round(self.n_boundary / 4))  # the four walls have equal length
        n_bottom = (self.n_boundary - n_lid) // 3
        n_sides = self.n_boundary - n_lid - n_bottom
        bottom = box.face(1, "low", n_bottom, method, seed_stream(walls, "bottom"))
        wall_points = torch.cat([box.faces(n_sides, method, walls, axes=[0]), bottom])
        gauge = torch.tensor([GAUGE], dtype=torch.float64).repeat(GAUGE_COPIES, 1)
        return {
            "pde": Condition(
                box.interior(self.n_domain, method, pde), self.momentum_and_continuity
            ),
            "lid": Condition(box.face(1, "high", n_lid, method, lid), self.lid_condition),
            "walls": Condition(wall_points, self.no_slip),
            "gauge": Condition(gauge, self.pressure_gauge),
        }

    # ------------------------------------------------------------------ reference
    def solution(self) -> dict[str, np.ndarray]:
        """The reference solver's nodal fields (cached on disk after the first solve)."""
        return cavity_reference(self.resolution, self.reynolds, self.lid, self.lid_exponent)

    def reference(self, points: Tensor) -> Tensor:
        if self._splines is None:
            fields = self.solution()
            nodes = fields["x"]
            self._splines = [
                RectBivariateSpline(nodes, nodes, fields[name], kx=3, ky=3, s=0)
                for name in self.output_names
            ]
        x, y = points[:, 0].double().cpu().numpy(), points[:, 1].double().cpu().numpy()
        values = np.stack([spline.ev(x, y) for spline in self._splines], axis=-1)
        return torch.from_numpy(values)
