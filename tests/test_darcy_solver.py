"""The Darcy finite-volume solver and data generator: order, symmetry, statistics, seeds.

Tiny grids only (8-32 cells, a few dozen samples): the whole file runs in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import load_generate_data_script
from scipy.sparse.linalg import spsolve

from mpsciml.data import darcy
from mpsciml.data.grf_grid import (
    cosine_basis,
    evaluate_neumann,
    neumann_mean_variance,
    neumann_sqrt_eigenvalues,
    sample_neumann_coefficients,
)

TINY = darcy.DarcyParams(modes=8, solve_grid=24)


def _manufactured(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coefficient, source and exact solution at the cell centres of an m x m grid for
    u = sin(pi x) sin(pi y), a = 2 + sin(2 pi x + 1) cos(3 pi y) (variable, in [1, 3])."""
    x = darcy.sample_coordinates(m)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    u = np.sin(np.pi * xx) * np.sin(np.pi * yy)
    u_x = np.pi * np.cos(np.pi * xx) * np.sin(np.pi * yy)
    u_y = np.pi * np.sin(np.pi * xx) * np.cos(np.pi * yy)
    a = 2.0 + np.sin(2 * np.pi * xx + 1.0) * np.cos(3 * np.pi * yy)
    a_x = 2 * np.pi * np.cos(2 * np.pi * xx + 1.0) * np.cos(3 * np.pi * yy)
    a_y = -3 * np.pi * np.sin(2 * np.pi * xx + 1.0) * np.sin(3 * np.pi * yy)
    f = -(a_x * u_x + a_y * u_y) + 2 * np.pi**2 * a * u  # -div(a grad u)
    return a, f, u


def test_second_order_on_a_manufactured_solution_with_variable_coefficient() -> None:
    errors = []
    for m in (8, 16, 32):
        a, f, exact = _manufactured(m)
        errors.append(np.abs(darcy.solve_darcy(a, f) - exact).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert errors[-1] < 3e-3  # 2.3e-3 measured (0.035, 0.0091 at 8, 16)
    assert np.all(orders > 1.8) and np.all(orders < 2.3), (errors, orders)


def test_batched_cg_matches_a_direct_sparse_solve() -> None:
    rng = np.random.default_rng(0)
    a = np.where(rng.standard_normal((3, 12, 12)) > 0, 12.0, 3.0)
    u = darcy.solve_darcy(a, 1.0)
    for k in range(3):
        direct = spsolve(darcy.darcy_matrix(a[k]).tocsc(), np.full(144, 1.0 / 144))
        np.testing.assert_allclose(u[k].ravel(), direct, rtol=1e-7, atol=1e-12)


def test_symmetric_coefficient_gives_a_symmetric_solution() -> None:
    psi = evaluate_neumann(sample_neumann_coefficients(1, 3, 8, 2.0, 3.0), np.arange(16) / 16)
    a = darcy.coefficient_field(psi[0] + psi[0].T, darcy.DarcyParams())
    u = darcy.solve_darcy(a, 1.0)
    asymmetric = darcy.solve_darcy(darcy.coefficient_field(psi[0], darcy.DarcyParams()), 1.0)
    assert np.abs(u - u.T).max() < 1e-9 * np.abs(u).max()
    assert np.abs(asymmetric - asymmetric.T).max() > 1e-3 * np.abs(u).max()  # not automatic


def test_samples_sit_at_fine_cell_centres() -> None:
    assert darcy.fine_grid(32, 96) == (96, 3)
    assert darcy.fine_grid(64, 96) == (192, 3)
    assert darcy.fine_grid(16, 96) == (112, 7)  # 80 < 96, next odd factor
    np.testing.assert_allclose(darcy.sample_coordinates(4), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_allclose(darcy.sample_coordinates(32), darcy.sample_coordinates(96)[1::3])


def test_dataset_is_the_fine_solve_at_the_coarse_centres() -> None:
    data = darcy.make_darcy_data(3, 11, 8, TINY, progress=False)
    m, q = darcy.fine_grid(8, TINY.solve_grid)
    psi = evaluate_neumann(
        sample_neumann_coefficients(3, 11, 8, 2.0, 3.0), darcy.sample_coordinates(m)
    )
    fine_a = darcy.coefficient_field(psi, TINY)
    fine_u = darcy.solve_darcy(fine_a, 1.0)
    keep = slice((q - 1) // 2, None, q)
    np.testing.assert_array_equal(data["coefficient"], fine_a[:, keep, keep])
    np.testing.assert_allclose(data["solution"], fine_u[:, keep, keep], rtol=1e-7)
    assert set(np.unique(data["coefficient"])) <= {3.0, 12.0}
    assert data["solution"].min() > 0  # maximum principle: f = 1 > 0, u = 0 on the walls


def test_refined_solve_of_a_user_coefficient() -> None:
    rng = np.random.default_rng(1)
    a = np.where(rng.standard_normal((8, 8)) > 0, 12.0, 3.0)
    np.testing.assert_allclose(darcy.solve_darcy_refined(a, refine=1), darcy.solve_darcy(a))
    fine = darcy.solve_darcy(np.kron(a, np.ones((3, 3))))
    np.testing.assert_allclose(darcy.solve_darcy_refined(a, refine=3), fine[1::3, 1::3])
    with pytest.raises(ValueError, match="refine=2"):
        darcy.solve_darcy_refined(a, refine=2)


def test_grf_statistics_match_the_covariance() -> None:
    n, modes, alpha, tau = 2000, 8, 2.0, 3.0
    points = darcy.sample_coordinates(16)
    psi = evaluate_neumann(sample_neumann_coefficients(n, 5, modes, alpha, tau), points)
    lam = neumann_sqrt_eigenvalues(modes, alpha, tau) ** 2
    # spatial mean of psi^2 is sum_k lambda_k xi_k^2 per sample: mean sum lambda, var 2 sum lambda^2
    mean_var = neumann_mean_variance(modes, alpha, tau)
    assert abs(np.mean(psi**2) - mean_var) < 5 * np.sqrt(2 * np.sum(lam**2) / n)
    # pointwise at (x, y) = points[3], points[10]: variance sum_k lambda_k phi_k(x, y)^2
    basis = cosine_basis(modes, points)
    var_point = float(np.einsum("kl,k,l->", lam, basis[:, 3] ** 2, basis[:, 10] ** 2))
    values = psi[:, 3, 10]
    assert abs(values.mean()) < 5 * np.sqrt(var_point / n)
    assert abs(values.var() - var_point) < 5 * var_point * np.sqrt(2 / n)
    # Li et al.'s scale: tau^(alpha - 1) (pi^2 |k|^2 + tau^2)^(-alpha / 2)
    assert neumann_sqrt_eigenvalues(modes, alpha, tau)[1, 0] == pytest.approx(3 / (np.pi**2 + 9))


def test_threshold_zero_puts_half_the_cells_high() -> None:
    psi = evaluate_neumann(sample_neumann_coefficients(400, 2, 16, 2.0, 3.0), np.arange(32) / 32)
    high = darcy.coefficient_field(psi, darcy.DarcyParams()) == 12.0
    assert abs(high.mean() - 0.5) < 0.04  # per-sample fractions vary (std ~0.15): 400 samples
    shifted = darcy.coefficient_field(psi, darcy.DarcyParams(threshold=0.3)) == 12.0
    assert shifted.mean() < high.mean() - 0.05


def test_seeded_reproducible_and_cached(tmp_path: Path) -> None:
    first = darcy.darcy_dataset(4, 7, 8, TINY, root=tmp_path)
    again = darcy.make_darcy_data(4, 7, 8, TINY, progress=False)
    other = darcy.make_darcy_data(4, 8, 8, TINY, progress=False)
    for key in ("coefficient", "solution"):
        np.testing.assert_array_equal(first[key], again[key])
        assert first[key].shape == (4, 8, 8)
    assert not np.array_equal(first["coefficient"], other["coefficient"])
    assert len(list(tmp_path.glob("darcy-*.npz"))) == 1
    cached = darcy.darcy_dataset(4, 7, 8, TINY, root=tmp_path)
    np.testing.assert_array_equal(cached["solution"], first["solution"])


def test_bad_parameters_name_the_key() -> None:
    with pytest.raises(ValueError, match="modes=200"):
        darcy.DarcyParams(modes=200)
    with pytest.raises(ValueError, match="low=0"):
        darcy.DarcyParams(low=0.0)
    with pytest.raises(ValueError, match="> 0"):
        darcy.solve_darcy(np.zeros((4, 4)))


def test_generate_data_script_builds_what_the_problem_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """scripts/generate_data.py keys the grid sets as the problem does (a tiny darcy.yaml)."""
    from mpsciml.problems.darcy import Darcy

    script = load_generate_data_script(monkeypatch)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "darcy.yaml").write_text(
        "problem:\n  n_train: 3\n  n_test: 2\n  resolution: 8\n  zero_shot_resolution: 16\n"
        "  n_zero_shot: 2\n  data_seed: 5\n  generator:\n    modes: 8\n    solve_grid: 24\n"
    )
    monkeypatch.setattr(script, "CONF_PROBLEMS", conf)
    root = tmp_path / "data"
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(root))
    assert script.main(["--data-dir", str(root), "--only", "darcy"]) == 0
    files = sorted(root.iterdir())
    assert len(files) == 3
    problem = Darcy(3, 2, 8, 16, 2, data_seed=5, generator={"modes": 8, "solve_grid": 24})
    assert problem.train_data().inputs.shape == (3, 1, 8, 8)
    assert problem.test_data().n_samples == 2 and problem.zero_shot_data().n_samples == 2
    assert sorted(root.iterdir()) == files  # nothing new was built
