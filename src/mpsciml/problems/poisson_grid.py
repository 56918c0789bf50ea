"""DiffNet's parametric Poisson problem, data-free on a grid (Botelho et al.):

    -div(nu grad u) = f  on (0, 1)^2,  u = 1 on the left wall (x = 0), u = 0 on the right (x = 1),
    zero flux on the bottom and top walls (y = 0, 1);  nu = exp(log_nu_mean + psi) per sample,

the network maps nu to u on the (nx, ny) nodes x_i = i / (nx - 1), y_j = j / (ny - 1) (tensor
dim 2 is x, dim 3 is y; layout "nodes"). psi is a mean-zero Gaussian random field with zero
normal slope, a finite Karhunen-Loeve series in the cosine eigenfunctions of the Laplacian
(`data.grf_grid`: covariance (-Laplacian + tau^2)^-alpha, `modes` cosines per axis), scaled so
that its pointwise standard deviation, averaged over the square, is `log_nu_std`. A finite series
is one smooth function whatever the grid, so 64x64 and 256x256 runs see the same distribution.

Loss (`problem.loss`):
  * energy (default, DiffNet's): the Ritz energy int 1/2 nu |grad u|^2 - f u of the Q1
    interpolant by 2x2 Gauss quadrature per element (`stencils.q1_energy`). With the Dirichlet
    walls imposed, its minimiser is the Q1 finite-element solution; zero flux is natural.
  * residual: the strong form in flux form, mean over the free nodes of (div(nu grad u) + f)^2,
    by the vertex-centred finite-volume stencil (`stencils.flux_divergence`, harmonic faces),
    the very operator of our reference solver, whose residual under it is therefore round-off.

Reference (`test_data`): `data.poisson_fd.solve_poisson`, the same finite-volume scheme as a
sparse matrix, second order (tested). The energy loss's Q1 solution differs from it by O(h^2)
(~1e-4 relative at 64x64), far below the 3e-2 a network reaches.

The network sees log(nu) - log_nu_mean (`network_inputs`), a centred field of O(log_nu_std).
`impose` (`problem.constraint`) makes the walls exact in one of two ways:
  * lift (default): u = u_left (1 - x) + u_right x + 4 s x (1 - x) M(N), N the raw network
    output, s = `lift_scale`, M(N) = sum_{l=0..L} 2^l upsample(2^l x 2^l average of N),
    L = `lift_levels` (M = N for L = 0). The ramp carries the walls and the network learns only
    the interior correction, so it starts at the ramp (relative L2 ~0.23) instead of having to
    build the O(1) ramp and match it to the walls (overwrite, which at 64x64 barely beats the
    ramp's energy). A small s keeps the initial, rough output from swamping the ramp; M is a
    BPX-like multilevel preconditioner: the energy's gradient on a smooth error mode is
    ~(h/H)^2 that on a rough one, and the weighted coarse averages give smooth modes their
    step back. Screening numbers: conf/recipe/poisson_grid_diffnet.yaml.
  * overwrite: u_left / u_right written into the first and last x rows of N, the rest N as is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mpsciml.data.grf_grid import cosine_basis, neumann_sqrt_eigenvalues
from mpsciml.data.poisson_fd import AVERAGES, solve_poisson
from mpsciml.derivatives.stencils import flux_divergence, q1_energy
from mpsciml.grid_metrics import grid_coordinates
from mpsciml.problems.data_free_grid import DataFreeGridProblem

#: the training losses of `problem.loss`
POISSON_LOSSES = ("energy", "residual")
#: the ways `impose` makes the Dirichlet walls exact (`problem.constraint`)
POISSON_CONSTRAINTS = ("lift", "overwrite")
#: log_nu_std above this gives nu spanning more than ~e^12 over a sample: a stiff, meaningless set
MAX_LOG_NU_STD = 3.0


class PoissonGrid(DataFreeGridProblem):
    input_names = ("nu",)
    output_names = ("u",)
    coordinate_names = ("x", "y")
    grid_layout = "nodes"
    term_names: ClassVar[tuple[str, ...]] = ("pde",)
    default_loss_weights: ClassVar[dict[str, float]] = {"pde": 1.0}

    def __init__(
        self,
        grid: int | Sequence[int] = 64,
        batch_size: int = 8,
        n_test: int = 16,
        data_seed: int = 0,
        loss: str = "energy",
        log_nu_mean: float = 0.0,
        log_nu_std: float = 1.0,
        modes: int = 6,
        alpha: float = 2.0,
        tau: float = 3.0,
        source: float = 0.0,
        u_left: float = 1.0,
        u_right: float = 0.0,
        average: str = "harmonic",
        constraint: str = "lift",
        lift_scale: float = 1.0,
        lift_levels: int = 0,
    ) -> None:
        super().__init__(grid, batch_size, n_test, data_seed)
        if loss not in POISSON_LOSSES:
            raise ValueError(
                f"problem.loss={loss!r} is unknown; allowed: {', '.join(POISSON_LOSSES)}"
            )
        if average not in AVERAGES:
            raise ValueError(
                f"problem.average={average!r} is unknown; allowed: {', '.join(AVERAGES)}"
            )
        if constraint not in POISSON_CONSTRAINTS:
            raise ValueError(
                f"problem.constraint={constraint!r} is unknown; allowed: "
                f"{', '.join(POISSON_CONSTRAINTS)}"
            )
        if not (math.isfinite(lift_scale) and lift_scale > 0):
            raise ValueError(f"problem.lift_scale={lift_scale} must be finite and > 0")
        if not 0.0 <= log_nu_std <= MAX_LOG_NU_STD:
            raise ValueError(f"problem.log_nu_std={log_nu_std} must be in [0, {MAX_LOG_NU_STD}]")
        if not (isinstance(modes, int) and 2 <= modes <= min(self.grid)):
            raise ValueError(
                f"problem.modes={modes!r} must be an integer in [2, {min(self.grid)}] (the grid "
                "must resolve the field's cosines)"
            )
        if not (alpha > 0 and tau > 0):
            raise ValueError(f"problem.alpha={alpha}, problem.tau={tau}: both must be > 0")
        for key, value in (("log_nu_mean", log_nu_mean), ("source", source)):
            if not math.isfinite(value):
                raise ValueError(f"problem.{key}={value} must be finite")
        self.loss, self.average, self.constraint = loss, average, constraint
        self.lift_scale = float(lift_scale)
        top = int(math.log2(min(self.grid)))  # the coarsest average spans at most the grid
        if not (isinstance(lift_levels, int) and 0 <= lift_levels <= top):
            raise ValueError(
                f"problem.lift_levels={lift_levels!r} must be an integer in [0, {top}] "
                f"(2^levels <= the smallest grid size, {min(self.grid)})"
            )
        self.lift_levels = lift_levels
        self.log_nu_mean, self.log_nu_std = float(log_nu_mean), float(log_nu_std)
        self.modes, self.alpha, self.tau = modes, float(alpha), float(tau)
        self.source, self.u_left, self.u_right = float(source), float(u_left), float(u_right)
        sqrt_eig = neumann_sqrt_eigenvalues(modes, alpha, tau)
        self._coefficient_std = sqrt_eig * (self.log_nu_std / np.sqrt(np.sum(sqrt_eig**2)))
        self._basis = [cosine_basis(modes, grid_coordinates(n, "nodes").numpy()) for n in self.grid]

    # ---------------------------------------------------------------- fields
    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        xi = rng.standard_normal((self.modes, self.modes)) * self._coefficient_std
        bx, by = self._basis
        psi = bx.T @ xi @ by  # (nx, ny)
        return np.exp(self.log_nu_mean + psi)[None]

    def network_inputs(self, inputs: Tensor) -> Tensor:
        """log(nu) - log_nu_mean: centred, of order log_nu_std, where nu spans decades."""
        return torch.log(inputs) - self.log_nu_mean

    def impose(self, inputs: Tensor, outputs: Tensor) -> Tensor:
        """The walls exact, in the outputs' dtype: lift (u_left (1 - x) + u_right x +
        4 lift_scale x (1 - x) multilevel(N)) or overwrite (the x = 0 and x = 1 rows, dim 2,
        set to u_left / u_right, the rest N)."""
        if self.constraint == "overwrite":
            left = torch.full_like(outputs[:, :, :1], self.u_left)
            right = torch.full_like(outputs[:, :, :1], self.u_right)
            return torch.cat([left, outputs[:, :, 1:-1], right], 2)
        nx = outputs.shape[2]
        x = torch.linspace(0.0, 1.0, nx, dtype=outputs.dtype, device=outputs.device)
        x = x.view(1, 1, nx, *([1] * (outputs.dim() - 3)))
        bubble = (4.0 * self.lift_scale) * x * (1.0 - x)
        bubble[:, :, [0, -1]] = 0.0  # exactly zero on the walls, whatever the rounding of x
        ramp = self.u_left * (1.0 - x) + self.u_right * x
        ramp[:, :, 0], ramp[:, :, -1] = self.u_left, self.u_right
        return ramp + bubble * self.multilevel(outputs)

    def multilevel(self, outputs: Tensor) -> Tensor:
        """sum_l 2^l upsample(average_2^l(N)), l = 0 .. lift_levels: a BPX-like preconditioner.
        The energy's gradient on a smooth error mode of wavelength H is ~(h / H)^2 times that on
        a rough one; summing coarse averages weighted 2^l gives the smooth modes back ~(H/h)^2
        of step size, so they converge with the rough ones."""
        if self.lift_levels == 0:
            return outputs
        size = outputs.shape[2:]
        total = outputs
        for level in range(1, self.lift_levels + 1):
            coarse = F.avg_pool2d(outputs, 2**level, ceil_mode=True)
            total = total + 2**level * F.interpolate(
                coarse, size=size, mode="bilinear", align_corners=True
            )
        return total

    # ------------------------------------------------------------------ loss
    def residual_terms(self, inputs: Tensor, outputs: Tensor) -> dict[str, Tensor]:
        self.check_fields(inputs, outputs)
        u, nu = self.assembled(outputs, inputs)
        spacings = self.spacings(tuple(u.shape[2:]))
        if self.loss == "energy":
            return {"pde": q1_energy(u, nu, spacings, self.source)}
        residual = flux_divergence(u, nu, spacings, self.average) + self.source
        return {"pde": residual[:, :, 1:-1].square().mean((1, 2, 3))}

    # ------------------------------------------------------------- reference
    def solve_reference(self, inputs: np.ndarray, progress: bool = True) -> np.ndarray:
        u = solve_poisson(
            inputs[:, 0], self.source, self.u_left, self.u_right, self.average, progress=progress
        )
        return u[:, None]

    def reference_params(self) -> dict[str, Any]:
        return {
            "log_nu_mean": self.log_nu_mean,
            "log_nu_std": self.log_nu_std,
            "modes": self.modes,
            "alpha": self.alpha,
            "tau": self.tau,
            "source": self.source,
            "u_left": self.u_left,
            "u_right": self.u_right,
            "average": self.average,
        }
