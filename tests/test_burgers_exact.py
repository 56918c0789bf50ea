"""Checks of the exact Burgers benchmark solution against properties it must have.

Each check targets a different way the Cole-Hopf evaluation could be wrong: the quadrature
(adaptive-quad comparison), the formula itself (PDE residual, flux balance, an independent
finite-difference solve) and the physics people compare against (the published max slope).
Tolerances are set from measured values with a margin of 2-5x, and each comment says what a
wrong solution would produce instead.
"""

import numpy as np
import pytest
from scipy.integrate import quad, simpson
from scipy.optimize import minimize_scalar

from mpsciml.problems.burgers_exact import NU, T_FINAL, burgers_exact, burgers_exact_grid
from mpsciml.problems.burgers_fd import burgers_fd


def _quad_reference(x: float, t: float, nu: float = NU) -> float:
    """Same Cole-Hopf ratio, integrated adaptively in eta instead of by Gauss-Hermite in z.

    The exponent g is shifted by its maximum (found by dense sampling) so the integrands are
    O(1), and quad is split at every local maximum of g so no peak can be stepped over.
    Beyond |eta| = L the integrand is below exp(-100) of its peak.
    """
    a = 4.0 * nu * t

    def g(eta: np.ndarray | float) -> np.ndarray | float:
        return -np.cos(np.pi * (x - eta)) / (2.0 * np.pi * nu) - eta**2 / a

    half_width = np.sqrt(200.0 * a)
    eta = np.linspace(-half_width, half_width, 200_001)
    ge = g(eta)
    g_max = ge.max()
    peaks = np.flatnonzero((ge[1:-1] >= ge[:-2]) & (ge[1:-1] >= ge[2:])) + 1
    opts = {"points": eta[peaks], "limit": 2000, "epsrel": 1e-13}
    den, _ = quad(lambda e: np.exp(g(e) - g_max), -half_width, half_width, epsabs=0.0, **opts)
    num, _ = quad(
        lambda e: np.sin(np.pi * (x - e)) * np.exp(g(e) - g_max),
        -half_width,
        half_width,
        epsabs=1e-13 * den,  # the numerator passes through 0 (at x = 0, +-1): absolute floor
        **opts,
    )
    return -num / den


def _u_x(x: np.ndarray | float, t: np.ndarray | float, h: float = 1e-6) -> np.ndarray:
    # h = 1e-6 is 1e4 times below the shock width (~0.01): truncation ~1e-7 relative.
    return (burgers_exact(np.add(x, h), t) - burgers_exact(np.subtract(x, h), t)) / (2.0 * h)


@pytest.fixture(scope="module")
def grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return burgers_exact_grid()


def test_grid_matches_reference_data_layout(grid: tuple[np.ndarray, ...]) -> None:
    x, t, u = grid
    assert x.shape == (256,) and t.shape == (100,) and u.shape == (100, 256)
    assert u.dtype == np.float64 and np.isfinite(u).all()
    np.testing.assert_allclose(t, np.arange(100) * 0.01, atol=1e-15)
    assert x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_array_equal(u[37], burgers_exact(x, t[37]))


def test_initial_condition(grid: tuple[np.ndarray, ...]) -> None:
    x, _, u = grid
    np.testing.assert_array_equal(u[0], -np.sin(np.pi * x))
    # The quadrature branch must approach the same data continuously: u = u0 + O(t). A sign
    # error in the Cole-Hopf ratio would give +sin here.
    np.testing.assert_allclose(burgers_exact(x, 1e-9), -np.sin(np.pi * x), atol=1e-7)


def test_boundary_values(grid: tuple[np.ndarray, ...]) -> None:
    _, _, u = grid
    assert np.abs(u[:, 0]).max() < 1e-13  # measured 3e-16
    assert np.abs(u[:, -1]).max() < 1e-13


def test_odd_symmetry() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 2000), rng.uniform(-0.02, 0.02, 500)])
    t = rng.uniform(0, T_FINAL, x.size)
    np.testing.assert_allclose(burgers_exact(-x, t), -burgers_exact(x, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("t", [0.25, 0.5, T_FINAL])
def test_integral_of_u(t: float) -> None:
    # Whole domain: d/dt int u = nu [u_x]_{-1}^{1} = 0 since u_x is even, so int u stays 0.
    x = np.linspace(-1.0, 1.0, 40_001)
    assert abs(simpson(burgers_exact(x, t), x=x)) < 1e-12
    # Half domain is a real balance law: d/dt int_0^1 u = nu (u_x(1) - u_x(0)) because u = 0
    # at both ends. Measured mismatch <= 2e-9 on values up to 0.27; nu off by 0.1% would
    # change the right side by ~3e-4.
    xh = np.linspace(0.0, 1.0, 20_001)
    lhs = simpson(burgers_exact(xh, t), x=xh) + 2.0 / np.pi
    rhs, _ = quad(lambda s: NU * (_u_x(1.0, s) - _u_x(0.0, s)), 0.0, t, epsabs=1e-12)
    assert abs(lhs - rhs) < 2e-8


def test_gauss_hermite_matches_adaptive_quad() -> None:
    xs = np.array([-1.0, -0.7, -0.3, -0.05, -0.01, -2e-3, 0.0, 1e-4, 1e-3, 5e-3, 0.02, 0.5, 0.9])
    ts = np.array([1e-3, 0.1, 1 / np.pi, 0.4, 0.51, 0.75, 0.9, T_FINAL])
    X, T = np.meshgrid(xs, ts)
    ref = np.vectorize(_quad_reference)(X, T)
    err = np.abs(burgers_exact(X, T) - ref)
    assert err.max() <= 1e-10  # measured 3e-15 with the default 120 nodes
    # The comparison is sharp enough to see an under-resolved rule: 60 nodes err by ~1e-9
    # at t = 0.99 where the integrand's peaks sit at |z| ~ 9.
    assert np.abs(burgers_exact(X, T, n_nodes=60) - ref).max() > 1e-10


def _pde_residual(x: np.ndarray, t: np.ndarray, h: float) -> np.ndarray:
    up, u0, um = burgers_exact(x + h, t), burgers_exact(x, t), burgers_exact(x - h, t)
    u_t = (burgers_exact(x, t + h) - burgers_exact(x, t - h)) / (2.0 * h)
    return u_t + u0 * (up - um) / (2.0 * h) - NU * (up - 2.0 * u0 + um) / h**2


def test_satisfies_pde() -> None:
    ts = np.linspace(0.05, 0.98, 12)
    away = np.concatenate([np.linspace(-0.95, -0.1, 18), np.linspace(0.1, 0.95, 18)])
    X, T = np.meshgrid(away, ts)
    r_coarse = np.abs(_pde_residual(X, T, 5e-4)).max()
    r_fine = np.abs(_pde_residual(X, T, 2.5e-4)).max()
    # Measured 7.3e-6 at h = 2.5e-4; a solution computed with nu 0.1% off gives 1.6e-4.
    assert r_fine < 2e-5
    # Second-order stencils: an exact solution leaves only O(h^2) truncation, so halving h
    # quarters the residual (measured 4.00); a wrong solution plateaus (ratio ~1.0-1.1).
    assert 3.6 < r_coarse / r_fine < 4.4
    # Same through the shock, where u_xx ~ 1e4 makes any error in nu glaring.
    Xs, Ts = np.meshgrid(np.array([-0.01, -0.003, 0.0, 0.003, 0.01]), ts)
    ratio = np.abs(_pde_residual(Xs, Ts, 5e-4)).max() / np.abs(_pde_residual(Xs, Ts, 2.5e-4)).max()
    assert 3.6 < ratio < 4.4


def test_agrees_with_finite_differences() -> None:
    t_eval = np.array([0.25, 0.5, T_FINAL])
    errors = []
    for nx in (1001, 2001):
        x, u_fd = burgers_fd(nx, t_eval)
        u_ex = burgers_exact(x[None, :], t_eval[:, None])
        errors.append(np.linalg.norm(u_fd - u_ex, axis=1) / np.linalg.norm(u_ex, axis=1))
    coarse, fine = errors
    # Measured at nx = 2001: 9.7e-6, 1.2e-4, 8.5e-5 (largest just after the max slope).
    assert fine.max() < 3e-4
    # The FD scheme is second order, so if the exact solution is right the gap is all FD
    # error and shrinks 4x per halving of dx (measured 3.99-4.02). An error in the exact
    # solution would not shrink with the FD grid.
    np.testing.assert_array_less(3.6, coarse / fine)
    np.testing.assert_array_less(coarse / fine, 4.4)


def test_steepest_gradient() -> None:
    # At t = 0.99 the steepest point is the stationary shock at x = 0, slope -85.115.
    x = np.linspace(-1.0, 1.0, 2001)
    slope = _u_x(x, T_FINAL)
    assert x[np.argmin(slope)] == 0.0
    assert -85.2 < slope.min() < -85.0
    # Published benchmark (Basdevant et al., Comput. Fluids 14, 1986): max |u_x| = 152.00516,
    # reached at t = 1.6037/pi, i.e. before t = 0.99; the slope at x = 0 decays afterwards.
    res = minimize_scalar(
        lambda s: _u_x(0.0, s), bounds=(0.4, 0.6), method="bounded", options={"xatol": 1e-8}
    )
    assert abs(-res.fun - 152.00516) < 1e-4
    assert abs(res.x * np.pi - 1.6037) < 1e-3


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        burgers_exact(0.0, -0.1)
    with pytest.raises(ValueError):
        burgers_exact(0.0, 0.5, n_nodes=1000)
    with pytest.raises(ValueError):
        burgers_fd(101, np.array([0.5]))  # cell Peclet number > 2
