"""Our reference solver for the parametric Poisson problem of DiffNet (`problems.poisson_grid`):

    -div(nu grad u) = f  on (0, 1)^2,   u = u_left at x = 0,  u = u_right at x = 1,
    nu du/dn = 0 on y = 0 and y = 1,

on the (nx, ny) nodes x_i = i / (nx - 1), y_j = j / (ny - 1) (array axis 0 is x, axis 1 is y).

Discretisation: the vertex-centred finite-volume scheme that `derivatives.stencils.
flux_divergence` applies as convolutions, assembled here as a scipy.sparse matrix: each node owns
the box of half-way points around it (half a box on a wall, a quarter in a corner), the flux
through a box face is nu_f (u_N - u_P) / h with nu_f the harmonic (or arithmetic) mean of the two
nodes' nu, the wall faces carry no flux, and the equation of node P is its net outflow per box
area = f_P. Dirichlet nodes keep their values. The same operator as the network's residual loss,
so the reference's residual under our stencils is round-off (tested), and second order in the
max norm on smooth nu (tested on a manufactured solution: one-sided wall rows are first-order
consistent, the solution still converges at O(h^2), the usual supraconvergence of vertex-centred
schemes).

Why scipy's sparse LU (spsolve) and not Darcy's preconditioned CG: 64x64 is 4096 unknowns, a
few ms per sample, and the held-out set is small (16 fields by default); the direct solve is
exact to round-off whatever nu's contrast. Measured here (2 shared cores, noisy): 16 fields in
0.9 s at 64x64, ~30 s at 256x256 (~1.5 s per LU); 1024x1024 would take minutes, once (cached).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.progress import track
from scipy import sparse
from scipy.sparse.linalg import spsolve

#: face averages of nu (as `derivatives.stencils.FACE_AVERAGES`)
AVERAGES = ("harmonic", "arithmetic")


def node_spacings(shape: Sequence[int]) -> tuple[float, float]:
    """(hx, hy) of an (nx, ny) node grid on the unit square."""
    nx, ny = shape
    if nx < 3 or ny < 3:
        raise ValueError(f"poisson grid {tuple(shape)}: need >= 3 nodes per side")
    return 1.0 / (nx - 1), 1.0 / (ny - 1)


def _faces(nu: np.ndarray, axis: int, average: str) -> np.ndarray:
    if average not in AVERAGES:
        raise ValueError(f"face average {average!r} is unknown; allowed: {', '.join(AVERAGES)}")
    a = np.moveaxis(nu, axis, 0)
    left, right = a[:-1], a[1:]
    faces = 0.5 * (left + right) if average == "arithmetic" else 2 * left * right / (left + right)
    return np.moveaxis(faces, 0, axis)


def flux_matrix(nu: np.ndarray, average: str = "harmonic") -> sparse.csr_matrix:
    """(nx ny, nx ny) matrix of div(nu grad .) on the node grid (C order: index i ny + j), zero
    flux through every wall: `stencils.flux_divergence` as a matrix."""
    nu = np.asarray(nu, dtype=np.float64)
    nx, ny = nu.shape
    spacing = node_spacings(nu.shape)
    index = np.arange(nx * ny).reshape(nx, ny)
    rows, cols, vals = [], [], []
    for axis, h in enumerate(spacing):
        weight = _faces(nu, axis, average) / h**2  # (faces,) along the axis
        lo = index[:-1] if axis == 0 else index[:, :-1]
        hi = index[1:] if axis == 0 else index[:, 1:]
        n = nu.shape[axis]
        wall = np.ones(n)
        wall[0] = wall[-1] = 2.0  # half boxes on the walls
        shape = (-1, 1) if axis == 0 else (1, -1)
        w_lo = weight * wall[:-1].reshape(shape)
        w_hi = weight * wall[1:].reshape(shape)
        # row lo: + w (u_hi - u_lo); row hi: + w (u_lo - u_hi)
        rows += [lo, lo, hi, hi]
        cols += [hi, lo, lo, hi]
        vals += [w_lo, -w_lo, w_hi, -w_hi]
    return sparse.csr_matrix(
        (
            np.concatenate([v.ravel() for v in vals]),
            (np.concatenate([r.ravel() for r in rows]), np.concatenate([c.ravel() for c in cols])),
        ),
        shape=(nx * ny, nx * ny),
    )


def solve_poisson(
    nu: np.ndarray,
    source: float | np.ndarray = 0.0,
    u_left: float = 1.0,
    u_right: float = 0.0,
    average: str = "harmonic",
    progress: bool = False,
) -> np.ndarray:
    """u on the nodes for nu (nx, ny) or (n, nx, ny), values > 0; source: a constant or node
    values of the same shape. Returns nu's shape."""
    a = np.asarray(nu, dtype=np.float64)
    single = a.ndim == 2
    a = a[None] if single else a
    if a.ndim != 3:
        raise ValueError(f"nu must be (nx, ny) or (n, nx, ny), got {np.shape(nu)}")
    if not (np.all(np.isfinite(a)) and np.all(a > 0)):
        raise ValueError("nu must be finite and > 0 everywhere")
    f = np.broadcast_to(np.asarray(source, dtype=np.float64), a.shape)
    nx, ny = a.shape[1:]
    node_spacings((nx, ny))
    dirichlet = np.zeros((nx, ny), dtype=bool)
    dirichlet[0], dirichlet[-1] = True, True
    free = ~dirichlet.ravel()
    g = np.zeros((nx, ny))
    g[0], g[-1] = u_left, u_right
    g = g.ravel()
    out = np.empty_like(a)
    samples = range(a.shape[0])
    if progress:
        samples = track(samples, description=f"poisson reference {nx}x{ny}", transient=True)
    for k in samples:
        matrix = flux_matrix(a[k], average)
        rhs = -f[k].ravel()[free] - matrix[free][:, ~free] @ g[~free]
        u = g.copy()
        # minimum degree on A^T + A: the matrix is symmetric up to the half-box row scaling, and
        # this ordering factors a 256x256 grid ~20% faster than the default COLAMD (measured)
        u[free] = spsolve(matrix[free][:, free].tocsc(), rhs, permc_spec="MMD_AT_PLUS_A")
        out[k] = u.reshape(nx, ny)
    return out[0] if single else out
