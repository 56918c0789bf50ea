"""Gaussian random fields on grids, as the FNO papers draw them (Li et al. 2021), band-limited.

Two families, both of the form psi ~ N(0, sigma^2 (-Laplacian + tau^2 I)^-alpha) with the
constant mode removed (mean-zero fields), written as a Karhunen-Loeve series in the Laplacian's
eigenfunctions:

* Neumann (zero normal derivative) on (0, 1)^2, for the Darcy coefficient: eigenfunctions
  phi_k(x, y) = c_k1 c_k2 cos(pi k1 x) cos(pi k2 y), c_0 = 1, c_k = sqrt(2) (orthonormal on the
  unit square), eigenvalues pi^2 (k1^2 + k2^2). Li et al.'s GRF.m draws psi = sum_k
  sqrt(lambda_k) xi_k phi_k with sqrt(lambda_k) = tau^(alpha - 1) (pi^2 |k|^2 + tau^2)^(-alpha/2),
  i.e. sigma = tau^(alpha - 1) (3 for alpha = 2, tau = 3): their `s * coef * xi` fed to the
  orthonormal `idct2` is exactly this series at the cell centres. That scale is kept here
  (`neumann_scale`); it does not matter for a coefficient thresholded at 0, but it fixes what
  "psi" is when the threshold is not 0.
* Periodic on the unit torus [0, 1)^d, for Burgers (d = 1) and Navier-Stokes (d = 2):
  eigenfunctions exp(2 pi i k.x), eigenvalues 4 pi^2 |k|^2. Li et al.'s GaussianRF takes the real
  part of sum_k sqrt(2) sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) c_k exp(2 pi i k.x) with complex
  normal c_k (E|c_k|^2 = 1): that is the real field with covariance sigma^2 (-Delta + tau^2)^-alpha
  (mode 0 dropped), the recipe used here. Burgers (their paper): N(0, 625 (-Delta + 25 I)^-2),
  sigma = 25, tau = 5, alpha = 2. Navier-Stokes: their code uses sigma = tau^(alpha - d/2) =
  7^1.5 with tau = 7, alpha = 2.5; the paper writes the covariance as 7^(3/2) (-Delta + 49 I)^-2.5,
  but the code that made their data has sigma^2 = 7^3 in front. We follow the code.

Why band-limited with a fixed number of modes, not "every mode the grid holds" as Li et al.: a
sample is then one function, the same whatever grid it is looked at on. A training set at 32x32
and a zero-shot set at 64x64 come from one distribution (finer grids see the same fields more
densely, not rougher fields), and the spectral solvers can hold the initial condition exactly in
their dealiased band. The band is a parameter of each generator (`modes`).

Randomness: every draw comes from `mpsciml.seeding.numpy_generator(seed, <purpose>)`, one stream
per dataset; the coefficients depend only on (seed, n, modes), never on the evaluation grid.
"""

from __future__ import annotations

import numpy as np

from mpsciml.seeding import Seed, numpy_generator


def neumann_scale(alpha: float, tau: float) -> float:
    """Li et al.'s prefactor of sqrt(lambda_k) for the Neumann field: tau^(alpha - 1)."""
    return float(tau ** (alpha - 1.0))


def neumann_sqrt_eigenvalues(modes: int, alpha: float, tau: float) -> np.ndarray:
    """(modes, modes) standard deviations of the cosine coefficients, k1, k2 in [0, modes);
    [0, 0] is 0 (no constant mode)."""
    if modes < 2 or not alpha > 0.0 or not tau > 0.0:
        raise ValueError(f"need modes >= 2, alpha > 0, tau > 0; got {modes}, {alpha}, {tau}")
    k = np.arange(modes, dtype=np.float64)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    sqrt_eig = neumann_scale(alpha, tau) * (np.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[0, 0] = 0.0
    return sqrt_eig


def cosine_basis(modes: int, points: np.ndarray) -> np.ndarray:
    """(modes, P) orthonormal Neumann basis c_k cos(pi k x) of (0, 1) at 1-D points (P,)."""
    k = np.arange(modes, dtype=np.float64)
    basis = np.cos(np.pi * np.multiply.outer(k, np.asarray(points, dtype=np.float64)))
    basis[1:] *= np.sqrt(2.0)
    return basis


def sample_neumann_coefficients(
    n: int, seed: Seed, modes: int, alpha: float, tau: float
) -> np.ndarray:
    """(n, modes, modes) KL coefficients sqrt(lambda_k) xi_k of n independent fields."""
    xi = numpy_generator(seed, "neumann_grf").standard_normal((n, modes, modes))
    return xi * neumann_sqrt_eigenvalues(modes, alpha, tau)


def evaluate_neumann(coefficients: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Fields at the tensor grid points x points (axis 0 is x, axis 1 is y).

    coefficients (n, K, K), points (P,) -> (n, P, P); exact (a finite cosine series)."""
    basis = cosine_basis(coefficients.shape[-1], points)  # (K, P)
    return np.einsum("kp,nkl,lq->npq", basis, coefficients, basis, optimize=True)


def neumann_mean_variance(modes: int, alpha: float, tau: float) -> float:
    """The spatial mean of the pointwise variance, sum_k lambda_k: the basis is orthonormal, and
    on M >= modes cell centres the discrete mean of phi_k^2 is exactly 1 as well."""
    return float(np.sum(neumann_sqrt_eigenvalues(modes, alpha, tau) ** 2))


def _wavenumbers(modes: int) -> np.ndarray:
    """The integer wavenumbers -modes..modes in FFT order (0, 1, .., modes, -modes, .., -1)."""
    return np.concatenate([np.arange(modes + 1), np.arange(-modes, 0)])


def periodic_sqrt_eigenvalues(
    dim: int, modes: int, alpha: float, tau: float, sigma: float
) -> np.ndarray:
    """(2 modes + 1,) * dim standard deviations sigma (4 pi^2 |k|^2 + tau^2)^(-alpha/2) of the
    Fourier coefficients, |k_i| <= modes, FFT order; the k = 0 entry is 0."""
    if dim not in (1, 2, 3) or modes < 1 or not alpha > 0 or not tau > 0 or not sigma > 0:
        raise ValueError(
            f"need dim in 1..3, modes >= 1, alpha, tau, sigma > 0; got {dim}, {modes}, "
            f"{alpha}, {tau}, {sigma}"
        )
    k = _wavenumbers(modes).astype(np.float64)
    grids = np.meshgrid(*([k] * dim), indexing="ij")
    k2 = sum(g**2 for g in grids)
    sqrt_eig = sigma * (4.0 * np.pi**2 * k2 + tau**2) ** (-alpha / 2.0)
    sqrt_eig[(0,) * dim] = 0.0
    return sqrt_eig


def sample_periodic_coefficients(
    n: int, seed: Seed, dim: int, modes: int, alpha: float, tau: float, sigma: float
) -> np.ndarray:
    """(n, (2 modes + 1,) * dim) complex coefficients of n fields (Li et al.'s recipe: complex
    normal c_k with E|c_k|^2 = 1 times sqrt(2) sqrt(lambda_k); the field is the real part)."""
    sqrt_eig = periodic_sqrt_eigenvalues(dim, modes, alpha, tau, sigma)
    draws = numpy_generator(seed, "periodic_grf").standard_normal((n, 2, *sqrt_eig.shape))
    return (draws[:, 0] + 1j * draws[:, 1]) * sqrt_eig  # sqrt(2) * (xi + i eta) / sqrt(2)


def evaluate_periodic(coefficients: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """Fields at the points j / N_i of a periodic grid: (n, (2K+1,)*d) -> (n, *grid).

    Exact for N_i > 2 K (no wavenumber of the band aliases); smaller grids raise."""
    dim = coefficients.ndim - 1
    modes = (coefficients.shape[1] - 1) // 2
    if len(grid) != dim or any(size <= 2 * modes for size in grid):
        raise ValueError(f"grid={grid} must have {dim} sizes > 2 * modes = {2 * modes}")
    full = np.zeros((coefficients.shape[0], *grid), dtype=np.complex128)
    index = np.ix_(*[_wavenumbers(modes) % size for size in grid])
    full[(slice(None), *index)] = coefficients
    return np.fft.ifftn(full, axes=tuple(range(1, dim + 1)), norm="forward").real


def periodic_variance(dim: int, modes: int, alpha: float, tau: float, sigma: float) -> float:
    """The pointwise variance sum_k sigma^2 (4 pi^2 |k|^2 + tau^2)^-alpha over the band (the
    same at every point: the field is stationary)."""
    return float(np.sum(periodic_sqrt_eigenvalues(dim, modes, alpha, tau, sigma) ** 2))
