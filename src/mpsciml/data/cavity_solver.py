"""Our reference for the lid-driven cavity: steady Navier-Stokes by Newton's method on a grid.

Unit square, walls at rest, lid (y = 1) moving with velocity U(x), Reynolds number Re = 1 / nu.
The solver works with the stream function psi (u = psi_y, v = -psi_x) and the vorticity
omega = v_x - u_y, on n x n uniform cells (nodes (n+1)^2, h = 1/n), second-order central
differences:

    laplacian(psi) + omega = 0,      u omega_x + v omega_y - nu laplacian(omega) = 0

at the interior nodes, psi = 0 on the walls, and the wall vorticity from Thom's formula
(omega_wall = -2 psi_adjacent / h^2 - 2 U / h on the lid, without the U term on the other walls),
which makes the scheme second-order accurate in the velocities. Why this and not time stepping:
the steady discrete equations are solved directly, to round-off, by Newton's method with a sparse
LU of the exact Jacobian (~6 iterations from rest at Re = 100; 129^2 nodes take seconds), and
higher Reynolds numbers are reached by continuation in Re (100, 250, 400, 630, 1000), so "run to a
steady state" means a residual of 1e-10, not a guess about when a transient has died out.

The lid and its corners (`lid_velocity`), the one choice that defines the problem:
- `lid="regularised"` (the PINN problem's default): U(x) = 1 - (2x - 1)^m with an even m
  (`exponent`, 16 by default). U = 1 in the middle, U -> 0 smoothly at the corners (the 95% point
  is 0.024 from each corner for m = 16), so velocity and pressure are smooth everywhere: the
  reference converges cleanly, the pressure is square-integrable and a smooth network can satisfy
  the boundary condition exactly. It changes the standard flow only near the lid's corners (the
  centreline velocities move by < 0.002 at Re = 100; tests/test_cavity.py).
- `lid="discontinuous"`: the standard cavity of Ghia et al. (1982), U = 1 on the open lid
  0 < x < 1 and U = 0 at the two corner points, which belong to the side walls. The velocity jumps
  there and the pressure is singular (p ~ 1/r), so pointwise errors near those corners do not
  converge; the centreline velocities do, and match Ghia et al.'s table (tests/test_cavity.py).

Pressure is not part of the psi-omega formulation. It is recovered from the momentum equations,
grad p = f with f = -(u.grad)u + nu (omega_y, -omega_x) (since laplacian(u) = -curl omega for a
divergence-free field), as the least-squares solution of the edge differences
(p_b - p_a) / h = (f_a + f_b) . e / 2 over every grid edge: a Neumann Poisson problem, consistent
to second order, with the level fixed by p = 0 at the gauge point (x, y) = (0.5, 0), the middle of
the bottom wall (the PINN problem pins the same point).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from rich.progress import Progress

from mpsciml.data.cache import cached

VERSION = 1
NAME = "lid_driven_cavity"
LIDS = ("regularised", "discontinuous")
GAUGE = (0.5, 0.0)  # where p = 0: the middle of the bottom wall


def lid_velocity(x: Any, lid: str = "regularised", exponent: int = 16) -> Any:
    """U(x) on the lid, for numpy arrays and torch tensors alike (the PINN's boundary condition
    and this solver use this one function, so they cannot disagree)."""
    if lid == "regularised":
        return 1 - (2 * x - 1) ** exponent
    if lid == "discontinuous":
        return ((x > 0) & (x < 1)) * 1.0
    raise ValueError(f"problem.lid={lid!r} is not a lid; allowed: {', '.join(LIDS)}")


def check_lid(lid: str, exponent: int) -> None:
    """One-line errors for the two lid keys, before anything is solved."""
    if lid not in LIDS:
        raise ValueError(f"problem.lid={lid!r} is not a lid; allowed: {', '.join(LIDS)}")
    if not (isinstance(exponent, int) and exponent >= 2 and exponent % 2 == 0):
        raise ValueError(
            f"problem.lid_exponent={exponent!r} is invalid: must be an even integer >= 2 "
            "(U = 1 - (2x-1)^m must vanish at both corners)"
        )


def _grid_operators(n: int) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """Central d/dx, d/dy and the 5-point Laplacian: rows at the interior nodes, columns at all
    (n+1)^2 nodes, node (i, j) (x index i, y index j) numbered i * (n+1) + j."""
    h, m = 1.0 / n, n + 1
    inner = np.arange(1, n)
    ii, jj = (a.ravel() for a in np.meshgrid(inner, inner, indexing="ij"))
    rows = np.arange(ii.size)

    def operator(entries: Iterable[tuple[int, int, float]]) -> sp.csr_matrix:
        r, c, v = [], [], []
        for di, dj, w in entries:
            r.append(rows)
            c.append((ii + di) * m + (jj + dj))
            v.append(np.full(rows.size, w))
        shape = (rows.size, m * m)
        return sp.csr_matrix((np.concatenate(v), (np.concatenate(r), np.concatenate(c))), shape)

    dx = operator([(1, 0, 0.5 / h), (-1, 0, -0.5 / h)])
    dy = operator([(0, 1, 0.5 / h), (0, -1, -0.5 / h)])
    lap = operator([(1, 0, 1 / h**2), (-1, 0, 1 / h**2), (0, 1, 1 / h**2), (0, -1, 1 / h**2)])
    lap = lap + operator([(0, 0, -4 / h**2)])
    return dx, dy, lap


class _Discretisation:
    """The sparse pieces of the psi-omega equations on n x n cells, built once per grid."""

    def __init__(self, n: int, lid: str, exponent: int) -> None:
        self.n, m, h = n, n + 1, 1.0 / n
        self.dx, self.dy, self.lap = _grid_operators(n)
        inner = np.arange(1, n)
        ii, jj = (a.ravel() for a in np.meshgrid(inner, inner, indexing="ij"))
        self.interior = ii * m + jj
        k = self.interior.size
        # embed: interior unknowns -> all nodes (walls zero)
        self.embed = sp.csr_matrix((np.ones(k), (self.interior, np.arange(k))), shape=(m * m, k))
        # Thom's wall vorticity: omega_wall = -2 psi_adjacent / h^2 (- 2 U / h on the lid),
        # for the wall nodes next to the interior (the corners are never used by 5-point stencils)
        index = {node: col for col, node in enumerate(self.interior)}
        r, c = [], []
        for t in range(1, n):
            for wall, adjacent in (
                ((0, t), (1, t)),
                ((n, t), (n - 1, t)),
                ((t, 0), (t, 1)),
                ((t, n), (t, n - 1)),
            ):
                r.append(wall[0] * m + wall[1])
                c.append(index[adjacent[0] * m + adjacent[1]])
        self.thom = sp.csr_matrix((np.full(len(r), -2 / h**2), (r, c)), shape=(m * m, k))
        self.x = np.linspace(0.0, 1.0, m)
        self.lid_u = lid_velocity(self.x, lid, exponent).astype(np.float64)
        self.wall_shift = np.zeros(m * m)
        self.wall_shift[np.arange(1, n) * m + n] = -2 * self.lid_u[1:n] / h

    def residual_and_jacobian(
        self, psi: np.ndarray, omega: np.ndarray, nu: float
    ) -> tuple[np.ndarray, sp.csr_matrix]:
        psi_all = self.embed @ psi
        omega_all = self.embed @ omega + self.thom @ psi + self.wall_shift
        u, v = self.dy @ psi_all, -(self.dx @ psi_all)
        wx, wy = self.dx @ omega_all, self.dy @ omega_all
        f1 = self.lap @ psi_all + omega
        f2 = u * wx + v * wy - nu * (self.lap @ omega_all)
        transport = sp.diags(u) @ self.dx + sp.diags(v) @ self.dy - nu * self.lap
        eye = sp.identity(psi.size, format="csr")
        j11 = self.lap @ self.embed
        j21 = sp.diags(wx) @ self.dy @ self.embed - sp.diags(wy) @ self.dx @ self.embed
        j21 = j21 + transport @ self.thom
        j22 = transport @ self.embed
        jac = sp.bmat([[j11, eye], [j21, j22]], format="csc")
        return np.concatenate([f1, f2]), jac

    def fields(self, psi: np.ndarray, omega: np.ndarray) -> dict[str, np.ndarray]:
        """psi, omega, u, v on all nodes as (n+1, n+1) arrays indexed [i (x), j (y)]."""
        m, h = self.n + 1, 1.0 / self.n
        psi_all = (self.embed @ psi).reshape(m, m)
        omega_all = (self.embed @ omega + self.thom @ psi + self.wall_shift).reshape(m, m)
        u, v = np.zeros((m, m)), np.zeros((m, m))
        u[1:-1, 1:-1] = (psi_all[1:-1, 2:] - psi_all[1:-1, :-2]) / (2 * h)
        v[1:-1, 1:-1] = -(psi_all[2:, 1:-1] - psi_all[:-2, 1:-1]) / (2 * h)
        u[1:-1, -1] = self.lid_u[1:-1]
        return {"psi": psi_all, "omega": omega_all, "u": u, "v": v}


def _pressure(u: np.ndarray, v: np.ndarray, omega: np.ndarray, nu: float) -> np.ndarray:
    """p from grad p = -(u.grad)u + nu (omega_y, -omega_x), least squares over the grid edges,
    p = 0 at GAUGE (see the module docstring)."""
    m = u.shape[0]
    h = 1.0 / (m - 1)

    def d(f: np.ndarray, axis: int) -> np.ndarray:
        return np.gradient(f, h, axis=axis, edge_order=2)

    fx = -(u * d(u, 0) + v * d(u, 1)) - nu * d(omega, 1)
    fy = -(u * d(v, 0) + v * d(v, 1)) + nu * d(omega, 0)
    node = np.arange(m * m).reshape(m, m)
    a_x, b_x = node[:-1, :].ravel(), node[1:, :].ravel()  # edges along x
    a_y, b_y = node[:, :-1].ravel(), node[:, 1:].ravel()  # edges along y
    a, b = np.concatenate([a_x, a_y]), np.concatenate([b_x, b_y])
    rhs = np.concatenate(
        [0.5 * (fx[:-1, :] + fx[1:, :]).ravel(), 0.5 * (fy[:, :-1] + fy[:, 1:]).ravel()]
    )
    edges = np.arange(a.size)
    grad = sp.csr_matrix(
        (
            np.concatenate([np.full(a.size, -1 / h), np.full(a.size, 1 / h)]),
            (np.concatenate([edges, edges]), np.concatenate([a, b])),
        ),
        shape=(a.size, m * m),
    )
    gauge = round(GAUGE[0] * (m - 1)) * m + round(GAUGE[1] * (m - 1))
    keep = np.delete(np.arange(m * m), gauge)
    reduced = grad[:, keep]
    normal = (reduced.T @ reduced).tocsc()
    p = np.zeros(m * m)
    p[keep] = spla.spsolve(normal, reduced.T @ rhs)
    return p.reshape(m, m)


def _continuation(reynolds: float, start: float = 100.0, factor: float = 2.5) -> list[float]:
    """The Reynolds numbers Newton's method passes through on its way to `reynolds`."""
    if reynolds <= start:
        return [reynolds]
    steps = math.ceil(math.log(reynolds / start) / math.log(factor) - 1e-9)
    return [start * (reynolds / start) ** (k / steps) for k in range(steps + 1)]


def solve_cavity(
    resolution: int = 128,
    reynolds: float = 100.0,
    lid: str = "regularised",
    exponent: int = 16,
    tol: float = 1e-10,
    max_newton: int = 30,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """The steady cavity on `resolution` x `resolution` cells (even, so x = 0.5 and the gauge
    are nodes). Returns x (= y) node coordinates and psi, omega, u, v, p as (n+1, n+1) arrays
    indexed [i (x), j (y)], and the final max-norm residual of the discrete equations."""
    if not (isinstance(resolution, int) and resolution >= 4 and resolution % 2 == 0):
        raise ValueError(
            f"problem.resolution={resolution!r} is invalid: must be an even integer >= 4 "
            "(cells per side; x = 0.5 must be a grid line)"
        )
    if not reynolds > 0:
        raise ValueError(f"problem.reynolds={reynolds!r} is invalid: must be > 0")
    check_lid(lid, exponent)
    grid = _Discretisation(resolution, lid, exponent)
    k = grid.interior.size
    state = np.zeros(2 * k)
    stages = _continuation(float(reynolds))
    with Progress(transient=True, disable=not progress) as bar:
        task = bar.add_task(f"cavity reference ({resolution}^2 cells, Re={reynolds:g})", total=None)
        for re in stages:
            nu = 1.0 / re
            for _ in range(max_newton):
                residual, jac = grid.residual_and_jacobian(state[:k], state[k:], nu)
                norm = float(np.abs(residual).max())
                bar.update(task, advance=1, description=f"cavity Re={re:.0f} residual {norm:.1e}")
                if norm < tol * max(1.0, resolution**2):
                    break
                state = state - spla.splu(jac).solve(residual)
            else:
                raise RuntimeError(
                    f"cavity solver: Newton did not converge at Re={re:g} on {resolution}^2 "
                    f"cells (residual {norm:.2e}); try a finer grid"
                )
    out = grid.fields(state[:k], state[k:])
    out["p"] = _pressure(out["u"], out["v"], out["omega"], 1.0 / reynolds)
    out["x"] = grid.x
    out["residual"] = np.array(norm)
    return out


def cavity_reference(
    resolution: int = 128,
    reynolds: float = 100.0,
    lid: str = "regularised",
    exponent: int = 16,
    *,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """solve_cavity through the on-disk cache (data/cache.py), one file per grid, Re and lid."""
    params = {
        "resolution": resolution,
        "reynolds": float(reynolds),
        "lid": lid,
        "exponent": exponent if lid == "regularised" else 0,
        "seed": 0,  # deterministic: no randomness, but the cache key asks for a seed
        "version": VERSION,
    }
    return cached(
        NAME,
        params,
        lambda: solve_cavity(resolution, reynolds, lid, exponent, progress=True),
        force=force,
    )
