"""Diffusion-reaction solver: second-order convergence, conditions held, batch = one by one."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from mpsciml.data.diffusion_reaction import (
    make_diffusion_reaction_data,
    solve_diffusion_reaction,
)

D, K = 0.01, -0.01


def exact(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """u* = sin(pi t) sin(pi x) (1 + x): zero at t = 0 and at both walls, not symmetric in x."""
    return np.sin(np.pi * t) * np.sin(np.pi * x) * (1.0 + x)


def forcing(x: np.ndarray, t: float) -> np.ndarray:
    """f = u*_t - D u*_xx - K u*^2, so that u* solves u_t = D u_xx + K u^2 + f."""
    g = np.sin(np.pi * x) * (1.0 + x)
    g_xx = -(np.pi**2) * g + 2.0 * np.pi * np.cos(np.pi * x)
    s = np.sin(np.pi * t)
    return np.pi * np.cos(np.pi * t) * g - D * s * g_xx - K * (s * g) ** 2


def max_error(n: int) -> float:
    x, t, u = solve_diffusion_reaction(forcing, nx=n, nt=n, diffusion=D, reaction=K)
    return float(np.abs(u - exact(x[None, :], t[:, None])).max())


def test_manufactured_solution_converges_at_second_order() -> None:
    sizes = [21, 41, 81, 161]  # dx = dt halve together
    errors = np.array([max_error(n) for n in sizes])
    orders = np.log2(errors[:-1] / errors[1:])
    assert errors[-1] < 1e-4
    assert np.all(orders > 1.9), f"observed orders {orders}, errors {errors}"


def test_reaction_sign_matters() -> None:
    # The manufactured forcing assumes K = -0.01; solving with +0.01 must visibly miss u*,
    # so the convergence test above really checks the reaction term.
    x, t, u = solve_diffusion_reaction(forcing, nx=81, nt=81, diffusion=D, reaction=-K)
    assert np.abs(u - exact(x[None, :], t[:, None])).max() > 10 * max_error(81)


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return make_diffusion_reaction_data(16, m=50, nx=101, nt=101, seed=4)


def test_dataset_shapes(data: dict[str, np.ndarray]) -> None:
    assert data["branch"].shape == (16, 50)
    assert data["sensors"].shape == (50,)
    assert data["source"].shape == (16, 101)
    assert data["u"].shape == (16, 101, 101)
    assert data["trunk"].shape == (101 * 101, 2)
    # trunk rows follow u.reshape(N, -1): t-major, x-minor, columns (x, t).
    j = 3 * 101 + 7
    np.testing.assert_array_equal(data["trunk"][j], [data["x"][7], data["t"][3]])


def test_initial_and_boundary_conditions(data: dict[str, np.ndarray]) -> None:
    u = data["u"]
    assert np.all(u[:, 0, :] == 0.0)
    assert np.all(u[:, :, 0] == 0.0) and np.all(u[:, :, -1] == 0.0)
    assert np.abs(u[:, -1, 1:-1]).max() > 0.1  # and the source really drove something


def test_branch_and_source_are_the_same_function(data: dict[str, np.ndarray]) -> None:
    on_grid = CubicSpline(data["x"], data["source"], axis=1)(data["sensors"])
    np.testing.assert_allclose(data["branch"], on_grid, rtol=0, atol=1e-5)


def test_dataset_solves_the_pde(data: dict[str, np.ndarray]) -> None:
    # The stored u, v satisfy the PDE up to discretisation error: the CN residual with the
    # reaction averaged over each step is O(dt^2 + dx^2), far below |v| ~ 1.
    u, v = data["u"], data["source"][:, None, 1:-1]
    dt, dx = data["t"][1] - data["t"][0], data["x"][1] - data["x"][0]
    u_t = (u[:, 1:, 1:-1] - u[:, :-1, 1:-1]) / dt
    lap = (u[:, :, 2:] - 2.0 * u[:, :, 1:-1] + u[:, :, :-2]) / dx**2
    mid = lambda a: 0.5 * (a[:, 1:] + a[:, :-1])  # noqa: E731
    residual = u_t - D * mid(lap) - K * mid(u[:, :, 1:-1] ** 2) - v
    assert np.abs(residual).max() < 1e-3 * np.abs(v).max()


def test_batch_solve_equals_one_by_one(data: dict[str, np.ndarray]) -> None:
    sources = data["source"][:5]
    _, _, batch = solve_diffusion_reaction(sources, nx=101, nt=51)
    for i, v in enumerate(sources):
        _, _, single = solve_diffusion_reaction(v, nx=101, nt=51)
        assert single.shape == (51, 101)
        np.testing.assert_allclose(batch[i], single, rtol=0, atol=1e-14)


def test_batched_callable_source() -> None:
    amplitudes = np.array([0.5, 1.0, 2.0])

    def f(x: np.ndarray, t: float) -> np.ndarray:
        return amplitudes[:, None] * np.sin(np.pi * x)[None, :] * (1.0 + t)

    _, _, u = solve_diffusion_reaction(f, nx=41, nt=41)
    _, _, u1 = solve_diffusion_reaction(lambda x, t: f(x, t)[1], nx=41, nt=41)
    assert u.shape == (3, 41, 41)
    np.testing.assert_allclose(u[1], u1, rtol=0, atol=1e-14)


def test_unsafe_explicit_reaction_is_refused() -> None:
    with pytest.raises(ValueError, match="explicit reaction"):
        solve_diffusion_reaction(np.full(21, 100.0), nx=21, nt=3, reaction=-1.0)


def test_rejects_wrong_source_shape() -> None:
    with pytest.raises(ValueError, match="source must have shape"):
        solve_diffusion_reaction(np.zeros(10), nx=21, nt=5)
