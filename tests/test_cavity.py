"""The lid-driven cavity: our steady solver converges and agrees with Ghia et al. (1982), the
PINN problem's conditions and reference are the solver's, and it trains in every precision."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from problem_runs import EVERY_PRECISION, tiny_problem_run
from scipy.interpolate import CubicSpline

from mpsciml.data.cavity_solver import (
    GAUGE,
    _continuation,
    cavity_reference,
    lid_velocity,
    solve_cavity,
)
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.lid_driven_cavity import LidDrivenCavity

# Ghia, Ghia & Shin, J. Comput. Phys. 48 (1982) 387-411, Tables I and II, Re = 100: u on the
# vertical centreline x = 0.5 at y, and v on the horizontal centreline y = 0.5 at x.
GHIA_U = [
    (0.9766, 0.84123), (0.9688, 0.78871), (0.9609, 0.73722), (0.9531, 0.68717),
    (0.8516, 0.23151), (0.7344, 0.00332), (0.6172, -0.13641), (0.5000, -0.20581),
    (0.4531, -0.21090), (0.2813, -0.15662), (0.1719, -0.10150), (0.1016, -0.06434),
    (0.0703, -0.04775), (0.0625, -0.04192), (0.0547, -0.03717),
]  # fmt: skip
GHIA_V = [
    (0.9688, -0.05906), (0.9609, -0.07391), (0.9531, -0.08864), (0.9453, -0.10313),
    (0.9063, -0.16914), (0.8594, -0.22445), (0.8047, -0.24533), (0.5000, 0.05454),
    (0.2344, 0.17527), (0.2266, 0.17507), (0.1563, 0.16077), (0.0938, 0.12317),
    (0.0781, 0.10890), (0.0703, 0.10091), (0.0625, 0.09233),
]  # fmt: skip
# Ghia's values are themselves a 129^2 second-order solution: spectral solutions at Re = 100
# (e.g. Botella & Peyret's method) give min v = -0.2538 at x = 0.810, where Ghia list -0.24533 at
# 0.8047, so their table is good to ~0.008. We allow 0.015: their error plus ours at 128^2 cells.
GHIA_TOLERANCE = 0.015


def centrelines(solution: dict[str, np.ndarray]) -> tuple[CubicSpline, CubicSpline]:
    """u(0.5, y) and v(x, 0.5) as splines through the nodes of the centrelines."""
    mid = (len(solution["x"]) - 1) // 2
    x = solution["x"]
    return CubicSpline(x, solution["u"][mid, :]), CubicSpline(x, solution["v"][:, mid])


@pytest.fixture(scope="module")
def ladder() -> dict[int, dict[str, np.ndarray]]:
    """The standard cavity at Re = 100 on 16^2, 32^2 and 64^2 cells (~1.5 s together)."""
    return {n: solve_cavity(n, 100.0, "discontinuous") for n in (16, 32, 64)}


def test_newton_solves_the_discrete_equations(ladder):
    for solution in ladder.values():
        assert float(solution["residual"]) < 1e-7  # the solver stops at 1e-10 n^2
        assert np.all(solution["u"][1:-1, -1] == 1.0)  # the lid
        assert solution["u"][0, -1] == solution["u"][-1, -1] == 0.0  # the corners: side walls
        assert np.abs(solution["v"][[0, -1], :]).max() == 0.0


def test_centreline_velocities_converge_at_second_order(ladder):
    """The change between successive grids, at the coarse grid's centreline nodes, shrinks by ~4
    per halving of h (ratio > 3: second order; a first-order wall formula would give ~2)."""
    points = np.linspace(0.0, 1.0, 17)
    lines = {n: centrelines(sol) for n, sol in ladder.items()}
    changes = []
    for coarse, fine in ((16, 32), (32, 64)):
        du = np.abs(lines[fine][0](points) - lines[coarse][0](points)).max()
        dv = np.abs(lines[fine][1](points) - lines[coarse][1](points)).max()
        changes.append((du, dv))
    (du1, dv1), (du2, dv2) = changes
    assert du1 / du2 > 3.0 and dv1 / dv2 > 3.0, changes
    assert du2 < 0.02 and dv2 < 0.02  # 32^2 -> 64^2 moves the centrelines by ~0.01


def test_the_64_grid_is_already_near_ghia(ladder):
    u_line, v_line = centrelines(ladder[64])
    assert max(abs(u_line(y) - u) for y, u in GHIA_U) < GHIA_TOLERANCE
    assert max(abs(v_line(x) - v) for x, v in GHIA_V) < GHIA_TOLERANCE


@pytest.mark.slow
def test_the_128_grid_matches_ghia_and_the_regularised_lid_stays_close():
    """The cached reference of the PINN problem's default grid (~10 s per solve)."""
    standard = solve_cavity(128, 100.0, "discontinuous")
    u_line, v_line = centrelines(standard)
    assert max(abs(u_line(y) - u) for y, u in GHIA_U) < GHIA_TOLERANCE  # measured 0.0043
    assert max(abs(v_line(x) - v) for x, v in GHIA_V) < GHIA_TOLERANCE  # 0.0084, at x = 0.8047
    smooth_u, smooth_v = centrelines(solve_cavity(128, 100.0, "regularised"))
    points = np.linspace(0.0, 1.0, 129)
    assert np.abs(smooth_u(points) - u_line(points)).max() < 0.005  # measured 0.0014
    assert np.abs(smooth_v(points) - v_line(points)).max() < 0.005  # measured 0.0008


def test_regularised_lid_pressure_converges_and_is_gauged():
    """The smooth lid's pressure (least squares from the momentum equations) converges at second
    order at the interior nodes of an 8^2-cell grid (the change shrinks by > 3 per halving of h).
    Not at the top corners: there U ~ distance, and p has a limit that depends on the direction
    of approach, so the corner node itself has no limit (module docstring)."""
    fields = {n: solve_cavity(n, 100.0, "regularised", exponent=4) for n in (16, 32, 64)}
    coarse = [fields[n]["p"][:: n // 8, :: n // 8][1:-1, 1:-1] for n in (16, 32, 64)]
    first, second = np.abs(coarse[1] - coarse[0]).max(), np.abs(coarse[2] - coarse[1]).max()
    assert first / second > 3.0, (first, second)
    for n, solution in fields.items():
        assert solution["p"][int(GAUGE[0] * n), int(GAUGE[1] * n)] == 0.0


def test_continuation_reaches_higher_reynolds_numbers():
    assert _continuation(100.0) == [100.0]
    stages = _continuation(1000.0)
    assert stages[0] == 100.0 and stages[-1] == pytest.approx(1000.0)
    assert all(b / a <= 2.5 + 1e-9 for a, b in itertools.pairwise(stages))
    solution = solve_cavity(16, 400.0, "regularised")
    assert float(solution["residual"]) < 1e-7  # the solver stops at 1e-10 n^2


def test_the_lid_profiles():
    x = np.array([0.0, 0.25, 0.5, 1.0])
    assert lid_velocity(x, "discontinuous").tolist() == [0.0, 1.0, 1.0, 0.0]
    smooth = lid_velocity(torch.tensor(x), "regularised", 16)
    assert smooth[0] == smooth[-1] == 0.0 and smooth[2] == 1.0
    with pytest.raises(ValueError, match=r"problem\.lid='sliding'"):
        lid_velocity(x, "sliding")


@pytest.mark.parametrize(
    ("key", "value"),
    [("lid", "sliding"), ("lid_exponent", 3), ("resolution", 33), ("reynolds", -1.0),
     ("n_boundary", 2)],
)  # fmt: skip
def test_bad_values_are_one_line_errors(key, value):
    with pytest.raises(ValueError, match=f"problem.{key}="):
        LidDrivenCavity(**{key: value})


def test_conditions_sit_where_they_should():
    problem = LidDrivenCavity(n_domain=50, n_boundary=40, resolution=8)
    conditions = problem.conditions(0)
    lid, walls = conditions["lid"].points, conditions["walls"].points
    assert len(lid) == 10 and len(walls) == 30
    assert torch.all(lid[:, 1] == 1.0)
    on_wall = (walls[:, 0] == 0.0) | (walls[:, 0] == 1.0) | (walls[:, 1] == 0.0)
    assert torch.all(on_wall) and torch.all(walls[:, 1] < 1.0)
    assert torch.all(conditions["gauge"].points == torch.tensor(GAUGE, dtype=torch.float64))
    interior = conditions["pde"].points
    assert interior.shape == (50, 2) and torch.all((interior > 0) & (interior < 1))


def test_the_lid_residual_vanishes_for_the_lid_profile():
    problem = LidDrivenCavity(resolution=8, lid_exponent=4)
    points = problem.conditions(1)["lid"].points.requires_grad_(True)
    x = points[:, :1]
    outputs = torch.cat([lid_velocity(x, "regularised", 4), 0 * x, 0 * x], dim=1)
    residual = problem.lid_condition(Derivatives(points, outputs, ("x", "y"), ("u", "v", "p")))
    assert torch.all(residual["u"] == 0) and torch.all(residual["v"] == 0)


def test_reference_is_the_solver_at_its_nodes(tmp_path, monkeypatch):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path))
    problem = LidDrivenCavity(resolution=16, evaluation_grid=(17, 17))
    grid = problem.evaluation_grid()
    reference = problem.reference(grid.points).reshape(17, 17, 3)
    solution = cavity_reference(16, 100.0, "regularised", 16)
    for i, name in enumerate(("u", "v", "p")):
        np.testing.assert_allclose(reference[..., i].numpy(), solution[name], atol=1e-12)
    assert len(list(tmp_path.glob("lid_driven_cavity-*.npz"))) == 1  # cached


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_the_cavity_trains_in_every_precision(tmp_path, monkeypatch, precision):
    extra = ("problem.resolution=8", "problem.evaluation_grid=[9,9]")
    summary = tiny_problem_run(tmp_path, monkeypatch, "lid_driven_cavity", precision, *extra)
    assert summary["status"] == "ok"
    assert {"u", "v", "p"} <= set(summary["l2"]), summary["l2"]
