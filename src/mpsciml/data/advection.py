"""Advection operator data: u_t + u_x = 0 on the unit circle (periodic x), u(x, 0) = v(x).

The exact solution is the initial condition shifted, u(x, t) = v((x - t) mod 1), so the dataset
needs no solver, only an initial condition that can be evaluated anywhere. A periodic Gaussian
random field gives one exactly: with the periodic RBF kernel

    k(x, x') = exp(-sin^2(pi (x - x')) / (2 pi^2 l^2)) = exp(a (cos(2 pi (x - x')) - 1)),

a = 1 / (4 pi^2 l^2), which for |x - x'| << 1 is the RBF kernel of length scale l (the same l as
the other datasets' GRFs), the generating function of the modified Bessel functions,
exp(a cos q) = I_0(a) + 2 sum_k I_k(a) cos(k q), turns k into a cosine series with weights
lambda_0 = e^-a I_0(a), lambda_k = 2 e^-a I_k(a). So v(x) = sqrt(lambda_0) xi_0 +
sum_k sqrt(lambda_k) (xi_k cos 2 pi k x + eta_k sin 2 pi k x), with standard normal xi, eta,
has exactly that covariance, truncated where
lambda_k falls below rel_tol (the variance given up is reported). A random Fourier series of
this kind is smooth and periodic by construction, and evaluating it at x - t is exact.

Layout (aligned, the paper's setting nx = nt = 40): branch (N, nx) = v at the nx grid points
x_j = j / nx (the sensors), trunk (nx * nt, 2) columns (x, t) with t fastest, outputs
(N, nx * nt) in the trunk's order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ive

from mpsciml.data.cache import builder_params, cached

NAME = "advection"
VERSION = 1  # bump whenever the generated numbers change


class PeriodicGaussianRandomField:
    """Random Fourier series on [0, 1) with the periodic RBF covariance (see module docstring)."""

    def __init__(self, length_scale: float = 0.2, rel_tol: float = 1e-12) -> None:
        if not length_scale > 0.0:
            raise ValueError(f"length_scale must be positive, got {length_scale}")
        a = 1.0 / (4.0 * np.pi**2 * length_scale**2)
        # ive(k, a) = I_k(a) e^-a: decays like a^k / k! beyond k ~ a; 64 + 4a terms is plenty.
        weights = ive(np.arange(int(64 + 4 * a)), a)
        weights[1:] *= 2.0
        keep = weights >= rel_tol * weights[0]
        self.length_scale = float(length_scale)
        self.n_frequencies = int(np.argmin(keep)) if not keep.all() else keep.size
        self.weights = weights[: self.n_frequencies]
        self.truncated_variance = max(1.0 - float(self.weights.sum()), 0.0)

    def kernel(self, distance: np.ndarray) -> np.ndarray:
        scale = 2.0 * np.pi**2 * self.length_scale**2
        return np.exp(-(np.sin(np.pi * distance) ** 2) / scale)

    def sample_coefficients(self, n: int, seed: int | np.random.SeedSequence) -> np.ndarray:
        """(n, 2, K) standard normal coefficients scaled by sqrt(lambda_k): [cos, sin] parts."""
        rng = np.random.default_rng(seed)
        coefficients = rng.standard_normal((n, 2, self.n_frequencies)) * np.sqrt(self.weights)
        coefficients[:, 1, 0] = 0.0  # sin(0) = 0: the constant mode has a cosine part only
        return coefficients

    def evaluate(self, coefficients: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Fields at points: coefficients (n, 2, K), points (n, P) or (P,) -> (n, P)."""
        angle = 2.0 * np.pi * np.multiply.outer(points, np.arange(self.n_frequencies))
        cos, sin = np.cos(angle), np.sin(angle)
        if points.ndim == 1:
            return coefficients[:, 0] @ cos.T + coefficients[:, 1] @ sin.T
        return np.einsum("nk,npk->np", coefficients[:, 0], cos) + np.einsum(
            "nk,npk->np", coefficients[:, 1], sin
        )


def make_advection_data(
    n_functions: int,
    nx: int = 40,
    nt: int = 40,
    length_scale: float = 0.2,
    t_final: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Initial conditions from the periodic GRF and their exact shifted solutions (float64)."""
    if n_functions < 1 or nx < 2 or nt < 2:
        raise ValueError(f"need n_functions >= 1, nx, nt >= 2; got {n_functions}, {nx}, {nt}")
    field = PeriodicGaussianRandomField(length_scale)
    coefficients = field.sample_coefficients(n_functions, np.random.SeedSequence(seed))
    x = np.arange(nx) / nx
    t = np.linspace(0.0, t_final, nt)
    xx, tt = np.meshgrid(x, t, indexing="ij")  # t fastest in the flattened order
    shifted = np.mod(xx - tt, 1.0).ravel()
    return {
        "branch": field.evaluate(coefficients, x),
        "sensors": x,
        "x": x,
        "t": t,
        "trunk": np.stack([xx.ravel(), tt.ravel()], axis=1),
        "outputs": field.evaluate(coefficients, shifted),
    }


def advection_params(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The cache key of `make_advection_data(*args, **kwargs)`: its arguments plus VERSION."""
    return builder_params(make_advection_data, VERSION, *args, **kwargs)


def cached_advection_data(
    n_functions: int,
    nx: int = 40,
    nt: int = 40,
    length_scale: float = 0.2,
    t_final: float = 1.0,
    seed: int = 0,
    *,
    root: Path | None = None,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """make_advection_data through the on-disk cache (see cache.cached)."""
    args = (n_functions, nx, nt, length_scale, t_final, seed)
    return cached(
        NAME, advection_params(*args), lambda: make_advection_data(*args), root, force=force
    )
