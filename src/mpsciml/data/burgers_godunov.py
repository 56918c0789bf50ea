"""Our reference solver for Burgers' equation u_t + (u^2 / 2)_x = nu u_xx, nu >= 0 (inviscid
allowed), on an interval of M finite-volume cells, periodic or with outflow walls.

Scheme (second order where the solution is smooth, no oscillations at shocks):
  * Godunov's flux for f(u) = u^2 / 2, the exact Riemann solution's flux at the face, which for
    this convex flux with its minimum at 0 is F(l, r) = max(f(max(l, 0)), f(min(r, 0))): a shock
    (l > r) moves at the Rankine-Hugoniot speed (l + r) / 2, a rarefaction (l < r) opens a fan,
    and the sonic point u = 0 inside a fan gets f = 0 (the entropy solution; tested);
  * MUSCL: face values from cell averages with minmod-limited slopes (TVD, second order away
    from extrema and shocks);
  * the viscous term by the central second difference, explicitly;
  * Heun's method (SSP Runge-Kutta 2) in time, steps limited by dt (max|u| / h + 2 nu / h^2)
    <= cfl (advective CFL and the explicit diffusion limit together); max|u| never grows for
    Burgers (maximum principle), so the initial one bounds every step. Each interval between
    requested times is cut into equal substeps, so the snapshots fall exactly on those times.
    On a periodic grid the viscous term is split off by default (Strang: the exact propagator of
    the same central difference by FFT, half a step before and after each inviscid step), which
    leaves only the advective limit: at fine grids the explicit diffusion limit h^2 / 2 nu would
    need 20x more steps (1024 cells, nu = 0.01).

Boundaries: "periodic", or "outflow" (zero-gradient ghost cells: waves leave freely; used for the
Riemann tests). Vectorised over samples: all rows of a batch advance together.
"""

from __future__ import annotations

import math

import numpy as np
from rich.progress import track

BOUNDARIES = ("periodic", "outflow")


def godunov_flux(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The exact Riemann flux of f(u) = u^2 / 2 between face values left and right."""
    return np.maximum(np.maximum(left, 0.0) ** 2, np.minimum(right, 0.0) ** 2) * 0.5


def _minmod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(a * b > 0.0, np.sign(a) * np.minimum(np.abs(a), np.abs(b)), 0.0)


def _ghosts(u: np.ndarray, boundary: str) -> np.ndarray:
    """u (n, M) with two ghost cells per side."""
    if boundary == "periodic":
        return np.concatenate([u[:, -2:], u, u[:, :2]], axis=1)
    return np.concatenate([u[:, :1], u[:, :1], u, u[:, -1:], u[:, -1:]], axis=1)


def rate(u: np.ndarray, h: float, nu: float, boundary: str) -> np.ndarray:
    """du/dt of the semi-discrete scheme for cell averages u (n, M)."""
    g = _ghosts(u, boundary)  # (n, M + 4)
    slope = _minmod(g[:, 1:-1] - g[:, :-2], g[:, 2:] - g[:, 1:-1])  # (n, M + 2), cells -1..M
    centre = g[:, 1:-1]
    left = (centre + 0.5 * slope)[:, :-1]  # faces -1/2 .. M - 1/2: value left of the face
    right = (centre - 0.5 * slope)[:, 1:]  # value right of the face
    flux = godunov_flux(left, right)  # (n, M + 1)
    du = -(flux[:, 1:] - flux[:, :-1]) / h
    if nu > 0.0:
        du += nu * (g[:, 3:-1] - 2.0 * g[:, 2:-2] + g[:, 1:-3]) / h**2
    return du


def _diffusion_factor(m: int, h: float, nu: float, dt: float) -> np.ndarray:
    """(m // 2 + 1,) exact propagator over dt of u_t = nu * (central second difference) on a
    periodic grid, per rfft mode: its eigenvalues are -(4 / h^2) sin^2(pi k / m)."""
    k = np.arange(m // 2 + 1)
    return np.exp(-nu * dt * 4.0 / h**2 * np.sin(np.pi * k / m) ** 2)


def solve_burgers(
    u0: np.ndarray,
    length: float,
    times: np.ndarray,
    nu: float = 0.0,
    boundary: str = "periodic",
    cfl: float = 0.4,
    progress: bool = False,
    diffusion: str = "auto",
) -> np.ndarray:
    """Cell averages at `times` (increasing, >= 0) from cell averages u0 (n, M) or (M,) on M
    equal cells of [0, length]: returns (n, M, len(times)) (or (M, len(times))).

    diffusion: "explicit" (in the Runge-Kutta stages; dt limited by h^2 / 2 nu too), "split"
    (periodic only: Strang splitting, half a step of the exact discrete diffusion propagator by
    FFT on each side of an inviscid Heun step, so dt follows the advective CFL alone: at 1024
    cells and nu = 0.01 that is ~20x fewer steps), or "auto" (split when periodic with nu > 0)."""
    if diffusion not in ("auto", "explicit", "split"):
        raise ValueError(f"diffusion={diffusion!r} is unknown; allowed: auto, explicit, split")
    if diffusion == "split" and boundary != "periodic":
        raise ValueError("diffusion='split' needs boundary='periodic'")
    if diffusion == "auto":
        diffusion = "split" if boundary == "periodic" and nu > 0.0 else "explicit"
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary={boundary!r} is unknown; allowed: {', '.join(BOUNDARIES)}")
    if not (nu >= 0.0 and math.isfinite(nu)):
        raise ValueError(f"nu={nu} must be finite and >= 0")
    u = np.array(u0, dtype=np.float64, ndmin=2)
    single = np.ndim(u0) == 1
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or np.any(np.diff(times) < 0) or np.any(times < 0):
        raise ValueError("times must be increasing and >= 0")
    if u.shape[1] < 3 or not np.all(np.isfinite(u)):
        raise ValueError(f"u0 must be finite on >= 3 cells, got shape {u.shape}")
    h = length / u.shape[1]
    speed = max(float(np.abs(u).max()), 1e-12)
    split = diffusion == "split" and nu > 0.0
    rate_nu = 0.0 if split else nu  # the viscous term inside the Runge-Kutta stages
    dt_max = cfl / (speed / h + 2.0 * rate_nu / h**2)
    out = np.empty((*u.shape, len(times)))
    now = 0.0
    steps = range(len(times))
    if progress:
        steps = track(steps, description=f"burgers reference ({u.shape[1]} cells)", transient=True)
    for k in steps:
        interval = times[k] - now
        substeps = math.ceil(interval / dt_max - 1e-9) if interval > 0 else 0
        dt = interval / max(substeps, 1)
        half = _diffusion_factor(u.shape[1], h, nu, 0.5 * dt) if split else None
        for _ in range(substeps):
            if half is not None:
                u = np.fft.irfft(np.fft.rfft(u, axis=1) * half, n=u.shape[1], axis=1)
            stage = u + dt * rate(u, h, rate_nu, boundary)
            u = 0.5 * (u + stage + dt * rate(stage, h, rate_nu, boundary))
            if half is not None:
                u = np.fft.irfft(np.fft.rfft(u, axis=1) * half, n=u.shape[1], axis=1)
        now = times[k]
        out[..., k] = u
    return out[0] if single else out
