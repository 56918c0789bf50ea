"""Our reference for the Allen-Cahn benchmark: Fourier pseudo-spectral in x, ETDRK4 in time.

    u_t = eps u_xx + 5 u - 5 u^3,   x in [-1, 1) periodic,   u(x, 0) = x^2 cos(pi x),
    eps = 1e-4, t in [0, 1]

(the stiff reaction-diffusion case of Raissi et al. 2019, whose data came from Chebfun). Why
this scheme: the diffusion is stiff (eps (pi N/2)^2 ~ 65 at N = 512) and the reaction is not, so
exponential time differencing treats the linear part exactly and the cubic explicitly; ETDRK4
(Cox & Matthews 2002) with the coefficients by contour integrals (Kassam & Trefethen 2005,
"Fourth-order time-stepping for stiff PDEs") is fourth order in time and stable at dt ~ 1e-3.
The interfaces that form have width ~ sqrt(2 eps / 5) ~ 0.006, so N = 1024 modes (h = 0.002)
resolve them; the initial datum's derivative jumps at x = +-1 (from -2 to +2 across the periodic
seam), which costs spectral accuracy only briefly since the reaction flattens u there towards its
stable state -1. Convergence in N and dt is tested (tests/test_allen_cahn_spectral.py).

`solve_allen_cahn` returns the Fourier coefficients at output times; `evaluate` sums the series
at any x (exact trigonometric interpolation) and interpolates the coefficients in time by cubic
splines (smooth in t), so the reference at any point is as accurate as the solve.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import CubicSpline

from mpsciml.data.cache import cached

VERSION = 1
NAME = "allen_cahn"


def initial_condition(x: np.ndarray) -> np.ndarray:
    return x**2 * np.cos(math.pi * x)


def _etdrk4_coefficients(lin: np.ndarray, dt: float, contour: int = 32) -> tuple[np.ndarray, ...]:
    """E, E/2, Q, f1, f2, f3 of Kassam & Trefethen, by the mean over a circle of radius 1 around
    each dt*L (the direct formulas cancel catastrophically for small |dt L|)."""
    roots = np.exp(1j * np.pi * (np.arange(1, contour + 1) - 0.5) / contour)
    lr = dt * lin[:, None] + roots[None, :]
    q = dt * np.real(np.mean((np.exp(lr / 2) - 1) / lr, axis=1))
    f1 = dt * np.real(np.mean((-4 - lr + np.exp(lr) * (4 - 3 * lr + lr**2)) / lr**3, axis=1))
    f2 = dt * np.real(np.mean((2 + lr + np.exp(lr) * (-2 + lr)) / lr**3, axis=1))
    f3 = dt * np.real(np.mean((-4 - 3 * lr - lr**2 + np.exp(lr) * (4 - lr)) / lr**3, axis=1))
    return np.exp(dt * lin), np.exp(dt * lin / 2), q, f1, f2, f3


def solve_allen_cahn(
    modes: int = 1024,
    dt: float = 1e-3,
    eps: float = 1e-4,
    t_end: float = 1.0,
    n_times: int = 201,
) -> dict[str, np.ndarray]:
    """Fourier coefficients (rfft of u on the grid x_j = -1 + 2j/modes) at n_times equally
    spaced times in [0, t_end]; the step is shrunk so that it divides the output interval."""
    if not (isinstance(modes, int) and modes >= 8 and modes % 2 == 0):
        raise ValueError(f"modes={modes!r} is invalid: must be an even integer >= 8")
    if not (dt > 0 and eps > 0 and t_end > 0 and n_times >= 2):
        raise ValueError(f"need dt, eps, t_end > 0 and n_times >= 2 (got {dt}, {eps}, {t_end})")
    x = -1 + 2 * np.arange(modes) / modes
    wavenumber = math.pi * np.arange(modes // 2 + 1)  # period 2
    lin = -eps * wavenumber**2
    interval = t_end / (n_times - 1)
    substeps = math.ceil(interval / dt - 1e-9)
    e, e2, q, f1, f2, f3 = _etdrk4_coefficients(lin, interval / substeps)

    def reaction(v: np.ndarray) -> np.ndarray:
        u = np.fft.irfft(v, n=modes)
        return np.fft.rfft(5 * u - 5 * u**3)

    v = np.fft.rfft(initial_condition(x))
    frames = [v]
    for _ in range(n_times - 1):
        for _ in range(substeps):
            nv = reaction(v)
            a = e2 * v + q * nv
            na = reaction(a)
            b = e2 * v + q * na
            nb = reaction(b)
            c = e2 * a + q * (2 * nb - nv)
            nc = reaction(c)
            v = e * v + nv * f1 + 2 * (na + nb) * f2 + nc * f3
        frames.append(v)
    coefficients = np.stack(frames)
    if not np.all(np.isfinite(coefficients)):
        raise RuntimeError(f"Allen-Cahn solve blew up (modes={modes}, dt={dt}): take a smaller dt")
    return {
        "coefficients": coefficients,
        "times": np.linspace(0.0, t_end, n_times),
        "modes": np.array(modes),
    }


def evaluate(solution: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """u at points (x, t): the trigonometric series at x, its coefficients splined in t."""
    coefficients, times = solution["coefficients"], solution["times"]
    modes = int(solution["modes"])
    spline = CubicSpline(times, coefficients, axis=0)
    weights = np.full(coefficients.shape[1], 2.0)  # rfft's halved spectrum
    weights[0] = 1.0
    weights[-1] = 1.0  # the Nyquist mode counts once (modes is even)
    wavenumber = math.pi * np.arange(coefficients.shape[1])
    out = np.empty(np.shape(x))
    for time in np.unique(t):
        here = t == time
        c = spline(time) * weights / modes
        phase = np.exp(1j * np.outer(x[here] + 1, wavenumber))
        out[here] = np.real(phase @ c)
    return out


def allen_cahn_reference(
    modes: int = 1024, dt: float = 1e-3, eps: float = 1e-4, *, force: bool = False
) -> dict[str, np.ndarray]:
    """solve_allen_cahn through the on-disk cache (data/cache.py)."""
    params = {"modes": modes, "dt": dt, "eps": eps, "seed": 0, "version": VERSION}
    return cached(NAME, params, lambda: solve_allen_cahn(modes, dt, eps), force=force)
