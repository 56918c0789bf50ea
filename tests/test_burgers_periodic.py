"""The periodic Burgers pseudo-spectral solver and data: Cole-Hopf, Galilean shift, samples.

Tiny grids (16-64 points, a handful of samples): the whole file runs in about a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpsciml.data import burgers_periodic as bp
from mpsciml.data.grf_grid import (
    evaluate_periodic,
    periodic_variance,
    sample_periodic_coefficients,
)

TINY = bp.BurgersOperatorParams(solve_grid=32, modes=8, dt=0.02)


def _cole_hopf(x: np.ndarray, t: float, nu: float, eps: float = 0.9) -> np.ndarray:
    """u = -2 nu phi_x / phi with phi = 1 + eps exp(-4 pi^2 nu t) cos(2 pi x), a heat solution:
    an exact, smooth, non-trivial (|u| up to 2.6 at nu = 0.1) Burgers solution."""
    decay = eps * np.exp(-4 * np.pi**2 * nu * t)
    return 4 * np.pi * nu * decay * np.sin(2 * np.pi * x) / (1 + decay * np.cos(2 * np.pi * x))


def test_matches_the_exact_cole_hopf_solution() -> None:
    x = bp.sample_coordinates(64)
    u = bp.solve_burgers(_cole_hopf(x, 0.0, 0.1), 0.1, 1.0, 1e-3)
    assert np.abs(u - _cole_hopf(x, 1.0, 0.1)).max() < 1e-9  # 3.7e-11 measured
    coarse = bp.solve_burgers(_cole_hopf(x, 0.0, 0.1), 0.1, 1.0, 1e-2)
    assert np.abs(coarse - _cole_hopf(x, 1.0, 0.1)).max() > 1e-8  # the bound is not vacuous


def test_mean_is_conserved_and_a_galilean_shift_is_exact() -> None:
    x = bp.sample_coordinates(64)
    v0 = _cole_hopf(x, 0.0, 0.1)
    c, t_end = 0.5, 0.4
    shifted = bp.solve_burgers(c + v0, 0.1, t_end, 1e-3)
    assert shifted.mean() == pytest.approx(c, abs=1e-13)
    # u(x, t) = c + v(x - c t, t): shift the exact solution by c t
    expected = c + _cole_hopf((x - c * t_end) % 1.0, t_end, 0.1)
    assert np.abs(shifted - expected).max() < 1e-9


def test_dealiasing_keeps_the_band() -> None:
    u0 = np.sin(2 * np.pi * 5 * bp.sample_coordinates(32))  # band of 32 points: |k| <= 10
    u = bp.solve_burgers(u0, 0.01, 0.2, 0.01)
    spectrum = np.abs(np.fft.rfft(u))
    assert spectrum[11:].max() < 1e-12 * spectrum.max()
    assert spectrum[10] > 1e-8 * spectrum.max()  # the nonlinear cascade did reach the band edge


def test_initial_field_statistics() -> None:
    coefficients = sample_periodic_coefficients(4000, 1, 1, 8, 2.0, 5.0, 25.0)
    u = evaluate_periodic(coefficients, (32,))
    var = periodic_variance(1, 8, 2.0, 5.0, 25.0)
    assert abs(u.mean()) < 5 * np.sqrt(var / 4000)  # each column: 4000 samples
    assert abs(u[:, 7].var() - var) < 5 * var * np.sqrt(2 / 4000)
    np.testing.assert_allclose(u.mean(axis=1), 0.0, atol=1e-12)  # no constant mode


def test_resolutions_sample_one_function(tmp_path: Path) -> None:
    coarse = bp.make_burgers_data(3, 4, 16, TINY, progress=False)
    fine = bp.burgers_dataset(3, 4, 64, TINY, root=tmp_path)  # 2x the solve grid: interpolated
    for key in ("initial", "final"):
        assert coarse[key].shape == (3, 16) and fine[key].shape == (3, 64)
        np.testing.assert_allclose(fine[key][:, ::4], coarse[key], atol=1e-13)
    assert np.abs(fine["final"] - fine["initial"]).max() > 0.1  # a non-trivial map
    again = bp.burgers_dataset(3, 4, 64, TINY, root=tmp_path)
    np.testing.assert_array_equal(again["final"], fine["final"])
    other = bp.make_burgers_data(3, 5, 16, TINY, progress=False)
    assert not np.array_equal(other["initial"], coarse["initial"])


def test_bad_configuration_is_rejected() -> None:
    with pytest.raises(ValueError, match="modes=11"):
        bp.BurgersOperatorParams(solve_grid=32, modes=11)
    with pytest.raises(ValueError, match="resolution=24"):
        bp.make_burgers_data(1, 0, 24, TINY, progress=False)
