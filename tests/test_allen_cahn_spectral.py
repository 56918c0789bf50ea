"""Our Allen-Cahn reference (Fourier pseudo-spectral + ETDRK4): spectral convergence in the
number of modes, fourth order in the time step, and the series evaluation is the solve's grid."""

from __future__ import annotations

import numpy as np
import pytest

from mpsciml.data.allen_cahn_spectral import (
    allen_cahn_reference,
    evaluate,
    initial_condition,
    solve_allen_cahn,
)

X = np.linspace(-1.0, 1.0, 201)


def at_time(solution: dict, t: float) -> np.ndarray:
    return evaluate(solution, X, np.full_like(X, t))


def test_spectral_convergence_in_the_number_of_modes():
    """Doubling the modes shrinks the change at t = 1 by far more than any power of 2 would
    (measured: 5e-3, 1e-5, 1e-9 from 256 -> 512 -> 1024 -> 2048 modes; the interfaces, ~0.006
    wide, are resolved from 512 modes on; the default reference uses 1024)."""
    u = {n: at_time(solve_allen_cahn(n, dt=2e-3, n_times=11), 1.0) for n in (256, 512, 1024)}
    coarse, fine = np.abs(u[512] - u[256]).max(), np.abs(u[1024] - u[512]).max()
    assert fine < 1e-4 and coarse / fine > 100, (coarse, fine)


def test_fourth_order_in_time():
    """Halving dt divides the change by ~16 (ETDRK4), on a short run with few modes."""
    u = {
        dt: at_time(solve_allen_cahn(128, dt=dt, t_end=0.5, n_times=2), 0.5)
        for dt in (0.02, 0.01, 0.005)
    }
    first, second = np.abs(u[0.01] - u[0.02]).max(), np.abs(u[0.005] - u[0.01]).max()
    assert 10 < first / second < 25, (first, second)


def test_the_series_reproduces_the_initial_grid_values_and_shape():
    solution = solve_allen_cahn(64, dt=0.01, t_end=0.1, n_times=3)
    grid = -1 + 2 * np.arange(64) / 64
    u0 = evaluate(solution, grid, np.zeros_like(grid))
    np.testing.assert_allclose(u0, initial_condition(grid), atol=1e-12)
    assert solution["coefficients"].shape == (3, 33)


def test_the_benchmark_solution_has_its_known_features(tmp_path, monkeypatch):
    """u stays in [-1, 1], is even in x (so is the initial datum), sits at the stable state -1 at
    the periodic seam, and is cached."""
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path))
    solution = allen_cahn_reference(modes=512, dt=2e-3)
    u = at_time(solution, 1.0)
    assert np.abs(u).max() <= 1.0
    np.testing.assert_allclose(u, u[::-1], atol=1e-10)
    assert u[0] == pytest.approx(-1.0, abs=1e-3)
    assert len(list(tmp_path.glob("allen_cahn-*.npz"))) == 1


def test_bad_values_raise():
    with pytest.raises(ValueError, match="modes=7"):
        solve_allen_cahn(7)
