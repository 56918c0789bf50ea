"""Inverse Navier-Stokes: learn the two coefficients of the equations from velocity data.

Raissi et al.'s form (the mixed-precision paper's NS-inverse case), unsteady, 2-D, in (x, y, t):

    u_t + C1 (u u_x + v u_y) = -p_x + C2 (u_xx + u_yy)
    v_t + C1 (u v_x + v v_y) = -p_y + C2 (v_xx + v_yy)
    u_x + v_y = 0

with C1 (true value 1) and C2 (the viscosity) unknown (`problem.unknowns`), observations of
(u, v) only (`n_observations` points, optional noise), the pressure never observed, no
boundary or initial condition: the network (u, v, p) fits the data, the residuals hold at
`n_domain` collocation points, and the two coefficients follow.

The data come from an exact solution, a **translating decaying Taylor-Green vortex**
(wavenumber k, drift (U, V)):

    x' = x - U t, y' = y - V t, F = exp(-2 nu k^2 t)
    u = U - cos(k x') sin(k y') F,   v = V + sin(k x') cos(k y') F,
    p = -(cos(2 k x') + cos(2 k y')) F^2 / 4

(Navier-Stokes is Galilean invariant, so the Taylor-Green vortex seen from a frame moving at
-(U, V) is an exact solution too). Why the drift: the resting Taylor-Green vortex does NOT
identify C1. There u.grad(u) is a gradient (of -p), so C1 (u.grad u) = grad(C1 phi) is absorbed
by a pressure p + (1 - C1) phi, which nothing observes: every C1 fits the data and the equations
equally well (`problem.drift=[0,0]` shows it). Taking the curl removes the pressure:
omega_t + C1 u.grad(omega) = C2 laplacian(omega); at rest u.grad(omega) = 0 (omega is a function of
the stream function), so C1 drops out. With the drift, u.grad(omega) = (U, V).grad(omega') is
not zero and is linearly independent of omega' itself (sines against cosines), so the curl
equation fixes C1 = 1 and C2 = nu separately.

The pressure is defined up to a function of time (only its gradient enters), and the network's
is never anchored. The pressure error is therefore measured after the gauge is fixed
honestly: at each time of the evaluation grid the prediction is shifted so that its mean over
that time slice is the reference's (`fix_gauge`); u and v are compared as they are.

`problem.data_path=<file>.mat` trains on a user's snapshots in the layout of Raissi's
cylinder-wake file instead (`ns_inverse_data`); the domain is then the file's box, the error is
measured on the file's grid, and `viscosity` is the true C2 if known (null: not known).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.base import Condition, EvaluationGrid, Problem, require_counts
from mpsciml.problems.coefficients import Coefficients
from mpsciml.problems.ns_inverse_data import Snapshots, read_snapshots
from mpsciml.problems.observations import add_noise, check_noise, observation_condition
from mpsciml.problems.sampling import Box
from mpsciml.seeding import Seed, seed_stream

#: what `problem.unknowns: null` learns: both coefficients, from 0 (Raissi et al.'s start)
LEARNED = {"C1": 0.0, "C2": 0.0}


class NSInverse(Problem):
    input_names = ("x", "y", "t")
    output_names = ("u", "v", "p")

    def __init__(
        self,
        viscosity: float | None = 0.05,
        unknowns: Any = None,
        wavenumber: float = math.pi,
        drift: Sequence[float] = (1.0, 0.5),
        box: Sequence[Sequence[float]] = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        n_observations: int = 2000,
        n_domain: int = 2000,
        noise: float = 0.0,
        data_seed: int = 0,
        data_path: str | None = None,
        sampling: str = "sobol",
        evaluation_grid: tuple[int, int, int] = (21, 21, 11),
        hard_constraints: bool = False,  # no output transform: true is refused by name
    ) -> None:
        super().__init__(sampling, evaluation_grid, hard_constraints)
        require_counts(n_observations=n_observations, n_domain=n_domain)
        if viscosity is not None and not (isinstance(viscosity, int | float) and viscosity > 0):
            raise ValueError(f"problem.viscosity={viscosity!r} is invalid: must be > 0 or null")
        if data_path is None and viscosity is None:
            raise ValueError("problem.viscosity=null: the exact solution needs a viscosity > 0")
        self.coefficients = Coefficients(
            "ns_inverse", {"C1": 1.0, "C2": viscosity}, LEARNED if unknowns is None else unknowns
        )
        self.nu, self.k = viscosity, float(wavenumber)
        self.drift = (float(drift[0]), float(drift[1]))
        self.noise, self.data_seed = check_noise(noise), data_seed
        self.n_observations, self.n_domain = n_observations, n_domain
        self.snapshots: Snapshots | None = None
        if data_path is not None:
            self.snapshots = read_snapshots(data_path)
            axes = self.snapshots.axes
            self.domain = Box([float(a[0]) for a in axes], [float(a[-1]) for a in axes])
        else:
            self.domain = Box(tuple(box[0]), tuple(box[1]))
        self._observations = self._observe()

    @property
    def name(self) -> str:
        return "ns_inverse"

    # ------------------------------------------------------------------ the flow
    def exact(self, points: Tensor) -> Tensor:
        """(u, v, p) of the translating Taylor-Green vortex at float64 points (x, y, t)."""
        assert self.nu is not None
        x, y, t = points[:, 0], points[:, 1], points[:, 2]
        (drift_x, drift_y), k = self.drift, self.k
        xs, ys, decay = x - drift_x * t, y - drift_y * t, torch.exp(-2 * self.nu * k * k * t)
        u = drift_x - torch.cos(k * xs) * torch.sin(k * ys) * decay
        v = drift_y + torch.sin(k * xs) * torch.cos(k * ys) * decay
        p = -(torch.cos(2 * k * xs) + torch.cos(2 * k * ys)) * decay**2 / 4
        return torch.stack([u, v, p], dim=-1)

    def _observe(self) -> Condition:
        """The observations, fixed for the run (a dataset, not collocation points): drawn from
        the data seed, never redrawn with `resample_every`."""
        stream = seed_stream(self.data_seed, "observations")
        if self.snapshots is None:
            points = self.domain.interior(self.n_observations, self.sampling, stream)
            values = self.exact(points)[:, :2]
        else:
            everything = self.snapshots.points
            if self.n_observations > len(everything):
                raise ValueError(
                    f"problem.n_observations={self.n_observations} is more than the "
                    f"{len(everything)} values in problem.data_path"
                )
            generator = torch.Generator().manual_seed(int(stream.generate_state(1)[0]))
            chosen = torch.randperm(len(everything), generator=generator)[: self.n_observations]
            points, values = everything[chosen], self.snapshots.fields[chosen, :2]
        noisy = add_noise(values, self.noise, seed_stream(self.data_seed, "noise"))
        return observation_condition(points, noisy, ("u", "v"))

    # ------------------------------------------------------------------ residuals
    def momentum_and_continuity(self, d: Derivatives) -> dict[str, Tensor]:
        u, v = d["u"], d["v"]
        c1, c2 = self.coefficients("C1", u), self.coefficients("C2", u)
        return {
            "momentum_x": d("u", "t")
            + c1 * (u * d("u", "x") + v * d("u", "y"))
            + d("p", "x")
            - c2 * d.laplacian("u", "x", "y"),
            "momentum_y": d("v", "t")
            + c1 * (u * d("v", "x") + v * d("v", "y"))
            + d("p", "y")
            - c2 * d.laplacian("v", "x", "y"),
            "continuity": d("u", "x") + d("v", "y"),
        }

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        pde = self.domain.interior(self.n_domain, self.sampling, seed_stream(seed, "pde"))
        return {
            "pde": Condition(pde, self.momentum_and_continuity),
            "data": self._observations,
        }

    # ------------------------------------------------------------------ evaluation
    def evaluation_grid(self) -> EvaluationGrid:
        if self.snapshots is None:
            return super().evaluation_grid()
        snapshots = self.snapshots
        return EvaluationGrid(snapshots.points, snapshots.shape, list(snapshots.axes))

    def reference(self, points: Tensor) -> Tensor:
        if self.snapshots is None:
            return self.exact(points)
        grid = self.snapshots.points
        if points.shape != grid.shape or not torch.equal(points, grid):
            raise ValueError("a data file's reference is known on its own grid only")
        return self.snapshots.fields

    def fix_gauge(self, prediction: Tensor, grid: EvaluationGrid, reference: Tensor) -> Tensor:
        """p shifted per time slice (the last input) to the reference's mean on that slice."""
        fixed = prediction.clone()
        shape = (-1, grid.shape[-1])  # points of one time in a column (last input fastest)
        p, p_ref = fixed[:, 2].reshape(shape), reference[:, 2].reshape(shape)
        fixed[:, 2] = (p - p.mean(dim=0) + p_ref.mean(dim=0)).reshape(-1)
        return fixed
