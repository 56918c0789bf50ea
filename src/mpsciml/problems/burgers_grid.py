"""Space-time Burgers, data-free on a grid (DiffNet's tool, Botelho et al.):

    u_t + u u_x = nu u_xx   on x in [0, L], t in [0, T],   u(x, 0) = b(x),   periodic in x,
    b(x) = sum_k w_k (1 - cos(2 pi c_k x / L)) / 2,

with per sample `n_cosines` integer frequencies c_k uniform in [1, max_frequency] and weights
w_k > 0 summing to 1 (so 0 <= b <= 1). nu = 0 is the inviscid equation (shocks form at
t = 1 / max(-b')). The network maps b, broadcast over t as one channel on the (nx, nt)
space-time grid, to u(x, t) there: nodes x_i = i L / (nx - 1), t_j = j T / (nt - 1) (tensor
dim 2 is x, dim 3 is t, layout "nodes").

Why periodic: every raised cosine with an integer c is L-periodic, so a periodic interval is the
domain these initial conditions describe; Dirichlet u = 0 walls would be wrong for the
inviscid equation at the outflow wall (an entropy solution leaves through it with u > 0). The
last x node repeats the first (x = L is x = 0), which is where the boundary term lives.

Loss terms (each per sample, a mean over its nodes; `default_loss_weights` 64 for boundary and
initial, the DiffNet tool's choice, 1 for pde):
  * pde: (u_t + (u^2 / 2)_x - nu u_xx)^2 at the nodes x_0 .. x_{nx-2}, t_1 .. t_{nt-1}: the
    conservative form, central differences with wrap-around in x (`stencils`, periodic), central
    in t with the second-order one-sided difference at t = T;
  * boundary: (u(0, t) - u(L, t))^2 over t: the repeated node agrees with the first;
  * initial: (u(x, 0) - b(x))^2 over x.
No hard constraint (`impose` is the identity): the tool weights soft terms.

Reference (`test_data`): `data.burgers_godunov.solve_burgers` (MUSCL-Godunov finite volumes,
the viscous term split off and propagated exactly by FFT) on `refine` x (nx - 1) periodic cells
centred on the nodes, started from the exact cell averages of b (b is a trigonometric
polynomial, recovered exactly from its nodes by an FFT when nx - 1 > 2 max_frequency), sampled
at every `refine`-th cell and at the t nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from mpsciml.data.burgers_godunov import solve_burgers
from mpsciml.derivatives.stencils import first_derivative, second_derivative
from mpsciml.problems.data_free_grid import DataFreeGridProblem


class BurgersGrid(DataFreeGridProblem):
    input_names = ("b",)
    output_names = ("u",)
    coordinate_names = ("x", "t")
    grid_layout = "nodes"
    #: 2: the reference's viscous term by Strang splitting (exact FFT propagator)
    reference_version: ClassVar[int] = 2
    term_names: ClassVar[tuple[str, ...]] = ("pde", "boundary", "initial")
    default_loss_weights: ClassVar[dict[str, float]] = {
        "pde": 1.0,
        "boundary": 64.0,
        "initial": 64.0,
    }

    def __init__(
        self,
        grid: int | Sequence[int] = 64,
        batch_size: int = 8,
        n_test: int = 16,
        data_seed: int = 0,
        nu: float = 0.01,
        length: float = 1.0,
        final_time: float = 0.5,
        n_cosines: int = 2,
        max_frequency: int = 3,
        refine: int = 4,
    ) -> None:
        super().__init__(grid, batch_size, n_test, data_seed)
        if not (math.isfinite(nu) and nu >= 0.0):
            raise ValueError(f"problem.nu={nu} must be finite and >= 0 (0: inviscid)")
        for key, value in (("length", length), ("final_time", final_time)):
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"problem.{key}={value} must be finite and > 0")
        if not (isinstance(n_cosines, int) and n_cosines >= 1):
            raise ValueError(f"problem.n_cosines={n_cosines!r} must be an integer >= 1")
        nx = self.grid[0]
        if not (isinstance(max_frequency, int) and 1 <= max_frequency < (nx - 1) / 2):
            raise ValueError(
                f"problem.max_frequency={max_frequency!r} must be an integer in [1, "
                f"{math.ceil((nx - 1) / 2) - 1}] (the grid's nx = {nx} must resolve it)"
            )
        if not (isinstance(refine, int) and refine >= 1):
            raise ValueError(f"problem.refine={refine!r} must be an integer >= 1")
        self.nu, self.length, self.final_time = float(nu), float(length), float(final_time)
        self.n_cosines, self.max_frequency, self.refine = n_cosines, max_frequency, refine
        self._x = np.arange(nx) * (self.length / (nx - 1))

    def domain_lengths(self) -> tuple[float, ...]:
        return (self.length, self.final_time)

    # ---------------------------------------------------------------- fields
    def sample_parameters(self, rng: np.random.Generator) -> np.ndarray:
        frequencies = rng.integers(1, self.max_frequency + 1, size=self.n_cosines)
        weights = rng.uniform(0.1, 1.0, size=self.n_cosines)
        weights /= weights.sum()
        phase = 2.0 * np.pi * np.multiply.outer(frequencies, self._x) / self.length
        b = weights @ (0.5 * (1.0 - np.cos(phase)))
        return np.repeat(b[None, :, None], self.grid[1], axis=2)

    # ------------------------------------------------------------------ loss
    def residual_terms(self, inputs: Tensor, outputs: Tensor) -> dict[str, Tensor]:
        self.check_fields(inputs, outputs)
        u, b = self.assembled(outputs, inputs)
        hx, ht = self.spacings(tuple(u.shape[2:]))
        cycle = u[:, :, :-1]  # the distinct x nodes of one period
        u_t = first_derivative(cycle, ht, 1)
        flux_x = first_derivative(0.5 * cycle.square(), hx, 0, periodic=True)
        residual = u_t + flux_x
        if self.nu > 0.0:
            residual = residual - self.nu * second_derivative(cycle, hx, 0, periodic=True)
        return {
            "pde": residual[:, :, :, 1:].square().mean((1, 2, 3)),
            "boundary": (u[:, :, 0] - u[:, :, -1]).square().mean((1, 2)),
            "initial": (u[:, :, :, 0] - b[:, :, :, 0]).square().mean((1, 2)),
        }

    # ------------------------------------------------------------- reference
    def fine_cell_averages(self, b_nodes: np.ndarray) -> np.ndarray:
        """(n, refine (nx - 1)) exact averages of b over the fine cells centred on the fine
        nodes, from b at the nx - 1 distinct coarse nodes (n, nx - 1): b's Fourier series (exact:
        a trigonometric polynomial of degree max_frequency < (nx - 1) / 2), each mode times the
        cell average of its exponential, sinc(k h / L)."""
        n_coarse = b_nodes.shape[1]
        m = self.refine * n_coarse
        spectrum = np.fft.rfft(b_nodes, axis=1) / n_coarse
        k = np.arange(spectrum.shape[1])
        spectrum = spectrum * np.sinc(k / m)  # (1/h) int exp(2 pi i k x / L) over a cell
        full = np.zeros((b_nodes.shape[0], m // 2 + 1), dtype=complex)
        full[:, : spectrum.shape[1]] = spectrum
        if n_coarse % 2 == 0:  # the Nyquist mode of the coarse grid is shared by +-k: halve it
            full[:, n_coarse // 2] *= 0.5
        return np.fft.irfft(full * m, n=m, axis=1)

    def solve_reference(self, inputs: np.ndarray, progress: bool = True) -> np.ndarray:
        nt = inputs.shape[3]
        cells = self.fine_cell_averages(inputs[:, 0, :-1, 0])
        times = np.linspace(0.0, self.final_time, nt)
        fine = solve_burgers(cells, self.length, times, self.nu, "periodic", progress=progress)
        coarse = fine[:, :: self.refine]  # (n, nx - 1, nt): the cells centred on the nodes
        return np.concatenate([coarse, coarse[:, :1]], axis=1)[:, None]

    def reference_params(self) -> dict[str, Any]:
        return {
            "nu": self.nu,
            "length": self.length,
            "final_time": self.final_time,
            "n_cosines": self.n_cosines,
            "max_frequency": self.max_frequency,
            "refine": self.refine,
        }

    def coordinates(self, grid: tuple[int, ...]) -> list[Tensor]:
        """x in [0, L] and t in [0, T] at the nodes."""
        return [
            torch.linspace(0.0, length, n, dtype=torch.float64)
            for n, length in zip(grid, self.domain_lengths(), strict=True)
        ]
