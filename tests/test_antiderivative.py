"""Antiderivative operator data: u' = v, u(0) = 0, exact for the spline, layouts consistent."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad
from scipy.interpolate import CubicSpline

from mpsciml.data.antiderivative import (
    antiderivative_interpolant,
    cached_antiderivative_data,
    evaluate_pairs,
    make_antiderivative_data,
)
from mpsciml.data.grf import GaussianRandomField


@pytest.fixture(scope="module")
def grf() -> GaussianRandomField:
    return GaussianRandomField(length_scale=0.2, n_grid=1001)


@pytest.fixture(scope="module")
def fields(grf: GaussianRandomField) -> np.ndarray:
    return grf.sample(8, seed=5)[1]


def test_derivative_of_u_is_v(grf: GaussianRandomField, fields: np.ndarray) -> None:
    u = antiderivative_interpolant(grf, fields)
    v = grf.interpolant(fields)
    x = np.random.default_rng(1).uniform(0.01, 0.99, 400)
    h = 1e-4
    du = (u(x + h) - u(x - h)) / (2.0 * h)  # error h^2 |v''| / 6 ~ 1e-8
    np.testing.assert_allclose(du, v(x), rtol=0, atol=1e-6)


def test_u_matches_independent_quadrature_of_the_spline(
    grf: GaussianRandomField, fields: np.ndarray
) -> None:
    u = antiderivative_interpolant(grf, fields)
    v = grf.interpolant(fields)
    for i, x in [(0, 0.37), (3, 0.9), (7, 1.0)]:
        ref, _ = quad(lambda s, i=i: float(v(s)[i]), 0.0, x, limit=400, epsabs=1e-13)
        assert abs(u(x)[i] - ref) < 1e-10


def test_u_at_zero_is_zero() -> None:
    data = make_antiderivative_data(20, 50, seed=3)
    assert data["trunk"][0, 0] == 0.0
    assert np.all(data["outputs"][:, 0] == 0.0)


def test_integral_of_cosine_is_exact(grf: GaussianRandomField) -> None:
    omega = 2.0 * np.pi
    v = np.cos(omega * grf.grid)[None]
    x = np.linspace(0.0, 1.0, 777)
    u = antiderivative_interpolant(grf, v)(x)[0]
    np.testing.assert_allclose(u, np.sin(omega * x) / omega, rtol=0, atol=1e-8)


def test_evaluate_pairs_matches_full_evaluation(
    grf: GaussianRandomField, fields: np.ndarray
) -> None:
    u = antiderivative_interpolant(grf, fields)
    rng = np.random.default_rng(2)
    rows = rng.integers(0, fields.shape[0], 200)
    pts = np.concatenate([rng.uniform(0.0, 1.0, 197), [0.0, 1.0, grf.grid[500]]])
    full = u(pts)[rows, np.arange(pts.size)]
    np.testing.assert_allclose(evaluate_pairs(u, rows, pts), full, rtol=0, atol=1e-14)


def test_aligned_shapes() -> None:
    data = make_antiderivative_data(12, 30, m=100, layout="aligned", seed=0)
    assert data["branch"].shape == (12, 100)
    assert data["trunk"].shape == (30, 1)
    assert data["outputs"].shape == (12, 30)
    assert data["sensors"].shape == (100,)
    assert all(a.dtype == np.float64 for a in data.values())


def test_unaligned_shapes_and_agreement_with_aligned() -> None:
    n, p = 6, 25
    aligned = make_antiderivative_data(n, 1001, m=40, layout="aligned", seed=11)
    loose = make_antiderivative_data(n, p, m=40, layout="unaligned", seed=11)
    assert loose["branch"].shape == (n * p, 40)
    assert loose["trunk"].shape == (n * p, 1)
    assert loose["outputs"].shape == (n * p, 1)
    rows = loose["function_index"]
    np.testing.assert_array_equal(rows, np.repeat(np.arange(n), p))
    # Same seed, same functions: each unaligned row carries its function's aligned branch...
    np.testing.assert_array_equal(loose["branch"], aligned["branch"][rows])
    # ...and its target is that function's antiderivative at the row's point. The aligned data
    # on a 1001-point grid, re-interpolated, reproduce u to ~1e-12 (u is a piecewise quartic).
    u_dense = CubicSpline(aligned["trunk"][:, 0], aligned["outputs"], axis=1)
    expected = u_dense(loose["trunk"][:, 0])[rows, np.arange(rows.size)]
    np.testing.assert_allclose(loose["outputs"][:, 0], expected, rtol=0, atol=1e-9)
    pts = loose["trunk"][:, 0]
    assert pts.min() >= 0.0 and pts.max() <= 1.0 and np.unique(pts).size == pts.size


def test_seeds_give_distinct_reproducible_datasets() -> None:
    a = make_antiderivative_data(5, 10, seed=0)
    b = make_antiderivative_data(5, 10, seed=0)
    c = make_antiderivative_data(5, 10, seed=1)
    np.testing.assert_array_equal(a["outputs"], b["outputs"])
    assert np.abs(a["branch"] - c["branch"]).max() > 0.1


def test_cached_wrapper_round_trips(tmp_path) -> None:
    first = cached_antiderivative_data(4, 9, layout="unaligned", seed=2, root=tmp_path)
    again = cached_antiderivative_data(4, 9, layout="unaligned", seed=2, root=tmp_path)
    direct = make_antiderivative_data(4, 9, layout="unaligned", seed=2)
    assert len(list(tmp_path.glob("antiderivative-*.npz"))) == 1
    for key, value in direct.items():
        np.testing.assert_array_equal(first[key], value)
        np.testing.assert_array_equal(again[key], value)


def test_rejects_bad_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        make_antiderivative_data(2, 2, layout="ragged")  # type: ignore[arg-type]
