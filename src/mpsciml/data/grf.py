"""Gaussian random fields on [0, 1]: the input functions of the DeepONet benchmarks.

Zero mean, squared-exponential covariance k(x, x') = exp(-(x - x')^2 / (2 l^2)), sampled on a
fine uniform grid and turned into functions of x by a cubic spline through the grid values.

Why a truncated Karhunen-Loeve expansion and not Cholesky with jitter. On a fine grid the
kernel matrix is numerically singular: with l = 0.2 and 1001 points its eigenvalues fall from
440 to 3e-12 by the 20th mode, and the remaining ~980 are rounding noise (some negative).
Cholesky therefore needs a jitter eps (1e-13 is enough here), which adds white noise of
standard deviation ~sqrt(eps) to every grid value: rough at the grid scale (third differences
of samples come out 3x larger than the smooth field's), and tied to n_grid, so the "same"
field changes character when the grid is refined. Instead the field is written as
f(x) = sum_k sqrt(mu_k) psi_k(x) xi_k over the eigenpairs of the covariance operator with
mu_k >= rel_tol * mu_max, i.e. the modes resolved well above rounding. The samples are then
finite sums of smooth functions (smooth to rounding), and the variance given up is the sum of
the dropped eigenvalues, reported as `truncated_variance` (about 4e-13 for the defaults, far
below any error the datasets care about).

The eigenpairs come from the Nystrom method: Gauss-Legendre quadrature with n_q >= 12 / l
nodes turns the integral operator into a small symmetric matrix (64 x 64 for l = 0.2; a
millisecond to diagonalise, where the full 1001 x 1001 grid matrix took 0.2 s to several
seconds with contended BLAS threads), and the Nystrom formula psi_k(x) = (1 / mu_k) int k(x, s)
psi_k(s) ds extends each mode to any x. The grid covariance reproduces the kernel to 1e-11.
A side benefit: the modes do not depend on n_grid, so one seed gives the same field on any
grid, only sampled more or less finely.

Reproducibility: an eigenvector is defined only up to sign, and LAPACK builds may differ in the
sign they return, so each mode is normalised to be positive at its first quadrature node of at
least half its peak magnitude. Standard normals are drawn for n_q modes per field and the
first r used, so a machine that keeps one mode more or less changes only that mode's
(negligible) contribution, not the whole sample.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.polynomial.legendre import leggauss
from scipy.interpolate import CubicSpline

SeedLike = int | np.random.SeedSequence | np.random.Generator


def rbf_kernel(x: np.ndarray, y: np.ndarray, length_scale: float) -> np.ndarray:
    """Covariance matrix k(x_i, y_j) of the squared-exponential kernel with unit variance."""
    d = np.asarray(x, dtype=np.float64)[:, None] - np.asarray(y, dtype=np.float64)[None, :]
    return np.exp(-(d * d) / (2.0 * length_scale**2))


def _n_quadrature(length_scale: float) -> int:
    """Gauss-Legendre nodes that resolve the kernel: measured exact to rounding at >= 10 / l."""
    return max(64, int(np.ceil(12.0 / length_scale)))


@lru_cache(maxsize=16)
def _kl_modes(length_scale: float, rel_tol: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Nystrom eigenpairs of the covariance operator on [0, 1].

    Returns (nodes (n_q,), weights_times_modes (n_q, r), truncated variance) such that the
    scaled modes at points x are rbf_kernel(x, nodes) @ weights_times_modes.
    """
    z, w = leggauss(_n_quadrature(length_scale))
    nodes, weights = 0.5 * (z + 1.0), 0.5 * w
    sqrt_w = np.sqrt(weights)
    sym = sqrt_w[:, None] * rbf_kernel(nodes, nodes, length_scale) * sqrt_w[None, :]
    mu, vecs = np.linalg.eigh(sym)
    mu, vecs = mu[::-1], vecs[:, ::-1]  # largest first
    keep = mu >= rel_tol * mu[0]
    mu, vecs = mu[keep], vecs[:, keep]
    peak = np.abs(vecs).max(axis=0)
    first_big = np.argmax(np.abs(vecs) >= 0.5 * peak, axis=0)
    vecs = vecs * np.sign(vecs[first_big, np.arange(vecs.shape[1])])
    # sqrt(mu) psi(x) = (1 / sqrt(mu)) sum_j k(x, s_j) sqrt(w_j) e_j, with e the unit eigenvector.
    coef = sqrt_w[:, None] * vecs / np.sqrt(mu)
    coef.setflags(write=False)
    dropped = max(1.0 - float(mu.sum()), 0.0)  # the operator's trace is int k(x, x) dx = 1
    return nodes, coef, dropped


class GaussianRandomField:
    """Zero-mean 1-D GRF on [0, 1] with an RBF kernel, sampled on a uniform grid of n_grid points.

    Samples are arrays of grid values; `interpolant` turns them into functions (cubic splines
    through the grid values, so interpolation is exact at the grid points and O(h^4) accurate
    for the underlying smooth field between them).
    """

    def __init__(self, length_scale: float = 0.2, n_grid: int = 1001, rel_tol: float = 1e-12):
        if not length_scale > 0.0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        if n_grid < 4:
            raise ValueError(f"n_grid must be at least 4 for a cubic spline, got {n_grid}")
        if not 0.0 < rel_tol < 1.0:
            raise ValueError(f"rel_tol must be in (0, 1), got {rel_tol}")
        self.length_scale = float(length_scale)
        self.n_grid = int(n_grid)
        self.rel_tol = float(rel_tol)
        self.grid = np.linspace(0.0, 1.0, self.n_grid)

    def modes(self, points: np.ndarray) -> np.ndarray:
        """The kept modes sqrt(mu_k) psi_k at points, (len(points), n_modes); fields are
        modes @ xi for standard normal xi."""
        nodes, coef, _ = _kl_modes(self.length_scale, self.rel_tol)
        return rbf_kernel(points, nodes, self.length_scale) @ coef

    @property
    def n_modes(self) -> int:
        """Number of Karhunen-Loeve modes kept above the rounding floor."""
        return _kl_modes(self.length_scale, self.rel_tol)[1].shape[1]

    @property
    def truncated_variance(self) -> float:
        """Variance given up by the truncation, averaged over [0, 1] (the covariance's bias)."""
        return _kl_modes(self.length_scale, self.rel_tol)[2]

    def covariance(self) -> np.ndarray:
        """The covariance the samples actually have on the grid (the truncated kernel)."""
        modes = self.modes(self.grid)
        return modes @ modes.T

    def sample(self, n: int, seed: SeedLike) -> tuple[np.ndarray, np.ndarray]:
        """Draw n independent fields; return (grid (n_grid,), values (n, n_grid)).

        The same seed gives the same fields (on any n_grid); a Generator is consumed, so
        successive calls on one Generator give fresh fields.
        """
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        modes = self.modes(self.grid)
        rng = np.random.default_rng(seed)
        xi = rng.standard_normal((n, _n_quadrature(self.length_scale)))[:, : modes.shape[1]]
        return self.grid.copy(), xi @ modes.T

    def interpolant(self, values: np.ndarray) -> CubicSpline:
        """Cubic spline through the grid values of each field (vectorised over the first axis)."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[-1] != self.n_grid:
            raise ValueError(f"values must end in n_grid={self.n_grid}, got {values.shape}")
        return CubicSpline(self.grid, values, axis=-1)

    def interpolate(self, values: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Every field at every point: values (n, n_grid), points (p,) -> (n, p)."""
        points = np.asarray(points, dtype=np.float64)
        if points.size and (points.min() < 0.0 or points.max() > 1.0):
            raise ValueError("points must lie in [0, 1]; the fields are not defined outside")
        return self.interpolant(values)(points)

    def at_sensors(self, values: np.ndarray, m: int) -> np.ndarray:
        """Fields at m equally spaced sensors including both ends (the branch input), (n, m)."""
        return self.interpolate(values, sensor_points(m))


def sensor_points(m: int) -> np.ndarray:
    """The m equally spaced sensor locations on [0, 1], both ends included."""
    if m < 2:
        raise ValueError(f"need at least 2 sensors, got {m}")
    return np.linspace(0.0, 1.0, m)
