"""The 2-D vorticity pseudo-spectral solver and data: conservation, Taylor-Green decay,
stability at the defaults, resolutions, backends.

Small grids (16-32) except the stability test, which runs the default 64^2 setting on 3 samples
(50 steps); the whole file takes a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mpsciml.data import ns_vorticity as ns
from mpsciml.data.grf_grid import evaluate_periodic, sample_periodic_coefficients

TINY = ns.NSVorticityParams(solve_grid=16, modes=5, t_end=0.5, dt=0.1)


def _grf(n: int, grid: int, modes: int, seed: int = 0) -> np.ndarray:
    p = ns.NSVorticityParams()
    coefficients = sample_periodic_coefficients(n, seed, 2, modes, p.alpha, p.tau, p.sigma)
    return evaluate_periodic(coefficients, (grid, grid))


def test_mean_vorticity_is_conserved() -> None:
    w0 = _grf(2, 16, 5) * 10.0 + 0.3  # strong enough for the nonlinear term to matter
    forcing = ns.forcing_field(16, 0.1)
    assert abs(forcing.mean()) < 1e-15
    w = ns.solve_ns(w0, 1e-3, 1.0, 0.05, forcing).numpy()
    np.testing.assert_allclose(w.mean(axis=(1, 2)), 0.3, atol=1e-13)
    assert np.abs(w - w0).max() > 0.1  # it did evolve


def test_taylor_green_decays_at_the_exact_rate() -> None:
    x = ns.sample_coordinates(16)
    w0 = np.sin(2 * np.pi * x)[:, None] * np.sin(2 * np.pi * x)[None, :]
    nu, t_end = 0.01, 1.0
    w = ns.solve_ns(w0, nu, t_end, 0.005).numpy()
    ratio = np.exp(-8 * np.pi**2 * nu * t_end)  # 0.454: a real decay
    assert np.abs(w - ratio * w0).max() < 1e-6  # CN: ~t nu^3 (8 pi^2)^3 dt^2 / 12 = 1.6e-7
    # the shape is exactly preserved: u . grad w vanishes for this eigenfunction
    scale = (w * w0).sum() / (w0 * w0).sum()
    assert np.abs(w - scale * w0).max() < 1e-12


def test_stable_at_the_default_step_over_the_default_horizon() -> None:
    p = ns.NSVorticityParams()
    w0 = _grf(3, p.solve_grid, p.modes, seed=4)
    forcing = ns.forcing_field(p.solve_grid, p.forcing_amplitude)
    w = ns.solve_ns(w0, p.nu, p.t_end, p.dt, forcing).numpy()
    assert np.all(np.isfinite(w))
    # transport keeps max|w|, viscosity lowers it, the forcing adds at most t |f|max
    bound = np.abs(w0).max(axis=(1, 2)) + p.t_end * np.abs(forcing).max()
    assert np.all(np.abs(w).max(axis=(1, 2)) <= bound)
    # enstrophy grows only through the forcing: |w(t)| <= |w0| + t |f| in L2
    l2 = np.sqrt((w**2).mean(axis=(1, 2)))
    assert np.all(l2 <= np.sqrt((w0**2).mean(axis=(1, 2))) + p.t_end * np.sqrt((forcing**2).mean()))
    finer = ns.solve_ns(w0, p.nu, p.t_end, p.dt / 2, forcing).numpy()  # second order in dt
    assert np.abs(w - finer).max() < 1e-3 * np.abs(w).max()


def test_dealiasing_keeps_the_band() -> None:
    w = ns.solve_ns(_grf(1, 16, 5) * 20.0, 1e-3, 0.5, 0.05).numpy()
    spectrum = np.abs(np.fft.fft2(w[0]))
    k = np.abs(np.fft.fftfreq(16, 1 / 16))
    outside = (k[:, None] > 5) | (k[None, :] > 5)
    assert spectrum[outside].max() < 1e-12 * spectrum.max()
    assert spectrum[~outside & ((k[:, None] == 5) | (k[None, :] == 5))].max() > 1e-6


def test_torch_backend_matches_numpy() -> None:
    w0 = _grf(2, 16, 5) * 10.0
    forcing = ns.forcing_field(16)
    on_numpy = ns.solve_ns(w0, 1e-3, 0.5, 0.1, forcing)
    on_torch = ns.solve_ns(torch.as_tensor(w0), 1e-3, 0.5, 0.1, forcing, device="cpu")
    assert on_torch.dtype == torch.float64
    torch.testing.assert_close(on_torch, on_numpy, rtol=0, atol=1e-12)


def test_resolutions_sample_one_function(tmp_path: Path) -> None:
    coarse = ns.make_ns_data(2, 3, 8, TINY, progress=False)
    fine = ns.ns_dataset(2, 3, 32, TINY, root=tmp_path)  # 2x the solve grid: interpolated
    for key in ("initial", "final"):
        assert coarse[key].shape == (2, 8, 8) and fine[key].shape == (2, 32, 32)
        np.testing.assert_allclose(fine[key][:, ::4, ::4], coarse[key], atol=1e-13)
    again = ns.ns_dataset(2, 3, 32, TINY, root=tmp_path)
    np.testing.assert_array_equal(again["final"], fine["final"])
    other = ns.make_ns_data(2, 4, 8, TINY, progress=False)
    assert not np.array_equal(other["initial"], coarse["initial"])


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="modes=22"):
        ns.NSVorticityParams(modes=22)
    with pytest.raises(ValueError, match="resolution=24"):
        ns.make_ns_data(1, 0, 24, TINY, progress=False)
    with pytest.raises(FloatingPointError, match=r"dt=2\.0"):
        ns.solve_ns(_grf(1, 16, 5) * 50.0, 1e-4, 40.0, 2.0)
