"""The 2-D Poisson problem: its exact solutions satisfy their own equations and boundary data
(so the references are right), the singular corner solution has the right values and branch,
errors and plots count only the grid points inside the domain, bad values are one line, and it
trains in every precision, in Taylor mode and compiled."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, compose_config
from problem_runs import EVERY_PRECISION, tiny_problem_run

from mpsciml.compose import build
from mpsciml.config import ConfigError
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.metrics import relative_l2
from mpsciml.modules.pinn import PINNModule
from mpsciml.plots import plot_fields
from mpsciml.problems.poisson import DOMAINS, Poisson, corner_solution

SMALL = {"n_domain": 256, "n_boundary": 64}


def exact_derivatives(problem: Poisson, points: torch.Tensor) -> Derivatives:
    """Derivatives of the exact solution, as a residual would see a perfect network."""
    inputs = points.clone().requires_grad_(True)
    u = problem.exact(inputs[:, 0], inputs[:, 1]).unsqueeze(-1)
    return Derivatives(inputs, u, problem.input_names, problem.output_names)


@pytest.mark.parametrize("neumann", [False, True])
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_the_exact_solution_satisfies_every_condition(domain, neumann):
    problem = Poisson(domain=domain, neumann=neumann, **SMALL)
    conditions = problem.conditions(0)
    assert conditions["pde"].points.shape == (256, 2)
    assert sum(len(c.points) for name, c in conditions.items() if name != "pde") == 64
    assert torch.all(problem.domain.contains(conditions["pde"].points))
    if neumann:  # on the right and the top side (x = 1, y = 1 for all three domains)
        assert torch.all(conditions["neumann_x"].points[:, 0] == 1.0)
        assert torch.all(conditions["neumann_y"].points[:, 1] == 1.0)
        dirichlet = conditions["bc"].points
        assert not torch.any((dirichlet[:, 0] == 1.0) | (dirichlet[:, 1] == 1.0))
    for name, condition in conditions.items():
        residual = condition.residual(exact_derivatives(problem, condition.points))
        assert residual.abs().max() < 1e-9, (domain, name)


def test_a_wrong_solution_leaves_a_residual():
    """The checks above can fail: another amplitude misses the square's source, and the smooth
    mode alone misses the L-shape's boundary data."""
    right, wrong = Poisson(**SMALL), Poisson(amplitude=0.5, **SMALL)
    points = right.conditions(0)["pde"].points
    assert wrong.pde(exact_derivatives(right, points)).abs().max() > 1.0
    corner, square = Poisson(domain="l_shape", **SMALL), Poisson(**SMALL)
    edges = corner.conditions(0)["bc"].points
    assert corner.boundary(exact_derivatives(square, edges)).abs().max() > 0.5
    # and the smooth mode's slope is not the corner solution's normal derivative
    corner = Poisson(domain="l_shape", neumann=True, **SMALL)
    right = corner.conditions(0)["neumann_x"].points
    assert corner.flux_x(exact_derivatives(square, right)).abs().max() > 0.5


def test_the_reference_values():
    square = Poisson()
    points = torch.tensor([[0.5, 0.5], [0.125, 0.125], [0.0, 0.3]], dtype=torch.float64)
    expected = [1.0, math.sin(math.pi / 8) ** 2 + 0.25, 0.0]
    assert square.reference(points)[:, 0].tolist() == pytest.approx(expected, abs=1e-12)
    # the corner solution: theta = pi/2, pi, 3 pi/2, 0 and 5 pi/4 at r = sqrt(2)
    x = torch.tensor([0.0, -1.0, 0.0, 1.0, -1.0], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, -1.0, 0.0, -1.0], dtype=torch.float64)
    expected = [3**0.5 / 2, 3**0.5 / 2, 0.0, 0.0, 2 ** (1 / 3) / 2]
    assert corner_solution(x, y).tolist() == pytest.approx(expected, abs=1e-12)


def test_the_corner_solution_has_no_jump_on_the_edges_that_meet_at_the_corner():
    """The branch cut of theta lies in the missing quadrant: a y rounded to -1e-17 on the edge
    y = 0, x > 0 still gives u = 0 (atan2(y, x) mod 2 pi would give sin(4 pi / 3) there)."""
    x = torch.tensor([0.5, 1e-17, 0.5], dtype=torch.float64)
    y = torch.tensor([-1e-17, -0.5, 1e-17], dtype=torch.float64)
    assert corner_solution(x, y).abs().max() < 1e-12


def test_the_evaluation_grid_masks_the_points_outside():
    grid = Poisson(domain="l_shape").evaluation_grid()
    assert grid.points.shape == (101 * 101, 2) and grid.mask is not None
    assert int(grid.mask.sum()) == 101 * 101 - 50 * 50  # the open missing quadrant
    hole = Poisson(domain="square_hole", evaluation_grid=(41, 41)).evaluation_grid()
    centre = (hole.points - 0.5).norm(dim=1)
    assert not hole.mask[centre < 0.19].any() and hole.mask[centre > 0.21].all()


def test_errors_count_only_the_points_inside(tmp_path):
    problem = Poisson(domain="l_shape", evaluation_grid=(21, 21))
    grid = problem.evaluation_grid()
    reference = problem.reference(grid.points)
    module = SimpleNamespace(grid=grid, grid_reference=reference, problem=problem)
    exact_inside = torch.where(grid.mask[:, None], reference, 1e3)
    assert PINNModule.field_errors(module, exact_inside) == {"u": 0.0}
    off = reference + 0.1
    expected = relative_l2(off[grid.mask], reference[grid.mask])
    assert PINNModule.field_errors(module, off)["u"] == pytest.approx(expected)
    assert expected != pytest.approx(relative_l2(off, reference))
    # the plot blanks the outside (NaN) rather than drawing the meaningless reference there
    paths = plot_fields(grid, exact_inside, reference, ("x", "y"), ("u",), tmp_path, "l_shape")
    assert paths[0].exists()


def test_an_unknown_domain_is_one_line_naming_the_allowed_values(tmp_path):
    with pytest.raises(ValueError, match=r"problem.domain='disc'.*allowed: square, square_hole"):
        Poisson(domain="disc")
    cfg = compose_config([*TINY, "problem=poisson", "problem.domain=disc"], tmp_path / "run")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    assert str(refused.value).startswith("problem.domain=") and "\n" not in str(refused.value)


@pytest.mark.parametrize(("key", "value"), [("wavenumber", 2.5), ("n_boundary", 0)])
def test_bad_values_are_one_line_errors(key, value):
    with pytest.raises(ValueError, match=f"problem.{key}="):
        Poisson(**{key: value})


def test_neumann_needs_a_boundary_point_per_part():
    with pytest.raises(ValueError, match=r"problem.n_boundary=2 is too small for neumann=true"):
        Poisson(neumann=True, n_boundary=2)


TINY_POISSON = ("problem.domain=l_shape", "problem.neumann=true", "problem.evaluation_grid=[9,9]")


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_poisson_trains_in_every_precision(tmp_path, monkeypatch, precision):
    summary = tiny_problem_run(tmp_path, monkeypatch, "poisson", precision, *TINY_POISSON)
    assert summary["status"] == "ok" and math.isfinite(summary["l2"]["u"])


@pytest.mark.parametrize(
    "engine",
    [
        "derivatives=taylor",
        pytest.param("compile=true", marks=pytest.mark.slow),  # compiling costs seconds
    ],
)
def test_poisson_trains_in_taylor_mode_and_compiled(tmp_path, monkeypatch, engine):
    extra = (*TINY_POISSON, engine, "compile_backend=aot_eager")
    summary = tiny_problem_run(tmp_path, monkeypatch, "poisson", "fp32", *extra)
    assert summary["status"] == "ok" and math.isfinite(summary["l2"]["u"])
