"""The antiderivative operator G(v)(x) = int_0^x v(s) ds, the first DeepONet benchmark.

Inputs v are Gaussian random fields (see grf.py), seen by the branch net at m equally spaced
sensors. What "exact" means here: each v is a cubic spline v_h through its values on the fine
GRF grid, and the branch inputs are v_h at the sensors. The targets are the antiderivative of
that same piecewise cubic, which is a piecewise quartic with closed-form coefficients
(scipy's PPoly.antiderivative accumulates the exact integral of every cell). So u is the
antiderivative of the very function the branch net samples, with rounding as the only error;
there is no quadrature step. (v_h differs from the underlying smooth field by <= 3e-10 (measured),
which changes which function is in the dataset, not whether (v, u) is a correct pair.)

Two layouts, as in DeepXDE's examples:
- aligned: every function shares the same P query points (an equally spaced grid with both
  ends): branch (N, m), trunk (P, 1), outputs (N, P);
- unaligned: each row is one (function, random point) pair, P' uniform points per function:
  branch (N*P', m), trunk (N*P', 1), outputs (N*P', 1), with function_index (N*P',) telling
  which function a row belongs to.
The functions depend only on the seed, not on the layout, so the two layouts with one seed
describe the same N functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy.interpolate import PPoly

from mpsciml.data.cache import builder_params, cached
from mpsciml.data.grf import GaussianRandomField, sensor_points

NAME = "antiderivative"
VERSION = 1  # bump whenever the generated numbers change
Layout = Literal["aligned", "unaligned"]


def antiderivative_interpolant(grf: GaussianRandomField, values: np.ndarray) -> PPoly:
    """u(x) = int_0^x v_h(s) ds for the cubic spline v_h of each field; u(0) = 0 by construction.

    Evaluating the result at points p gives (n, len(p)) for values of shape (n, n_grid).
    """
    return grf.interpolant(values).antiderivative()


def evaluate_pairs(pp: PPoly, rows: np.ndarray, points: np.ndarray) -> np.ndarray:
    """pp's function rows[i] at points[i], without evaluating every function at every point.

    The unaligned layout needs one point per (function, sample); the vectorised PPoly call would
    evaluate all N functions at all N*P' points and keep a diagonal, N times the work.
    """
    if pp.c.ndim != 3:
        raise ValueError("expected a PPoly over a batch of functions (coefficients (k, m, n))")
    points = np.asarray(points, dtype=np.float64)
    rows = np.asarray(rows)
    n_cells = pp.x.size - 1
    cell = np.clip(np.searchsorted(pp.x, points, side="right") - 1, 0, n_cells - 1)
    s = points - pp.x[cell]
    out = pp.c[0, cell, rows].copy()
    for k in range(1, pp.c.shape[0]):
        out = out * s + pp.c[k, cell, rows]
    return out


def make_antiderivative_data(
    n_functions: int,
    n_points: int,
    m: int = 100,
    length_scale: float = 0.2,
    layout: Layout = "aligned",
    seed: int = 0,
    n_grid: int = 1001,
) -> dict[str, np.ndarray]:
    """Build an antiderivative dataset (float64 arrays; see the module docstring for layouts).

    n_points is P (shared grid) for "aligned" and P' (random points per function) for
    "unaligned". Keys: branch, trunk, outputs, sensors, and function_index when unaligned.
    """
    if n_functions < 1 or n_points < 1:
        raise ValueError(f"need n_functions, n_points >= 1, got {n_functions}, {n_points}")
    if layout not in ("aligned", "unaligned"):
        raise ValueError(f"layout must be 'aligned' or 'unaligned', got {layout!r}")
    functions_seed, points_seed = np.random.SeedSequence(seed).spawn(2)
    grf = GaussianRandomField(length_scale=length_scale, n_grid=n_grid)
    _, values = grf.sample(n_functions, functions_seed)
    sensors = sensor_points(m)
    branch = grf.interpolate(values, sensors)
    u = antiderivative_interpolant(grf, values)

    if layout == "aligned":
        trunk = np.linspace(0.0, 1.0, n_points)
        return {
            "branch": branch,
            "trunk": trunk[:, None],
            "outputs": u(trunk),
            "sensors": sensors,
        }

    rows = np.repeat(np.arange(n_functions), n_points)
    points = np.random.default_rng(points_seed).uniform(0.0, 1.0, rows.size)
    return {
        "branch": branch[rows],
        "trunk": points[:, None],
        "outputs": evaluate_pairs(u, rows, points)[:, None],
        "sensors": sensors,
        "function_index": rows,
    }


def antiderivative_params(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The cache key of `make_antiderivative_data(*args, **kwargs)`: its arguments plus VERSION.

    Public so that anything reading the cache (the generate_data script, a DataModule) keys
    files exactly as the builder does.
    """
    return builder_params(make_antiderivative_data, VERSION, *args, **kwargs)


def cached_antiderivative_data(
    n_functions: int,
    n_points: int,
    m: int = 100,
    length_scale: float = 0.2,
    layout: Layout = "aligned",
    seed: int = 0,
    n_grid: int = 1001,
    *,
    root: Path | None = None,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """make_antiderivative_data through the on-disk cache (see cache.cached)."""
    args = (n_functions, n_points, m, length_scale, layout, seed, n_grid)
    return cached(
        NAME,
        antiderivative_params(*args),
        lambda: make_antiderivative_data(*args),
        root,
        force=force,
    )
