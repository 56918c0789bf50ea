"""Gaussian random fields: the right distribution, reproducible, and usable as functions."""

from __future__ import annotations

import numpy as np
import pytest

from mpsciml.data.grf import GaussianRandomField, rbf_kernel, sensor_points

N_SAMPLES = 4000


@pytest.fixture(scope="module")
def grf() -> GaussianRandomField:
    return GaussianRandomField(length_scale=0.2, n_grid=1001)


@pytest.fixture(scope="module")
def samples(grf: GaussianRandomField) -> np.ndarray:
    return grf.sample(N_SAMPLES, seed=123)[1]


def test_sample_mean_is_zero(samples: np.ndarray) -> None:
    # Each grid value is N(0, 1): the sample mean has standard error 1 / sqrt(n).
    tol = 5.0 / np.sqrt(N_SAMPLES)
    assert np.abs(samples.mean(axis=0)).max() < tol


def test_empirical_covariance_matches_kernel(grf: GaussianRandomField, samples: np.ndarray) -> None:
    idx = np.arange(0, grf.n_grid, 50)  # 21 points, distances 0 .. 1 (kernel 1 .. 4e-6)
    x = grf.grid[idx]
    kernel = rbf_kernel(x, x, grf.length_scale)
    emp = samples[:, idx].T @ samples[:, idx] / N_SAMPLES  # mean known to be zero
    # For Gaussian data Var(mean of a_i a_j) = (K_ii K_jj + K_ij^2) / n; allow 5 sigma per entry.
    tol = 5.0 * np.sqrt((1.0 + kernel**2) / N_SAMPLES)
    assert np.all(np.abs(emp - kernel) < tol)
    # And the length scale is really l: at distance l the correlation is exp(-1/2), not exp(-2)
    # or exp(-1/8) as with a mixed-up 2 l^2 or l vs l^2.
    near = np.argmin(np.abs(x - x[0] - grf.length_scale))
    assert abs(emp[0, near] - np.exp(-0.5)) < tol[0, near]


def test_truncated_covariance_equals_kernel(grf: GaussianRandomField) -> None:
    kernel = rbf_kernel(grf.grid, grf.grid, grf.length_scale)
    assert np.abs(grf.covariance() - kernel).max() < 1e-9
    assert 10 <= grf.n_modes <= 40
    assert 0.0 <= grf.truncated_variance < 1e-10


def test_same_seed_same_sample_different_seed_different(grf: GaussianRandomField) -> None:
    grid_a, a = grf.sample(5, seed=7)
    grid_b, b = grf.sample(5, seed=7)
    _, c = grf.sample(5, seed=8)
    np.testing.assert_array_equal(grid_a, grid_b)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0.1
    # A Generator is consumed: two draws from one Generator are different fields.
    rng = np.random.default_rng(7)
    first, second = grf.sample(5, rng)[1], grf.sample(5, rng)[1]
    np.testing.assert_array_equal(first, a)
    assert np.abs(first - second).max() > 0.1


def test_samples_are_smooth(samples: np.ndarray) -> None:
    # A smooth field with l = 0.2 has third differences ~5e-7 rms on h = 1e-3 (h^3 |v'''|);
    # white noise from a Cholesky jitter of 1e-13 already triples that, so it would fail here.
    third = np.diff(samples[:50], n=3, axis=1)
    assert np.sqrt(np.mean(third**2)) < 8e-7


def test_interpolation_exact_at_grid_points_and_accurate_between(
    grf: GaussianRandomField, samples: np.ndarray
) -> None:
    values = samples[:10]
    np.testing.assert_allclose(grf.interpolate(values, grf.grid), values, rtol=0, atol=1e-13)
    # Between grid points: a known smooth function is reproduced to spline accuracy (h^4).
    smooth = np.sin(3.0 * grf.grid) + grf.grid**2
    pts = np.random.default_rng(0).uniform(0.0, 1.0, 300)
    got = grf.interpolate(smooth[None], pts)[0]
    np.testing.assert_allclose(got, np.sin(3.0 * pts) + pts**2, rtol=0, atol=1e-10)


def test_sensors(grf: GaussianRandomField, samples: np.ndarray) -> None:
    sensors = sensor_points(101)
    assert sensors[0] == 0.0 and sensors[-1] == 1.0
    branch = grf.at_sensors(samples[:3], 101)
    assert branch.shape == (3, 101)
    # 101 sensors sit on every 10th point of the 1001-point grid.
    np.testing.assert_allclose(branch, samples[:3, ::10], rtol=0, atol=1e-13)


def test_rejects_points_outside_domain(grf: GaussianRandomField, samples: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        grf.interpolate(samples[:1], np.array([0.5, 1.2]))


def test_field_does_not_depend_on_grid_resolution() -> None:
    # The modes are functions of x, not of the grid: one seed is one field on any grid.
    fine = GaussianRandomField(n_grid=1001).sample(4, seed=9)[1]
    coarse = GaussianRandomField(n_grid=201).sample(4, seed=9)[1]
    np.testing.assert_allclose(fine[:, ::5], coarse, rtol=0, atol=1e-10)


@pytest.mark.parametrize("length_scale", [0.1, 0.05])
def test_other_length_scales_reproduce_their_kernel(length_scale: float) -> None:
    grf = GaussianRandomField(length_scale=length_scale, n_grid=401)
    kernel = rbf_kernel(grf.grid, grf.grid, length_scale)
    assert np.abs(grf.covariance() - kernel).max() < 1e-9
