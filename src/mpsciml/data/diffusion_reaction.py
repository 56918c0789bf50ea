"""Finite-difference reference solutions of the diffusion-reaction operator benchmark.

    u_t = D u_xx + k u^2 + v(x),   x in [0, 1], t in [0, T],   u(x, 0) = 0,  u(0, t) = u(1, t) = 0

with D = 0.01, k = -0.01 and T = 1 by default (the DeepONet diffusion-reaction benchmark; the
operator maps the source v, a Gaussian random field, to the solution u). The sign of k follows
our issue; the published setups write k = +0.01, so compare with them via reaction=0.01.

Scheme: second-order central differences in space; in time, Crank-Nicolson for diffusion and
the source (the source is averaged over each step) with second-order Adams-Bashforth for the
reaction term (the "CNAB2" IMEX scheme), second order in both dx and dt.

Why the reaction is explicit. The stiffness is all in diffusion (eigenvalues up to 4 D / dx^2),
so that part must be implicit. The reaction rate |d(k u^2)/du| = 2 |k u| is about 0.06 for the
GRF sources, so an explicit treatment costs no stability at any sensible dt (a guard raises if
dt * 2 |k| max|u| ever exceeds 0.5). In exchange the implicit matrix I - dt/2 D L is linear,
constant in time and the same for every source function, so one tridiagonal solve per step
(scipy.linalg.solve_banded with one right-hand-side column per function) advances the whole
batch. Newton on a fully implicit CN step would need a different matrix per function and per
iteration. The first step uses the reaction at t = 0 alone (forward Euler for that term),
an O(dt^2) local error made once, so the global order stays two.

Accuracy of the dataset grid (nx = nt = 101) for GRF sources with l = 0.2, measured on 20
sources against the same scheme with 16x finer dx and 160x finer dt: max error 4.2e-4 on
solutions of max size ~3 (~1.5e-4 relative), almost all spatial truncation error in the
interior; at t = 1 it falls 4x per halving of dx = dt (1.0e-4 at 201, 2.5e-5 at 401). The
source v does not vanish at the walls while u is held at 0, so at early times u has a boundary
layer of width sqrt(D t) that no grid resolves for t < dx^2 / D; there the max error stays
3-4e-4 under refinement (CN damps the stiff modes only by (1 - 2a) / (1 + 2a), a = D dt /
dx^2). Starting with backward-Euler half steps (Rannacher) was tried and made that error 2-4x
larger, so it is not used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.linalg import solve_banded

from mpsciml.data.cache import builder_params, cached
from mpsciml.data.grf import GaussianRandomField, sensor_points

NAME = "diffusion_reaction"
VERSION = 1  # bump whenever the generated numbers change
Source = np.ndarray | Callable[[np.ndarray, float], np.ndarray]

# Largest dt * |d(reaction)/du| accepted for the explicit reaction term; AB2 is stable well
# beyond the values the benchmark produces (~6e-4), so hitting this means a mis-set problem.
_MAX_EXPLICIT_RATE = 0.5


def _source_fn(source: Source, x: np.ndarray) -> tuple[Callable[[float], np.ndarray], int, bool]:
    """Normalise the source to t -> interior values (n_interior, batch); return it, batch, is_1d."""
    if callable(source):
        first = np.asarray(source(x, 0.0), dtype=np.float64)
        is_1d = first.ndim == 1

        def at(t: float) -> np.ndarray:
            f = np.broadcast_to(np.asarray(source(x, t), dtype=np.float64), first.shape)
            return np.atleast_2d(f)[:, 1:-1].T

    else:
        first = np.asarray(source, dtype=np.float64)
        is_1d = first.ndim == 1
        fixed = np.ascontiguousarray(np.atleast_2d(first)[:, 1:-1].T)

        def at(t: float) -> np.ndarray:
            return fixed

    if first.ndim not in (1, 2) or first.shape[-1] != x.size:
        raise ValueError(
            f"source must have shape (nx,) or (batch, nx) with nx={x.size}, got {first.shape}"
        )
    return at, (1 if is_1d else first.shape[0]), is_1d


def solve_diffusion_reaction(
    source: Source,
    nx: int = 101,
    nt: int = 101,
    *,
    diffusion: float = 0.01,
    reaction: float = -0.01,
    t_final: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve on a uniform (nt, nx) grid including t = 0 and both walls; return (x, t, u).

    source: time-independent values on the grid, (nx,) or (batch, nx), or a callable
    f(x, t) returning either shape (a manufactured-solution forcing, for tests). u has shape
    (nt, nx) for a 1-D source and (batch, nt, nx) for a batch.
    """
    if nx < 3 or nt < 2:
        raise ValueError(f"need nx >= 3 and nt >= 2, got nx={nx}, nt={nt}")
    if not diffusion > 0.0 or not t_final > 0.0:
        raise ValueError(f"diffusion and t_final must be positive, got {diffusion}, {t_final}")
    x = np.linspace(0.0, 1.0, nx)
    t = np.linspace(0.0, t_final, nt)
    dx, dt = x[1] - x[0], t[1] - t[0]
    f_at, batch, is_1d = _source_fn(source, x)

    r = diffusion * dt / (2.0 * dx * dx)
    n_in = nx - 2
    banded = np.empty((3, n_in))
    banded[0] = -r  # superdiagonal (first entry unused)
    banded[1] = 1.0 + 2.0 * r
    banded[2] = -r  # subdiagonal (last entry unused)

    u = np.zeros((batch, nt, nx))
    cur = np.zeros((n_in, batch))
    react_prev = reaction * cur * cur
    f_prev = f_at(t[0])
    lap = np.empty_like(cur)
    for n in range(nt - 1):
        f_next = f_at(t[n + 1])
        react = reaction * cur * cur
        explicit = react if n == 0 else 1.5 * react - 0.5 * react_prev
        lap[...] = -2.0 * cur
        lap[1:] += cur[:-1]
        lap[:-1] += cur[1:]
        rhs = cur + r * lap + dt * explicit + (0.5 * dt) * (f_prev + f_next)
        cur = solve_banded((1, 1), banded, rhs, overwrite_b=True, check_finite=False)
        react_prev, f_prev = react, f_next
        u[:, n + 1, 1:-1] = cur.T

    peak = float(np.max(np.abs(u))) if u.size else 0.0
    if not np.isfinite(peak) or dt * 2.0 * abs(reaction) * peak > _MAX_EXPLICIT_RATE:
        raise ValueError(
            f"explicit reaction step unsafe: dt * 2|k| max|u| = {dt * 2 * abs(reaction) * peak:.3g}"
            f" (limit {_MAX_EXPLICIT_RATE}); use a larger nt"
        )
    return x, t, (u[0] if is_1d else u)


def make_diffusion_reaction_data(
    n_functions: int,
    m: int = 50,
    nx: int = 101,
    nt: int = 101,
    length_scale: float = 0.2,
    seed: int = 0,
    n_grid: int = 1001,
    diffusion: float = 0.01,
    reaction: float = -0.01,
) -> dict[str, np.ndarray]:
    """Sources from the GRF and their solutions (float64).

    Keys: branch (N, m) v at the sensors; sensors (m,); source (N, nx) v on the solver grid
    (both from the same spline, for physics-informed residuals); x (nx,); t (nt,);
    u (N, nt, nx); trunk (nt * nx, 2) columns (x, t) in the order of u.reshape(N, -1)
    (t-major), so outputs for a DeepONet are u.reshape(N, -1).
    """
    if n_functions < 1:
        raise ValueError(f"need n_functions >= 1, got {n_functions}")
    grf = GaussianRandomField(length_scale=length_scale, n_grid=n_grid)
    _, values = grf.sample(n_functions, np.random.SeedSequence(seed))
    x_grid = np.linspace(0.0, 1.0, nx)
    spline = grf.interpolant(values)
    sensors = sensor_points(m)
    source = spline(x_grid)
    x, t, u = solve_diffusion_reaction(
        source, nx, nt, diffusion=diffusion, reaction=reaction, t_final=1.0
    )
    tt, xx = np.meshgrid(t, x, indexing="ij")
    return {
        "branch": spline(sensors),
        "sensors": sensors,
        "source": source,
        "x": x,
        "t": t,
        "u": u,
        "trunk": np.stack([xx.ravel(), tt.ravel()], axis=1),
    }


def diffusion_reaction_params(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The cache key of `make_diffusion_reaction_data(*args, **kwargs)`: its arguments plus VERSION.

    Public so that anything reading the cache (the generate_data script, a DataModule) keys
    files exactly as the builder does.
    """
    return builder_params(make_diffusion_reaction_data, VERSION, *args, **kwargs)


def cached_diffusion_reaction_data(
    n_functions: int,
    m: int = 50,
    nx: int = 101,
    nt: int = 101,
    length_scale: float = 0.2,
    seed: int = 0,
    n_grid: int = 1001,
    diffusion: float = 0.01,
    reaction: float = -0.01,
    *,
    root: Path | None = None,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """make_diffusion_reaction_data through the on-disk cache (see cache.cached)."""
    args = (n_functions, m, nx, nt, length_scale, seed, n_grid, diffusion, reaction)
    return cached(
        NAME,
        diffusion_reaction_params(*args),
        lambda: make_diffusion_reaction_data(*args),
        root,
        force=force,
    )
