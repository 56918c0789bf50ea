"""Burgers operator data: u_t + (u^2 / 2)_x = nu u_xx on the periodic unit interval [0, 1).

The operator maps u(., 0) to u(., t_end) (Li et al. 2021: nu = 0.1, t_end = 1, u(., 0) ~
N(0, 625 (-Delta + 25 I)^-2), i.e. sigma = 25, tau = 5, alpha = 2 in `grf_grid`'s periodic
field, band-limited to |k| <= modes).

Solver: Fourier pseudo-spectral on `solve_grid` = N equispaced points x_j = j / N, batched over
samples (one real FFT per stage for the whole batch). Time stepping by the integrating-factor
fourth-order Runge-Kutta method (IF-RK4, as Trefethen's kdv.m): with v = exp(nu k^2 t) u_hat the
diffusion is integrated exactly, so the step is set by accuracy, not by the stiff viscous modes
(nu (2 pi k)^2 reaches 2.9e4 at k = 85, the band of N = 256). The nonlinear term
-i pi k FFT(u^2) is dealiased by the 2/3 rule: only |k| <= (N - 1) / 3 is kept, where a product
of two band-limited fields has no aliased modes, so the computed solution is a trigonometric
polynomial of that band at all times (the initial field lies in it too: modes < N / 3 is
required).

Samples: a resolution r that divides N takes every (N / r)-th point; a multiple of N is the same
trigonometric polynomial evaluated on the finer grid (exact, zero-padded spectrum). So the
zero-shot set at 2r holds the same kind of functions as the training set at r, sampled twice as
densely. Inputs ("initial") and outputs ("final") sit at x_j = j / r, j = 0..r-1 (x = 1 is x = 0).

Defaults and their accuracy. modes = 64: Li et al.'s field keeps every mode of its grid, but
the variance beyond |k| = 64 is 1e-6 (std 1e-3 against the field's 0.60), and a fixed band makes
every resolution see the same functions. N = 256 holds that band under the 2/3 rule; solving on
N = 512 or 1024 instead changes the result by 1e-15. dt = 1/200 (200 steps): max relative L2
error over 256 samples 1.0e-5 against dt = 1/1600 (5.7e-5 at 1/100, 3.7e-4 at 1/50); an ETDRK4
step was tried and gave the same errors. Cost: ~3 ms per sample on one shared core.

What the default map looks like: nu = 0.1 damps the lowest mode by exp(-4 pi^2 nu) = 0.019 by
t = 1, so u(., 1) has std ~0.01 against 0.6 at t = 0 and is dominated by |k| = 1, 2 (the
relative errors above are relative to this small final field). The exact Cole-Hopf solution is
the solver's test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import track
from scipy import fft as sfft

from mpsciml.data.cache import cached_grid_dataset, grid_dataset_params
from mpsciml.data.grf_grid import evaluate_periodic, sample_periodic_coefficients

NAME = "burgers_operator"
VERSION = 1  # bump whenever the generated numbers change
_CHUNK = 256  # samples advanced together


@dataclass(frozen=True)
class BurgersOperatorParams:
    """The generator's keys (the problem yaml's `generator` block), defaults of Li et al."""

    nu: float = 0.1
    t_end: float = 1.0
    solve_grid: int = 256  # N, points of the pseudo-spectral solve
    dt: float = 1.0 / 200.0  # IF-RK4 step (rounded down so that t_end is hit exactly)
    alpha: float = 2.0  # initial GRF: covariance sigma^2 (-Delta + tau^2 I)^-alpha
    tau: float = 5.0
    sigma: float = 25.0
    modes: int = 64  # Fourier band |k| <= modes of the initial field

    def __post_init__(self) -> None:
        if not (self.nu > 0 and self.t_end > 0 and self.dt > 0):
            raise ValueError(
                f"burgers nu={self.nu}, t_end={self.t_end}, dt={self.dt}: all must be > 0"
            )
        if not (self.alpha > 0 and self.tau > 0 and self.sigma > 0):
            raise ValueError(f"burgers alpha, tau, sigma must be > 0; got {self}")
        if self.modes < 1 or 3 * self.modes >= self.solve_grid:
            raise ValueError(
                f"burgers modes={self.modes}: need 1 <= modes < solve_grid / 3 = "
                f"{self.solve_grid / 3:g} (the dealiased band of solve_grid={self.solve_grid})"
            )


def sample_coordinates(resolution: int) -> np.ndarray:
    """(r,) the sample points j / r."""
    return np.arange(resolution) / resolution


def _wavenumbers(n: int) -> np.ndarray:
    """(N/2 + 1,) integer wavenumbers of numpy's rfft layout."""
    return np.arange(n // 2 + 1, dtype=np.float64)


def solve_burgers(
    u0: np.ndarray, nu: float, t_end: float, dt: float, *, dealias: bool = True
) -> np.ndarray:
    """u(., t_end) from u0 (n, N) or (N,) at x_j = j / N; IF-RK4 with ceil(t_end / dt) equal
    steps. The band of u0 above (N - 1) / 3 is removed first when dealiasing."""
    u0 = np.asarray(u0, dtype=np.float64)
    single = u0.ndim == 1
    u = u0[None] if single else u0
    n_points = u.shape[-1]
    steps = max(1, int(np.ceil(t_end / dt - 1e-12)))
    h = t_end / steps
    k = _wavenumbers(n_points)
    band = k <= (n_points - 1) // 3 if dealias else np.ones_like(k, dtype=bool)
    half = np.exp(-nu * (2.0 * np.pi * k) ** 2 * h / 2.0)  # integrating factor over h / 2
    full = half * half
    g = np.where(band, -1j * np.pi * k, 0.0) * h  # -(1/2) (2 pi i k) h, masked

    def nonlinear(v: np.ndarray) -> np.ndarray:
        physical = sfft.irfft(v, n=n_points, norm="forward")
        return g * sfft.rfft(physical * physical, norm="forward")

    v = sfft.rfft(u, norm="forward") * band
    for _ in range(steps):
        a = nonlinear(v)
        b = nonlinear(half * (v + a / 2.0))
        c = nonlinear(half * v + b / 2.0)
        d = nonlinear(full * v + half * c)
        v = full * v + (full * a + 2.0 * half * (b + c) + d) / 6.0
    out = sfft.irfft(v, n=n_points, norm="forward")
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"burgers solve blew up (dt={dt}); use a smaller dt")
    return out[0] if single else out


def values_at(u: np.ndarray, resolution: int) -> np.ndarray:
    """Samples (n, r) of fields given at N points (n, N): every (N/r)-th point when r divides
    N, the trigonometric interpolant (exact for the solver's band) when N divides r."""
    n_points = u.shape[-1]
    if n_points % resolution == 0:
        return u[..., :: n_points // resolution].copy()
    if resolution % n_points == 0:
        return sfft.irfft(sfft.rfft(u, norm="forward"), n=resolution, norm="forward")
    raise ValueError(
        f"burgers resolution={resolution}: must divide or be a multiple of solve_grid={n_points}"
    )


def make_burgers_data(
    n: int, seed: int, resolution: int, params: BurgersOperatorParams, progress: bool = True
) -> dict[str, np.ndarray]:
    """Build n samples: {"initial": (n, r), "final": (n, r)} (float64)."""
    if n < 1:
        raise ValueError(f"burgers n={n}: need >= 1")
    p = params
    values_at(np.zeros((1, p.solve_grid)), resolution)  # reject a bad resolution before work
    coefficients = sample_periodic_coefficients(n, seed, 1, p.modes, p.alpha, p.tau, p.sigma)
    initial = np.empty((n, resolution))
    final = np.empty((n, resolution))
    starts = range(0, n, _CHUNK)
    if progress:
        starts = track(starts, description=f"burgers r={resolution}", transient=True)
    for start in starts:
        stop = min(start + _CHUNK, n)
        u0 = evaluate_periodic(coefficients[start:stop], (p.solve_grid,))
        initial[start:stop] = values_at(u0, resolution)
        final[start:stop] = values_at(solve_burgers(u0, p.nu, p.t_end, p.dt), resolution)
    return {"initial": initial, "final": final}


def burgers_cache_params(n: int, seed: int, resolution: int, params: BurgersOperatorParams) -> dict:
    """The cache key (`grid_dataset_params`: every argument, every generator field, VERSION)."""
    return grid_dataset_params(n, seed, resolution, params, VERSION)


def burgers_dataset(
    n: int,
    seed: int,
    resolution: int,
    params: BurgersOperatorParams | None = None,
    *,
    root: Path | None = None,
    force: bool = False,
) -> dict[str, np.ndarray]:
    """make_burgers_data through the on-disk cache (built once per key, with a progress bar)."""
    params = params or BurgersOperatorParams()
    return cached_grid_dataset(
        NAME, VERSION, make_burgers_data, n, seed, resolution, params, root, force
    )
