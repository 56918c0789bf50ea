"""Darcy flow data: -div(a grad u) = f on (0, 1)^2, u = 0 on the boundary (Li et al. 2021).

The operator maps the coefficient a to the solution u. By default a = high (12) where a Gaussian
random field psi ~ N(0, tau^(2 alpha - 2) (-Laplacian + tau^2 I)^-alpha), zero Neumann, alpha = 2,
tau = 3 (see `grf_grid`; mean-zero, band-limited to `modes` cosine modes per axis) is >= threshold
(0), else low (3); f = 1. All of these are `DarcyParams` fields, because public Darcy sets differ
in them.

Discretisation (second order, cell-centred finite volumes). The square is cut into M x M cells of
side h = 1 / M; unknown u_ij is the value at the cell centre ((i + 1/2) h, (j + 1/2) h), array axis
0 is x and axis 1 is y. The coefficient is one value per cell (the field at the cell centre).
The flux through a face between two cells uses the harmonic mean 2 a_P a_N / (a_P + a_N) of their
coefficients, the exact face coefficient of a 1-D layered medium, which keeps the scheme
conservative and accurate across the jumps of a two-valued a. A wall face is half a cell away
from the centre, so its flux is a_P (0 - u_P) / (h / 2) with the cell's own coefficient. With
f the cell-centre source, the equations are

    sum_faces a_face (u_P - u_N) + sum_walls 2 a_P u_P = h^2 f_P,

a symmetric positive definite 5-point system (`darcy_matrix` assembles it with scipy.sparse).

Where the samples sit. A training resolution r puts its samples at the cell centres of an r x r
partition: x_i = (i + 1/2) / r, i = 0..r-1 (`sample_coordinates(r)`), so the first sample is half a
coarse cell (1 / (2 r)) from the wall and no sample lies on the boundary (where u = 0 is known).
The solve runs on a finer grid of M = q r cells with q the smallest odd integer such that
M >= `solve_grid`: with q odd, every coarse centre is a fine centre (fine index q i + (q - 1) / 2),
so the data are point values of the fine solution, no interpolation. The coefficient stored is the
thresholded field at those same points, i.e. exactly the fine-grid cell values the solver used
there, so coefficient and solution are consistent sample by sample. Because the field is a finite
cosine series, resolution 32 and resolution 64 data are draws of the same distribution (finer
data see the same kind of field more densely); the fine grids are 96 and 192 cells with the
defaults.

Solver. The matrix of every sample differs, so a sparse LU per sample would cost ~40 ms (96^2
unknowns) to ~300 ms (192^2) here. Instead all samples of a chunk are solved at once by
preconditioned conjugate gradients, preconditioned by the constant-coefficient operator of the
same scheme, which the type-II discrete sine transform diagonalises exactly (its odd reflection
about the wall is the half-cell Dirichlet condition above). The preconditioned operator's
spectrum lies in [min a, max a] / mean a (every face weight is a mean of cell values), so its
condition number is at most high / low = 4, and ~21 iterations reach a relative residual of
1e-9 whatever the grid size: 16 ms of CPU per sample at 96^2, 50 ms at 192^2 (measured).

Accuracy of the default fine grid (q = 3 at r = 32), measured against q = 15 on 8 samples: mean
relative L2 difference 2.5e-3 at the samples (q = 1: 1.3e-2, q = 5: 1.3e-3). Convergence is first
order, as always when a cell-wise coefficient jumps across curved interfaces; 0.25% is well below
the error an FNO reaches on these data.

`solve_darcy` also takes any coefficient a user gives (one array per sample, at any M);
`solve_darcy_refined` solves a coarse piecewise-constant coefficient on a grid refined by an odd
factor and returns the values at the coarse centres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import track
from scipy import fft as sfft
from scipy import sparse

from mpsciml.data.cache import cached_grid_dataset, grid_dataset_params
from mpsciml.data.grf_grid import evaluate_neumann, sample_neumann_coefficients

NAME = "darcy"
VERSION = 1  # bump whenever the generated numbers change
_CHUNK_POINTS = 1 << 21  # fine-grid points solved at once (~17 MB per array)


@dataclass(frozen=True)
class DarcyParams:
    """The generator's keys (the problem yaml's `generator` block), defaults of Li et al."""

    high: float = 12.0  # a where psi >= threshold
    low: float = 3.0  # a elsewhere
    threshold: float = 0.0
    alpha: float = 2.0  # GRF smoothness
    tau: float = 3.0  # GRF inverse length scale
    modes: int = 32  # cosine modes per axis of the GRF (its band)
    source: float = 1.0  # f, constant
    solve_grid: int = 96  # fewest fine cells per side; the fine grid is an odd multiple of r

    def __post_init__(self) -> None:
        if not (self.high > 0 and self.low > 0):
            raise ValueError(f"darcy high={self.high}, low={self.low}: both must be > 0")
        if not (self.alpha > 0 and self.tau > 0):
            raise ValueError(f"darcy alpha={self.alpha}, tau={self.tau}: both must be > 0")
        if self.modes < 2:
            raise ValueError(f"darcy modes={self.modes}: need >= 2")
        if self.solve_grid < self.modes:
            raise ValueError(
                f"darcy modes={self.modes}: must be <= solve_grid={self.solve_grid} so the "
                "fine grid resolves the field"
            )


def sample_coordinates(resolution: int) -> np.ndarray:
    """(r,) the 1-D coordinates (i + 1/2) / r of the samples (the same on both axes)."""
    if resolution < 1:
        raise ValueError(f"resolution={resolution}: need >= 1")
    return (np.arange(resolution) + 0.5) / resolution


def fine_grid(resolution: int, solve_grid: int) -> tuple[int, int]:
    """(M, q): the solve grid M = q r with q the smallest odd factor giving M >= solve_grid."""
    q = max(1, -(-solve_grid // resolution))
    q += 1 - q % 2
    return q * resolution, q


def face_coefficients(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Harmonic-mean faces and the diagonal of the scheme for a (..., M, M).

    Returns (ax (..., M-1, M) between x-neighbours, ay (..., M, M-1) between y-neighbours,
    diag (..., M, M) = sum of the cell's face weights, walls counted 2 a_P)."""
    ax = 2.0 * a[..., :-1, :] * a[..., 1:, :] / (a[..., :-1, :] + a[..., 1:, :])
    ay = 2.0 * a[..., :, :-1] * a[..., :, 1:] / (a[..., :, :-1] + a[..., :, 1:])
    diag = np.zeros_like(a)
    diag[..., :-1, :] += ax
    diag[..., 1:, :] += ax
    diag[..., :, :-1] += ay
    diag[..., :, 1:] += ay
    diag[..., 0, :] += 2.0 * a[..., 0, :]
    diag[..., -1, :] += 2.0 * a[..., -1, :]
    diag[..., :, 0] += 2.0 * a[..., :, 0]
    diag[..., :, -1] += 2.0 * a[..., :, -1]
    return ax, ay, diag


def darcy_matrix(coefficient: np.ndarray) -> sparse.csr_matrix:
    """The scheme's (M^2, M^2) SPD matrix for one coefficient (M, M); unknowns in C order
    (index i M + j). Solves A u = h^2 f; used as the reference in tests."""
    a = np.asarray(coefficient, dtype=np.float64)
    m = a.shape[0]
    ax, ay, diag = face_coefficients(a)
    idx = np.arange(m * m).reshape(m, m)
    rows = [idx, idx[:-1], idx[1:], idx[:, :-1], idx[:, 1:]]
    cols = [idx, idx[1:], idx[:-1], idx[:, 1:], idx[:, :-1]]
    vals = [diag, -ax, -ax, -ay, -ay]
    return sparse.csr_matrix(
        (
            np.concatenate([v.ravel() for v in vals]),
            (np.concatenate([r.ravel() for r in rows]), np.concatenate([c.ravel() for c in cols])),
        ),
        shape=(m * m, m * m),
    )


def _apply(
    ax: np.ndarray, ay: np.ndarray, diag: np.ndarray, u: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """out = A u for a batch (n, M, M) without assembling A (buffers reused: these arrays are
    large and the loop is memory-bound)."""
    np.multiply(diag, u, out=out)
    out[:, :-1, :] -= ax * u[:, 1:, :]
    out[:, 1:, :] -= ax * u[:, :-1, :]
    out[:, :, :-1] -= ay * u[:, :, 1:]
    out[:, :, 1:] -= ay * u[:, :, :-1]
    return out


def _laplacian_eigenvalues(m: int) -> np.ndarray:
    """(M, M) eigenvalues of the a = 1 scheme on the DST-II basis sin(pi k (j + 1/2) / M)."""
    lam = 4.0 * np.sin(np.pi * np.arange(1, m + 1) / (2.0 * m)) ** 2
    return lam[:, None] + lam[None, :]


def solve_darcy(
    coefficient: np.ndarray,
    source: float | np.ndarray = 1.0,
    *,
    rtol: float = 1e-9,
    max_iter: int = 1000,
) -> np.ndarray:
    """u at the cell centres for coefficient (M, M) or (n, M, M) of cell values > 0.

    source: a constant or cell values (M, M) / (n, M, M). Returns the shape of `coefficient`.
    Raises if some sample's relative residual is still above rtol after max_iter iterations."""
    a = np.asarray(coefficient, dtype=np.float64)
    single = a.ndim == 2
    a = a[None] if single else a
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] < 2:
        raise ValueError(f"coefficient must be (M, M) or (n, M, M), M >= 2; got {a.shape}")
    if not np.all(np.isfinite(a)) or not np.all(a > 0):
        raise ValueError("coefficient must be finite and > 0 everywhere")
    m = a.shape[1]
    b = np.broadcast_to(np.asarray(source, dtype=np.float64), a.shape) / m**2
    ax, ay, diag = face_coefficients(a)
    inv_scale = 1.0 / np.mean(a, axis=(1, 2), keepdims=True)
    inv_lam = 1.0 / _laplacian_eigenvalues(m)

    def precondition(r: np.ndarray) -> np.ndarray:
        spectrum = sfft.dstn(r, type=2, axes=(1, 2), norm="ortho")
        spectrum *= inv_lam
        z = sfft.idstn(spectrum, type=2, axes=(1, 2), norm="ortho", overwrite_x=True)
        z *= inv_scale
        return z

    def dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.einsum("nij,nij->n", u, v)[:, None, None]

    ap = np.empty_like(a)
    x = precondition(b)
    r = b - _apply(ax, ay, diag, x, ap)
    z = precondition(r)
    p = z.copy()
    rz = dot(r, z)
    b_norm = np.sqrt(dot(b, b))
    b_norm[b_norm == 0] = 1.0
    for _ in range(max_iter):
        res = np.sqrt(dot(r, r)) / b_norm
        if np.all(res <= rtol):
            break
        _apply(ax, ay, diag, p, ap)
        pap = dot(p, ap)
        step = np.where(res > rtol, rz / np.where(pap > 0, pap, 1.0), 0.0)
        x += step * p
        r -= step * ap
        z = precondition(r)
        rz_new = dot(r, z)
        p *= rz_new / np.where(rz > 0, rz, 1.0)
        p += z
        rz = rz_new
    else:
        raise RuntimeError(f"darcy CG: residual {float(res.max()):.2e} > rtol={rtol}")
    return x[0] if single else x


def solve_darcy_refined(
    coefficient: np.ndarray, source: float = 1.0, refine: int = 3
) -> np.ndarray:
    """Solve for a piecewise-constant coefficient given per coarse cell (r, r) or (n, r, r) on a
    grid refined `refine` (odd) times, and return u at the coarse cell centres (same shape):
    what the generator does, for a coefficient read from a user's file."""
    if refine < 1 or refine % 2 == 0:
        raise ValueError(f"refine={refine}: must be an odd integer >= 1")
    a = np.asarray(coefficient, dtype=np.float64)
    fine = np.repeat(np.repeat(a, refine, axis=-2), refine, axis=-1)
    u = solve_darcy(fine, source)
    centre = (refine - 1) // 2
    return u[..., centre::refine, centre::refine]


def coefficient_field(psi: np.ndarray, params: DarcyParams) -> np.ndarray:
    """a = high where psi >= threshold, else low (same shape as psi)."""
    return np.where(psi >= params.threshold, params.high, params.low)


def make_darcy_data(
    n: int, seed: int, resolution: int, params: DarcyParams, progress: bool = True
) -> dict[str, np.ndarray]:
    """Build n samples: {"coefficient": (n, r, r), "solution": (n, r, r)} (float64)."""
    if n < 1:
        raise ValueError(f"darcy n={n}: need >= 1")
    m, q = fine_grid(resolution, params.solve_grid)
    coefficients = sample_neumann_coefficients(n, seed, params.modes, params.alpha, params.tau)
    centres = sample_coordinates(m)
    keep = slice((q - 1) // 2, None, q)
    chunk = max(1, _CHUNK_POINTS // (m * m))
    starts = range(0, n, chunk)
    if progress:
        starts = track(starts, description=f"darcy {resolution}x{resolution}", transient=True)
    a_out = np.empty((n, resolution, resolution))
    u_out = np.empty((n, resolution, resolution))
    for start in starts:
        stop = min(start + chunk, n)
        a = coefficient_field(evaluate_neumann(coefficients[start:stop], centres), params)
        u = solve_darcy(a, params.source)
        a_out[start:stop] = a[:, keep, keep]
        u_out[start:stop] = u[:, keep, keep]
    return {"coefficient": a_out, "solution": u_out}


def darcy_cache_params(n: int, seed: int, resolution: int, params: DarcyParams) -> dict:
    """The cache key (`grid_dataset_params`: every argument, every generator field, VERSION)."""
    return grid_dataset_params(n, seed, resolution, params, VERSION)


def darcy_dataset(
    n: int,
    seed: int,
    resolution: int,
    params: DarcyParams | None = None,
    *,
    root: Path | None = None,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """make_darcy_data through the on-disk cache (built once per key, with a progress bar)."""
    params = params or DarcyParams()
    return cached_grid_dataset(
        NAME, VERSION, make_darcy_data, n, seed, resolution, params, root, force
    )
