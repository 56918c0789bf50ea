"""The 2-D heat problem: its exact solution satisfies its own equation, boundary and initial
conditions (so the reference is right), bad values are one line, and it trains in every
precision."""

from __future__ import annotations

import math

import pytest
import torch
from problem_runs import EVERY_PRECISION, tiny_problem_run

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.heat import Heat


def exact_derivatives(problem: Heat, points: torch.Tensor) -> Derivatives:
    """Derivatives of the exact solution, as a residual would see a perfect network."""
    inputs = points.clone().requires_grad_(True)
    u = problem.exact(inputs[:, 0], inputs[:, 1], inputs[:, 2]).unsqueeze(-1)
    return Derivatives(inputs, u, problem.input_names, problem.output_names)


@pytest.mark.parametrize("alpha", [0.1, 0.02])
def test_the_exact_solution_satisfies_every_condition(alpha):
    problem = Heat(alpha=alpha, n_domain=64, n_boundary=32, n_initial=16)
    conditions = problem.conditions(0)
    for name, condition in conditions.items():
        residual = condition.residual(exact_derivatives(problem, condition.points))
        assert residual.abs().max() < 1e-12, name
    # and it is not trivially zero: a wrong diffusivity leaves a residual
    wrong = Heat(alpha=2 * alpha)
    points = conditions["pde"].points
    assert wrong.pde(exact_derivatives(problem, points)).abs().max() > 1e-2


def test_the_reference_is_the_exact_solution_and_decays():
    problem = Heat(evaluation_grid=(5, 5, 3))
    grid = problem.evaluation_grid()
    reference = problem.reference(grid.points).reshape(5, 5, 3)
    assert reference.dtype == torch.float64
    # (x, y) = (0.25, 0.5): sin(pi/4) sin(pi/2) = 1/sqrt(2), sin(pi/2) sin(3 pi/2) = -1
    point = reference[1, 2]
    rate = 0.1 * math.pi**2
    assert point[0].item() == pytest.approx(2**-0.5 - 0.5, abs=1e-12)
    expected = 2**-0.5 * math.exp(-2 * rate) - 0.5 * math.exp(-13 * rate)
    assert point[2].item() == pytest.approx(expected, abs=1e-12)  # t = 1


def test_conditions_sit_where_they_should():
    conditions = Heat(n_domain=40, n_boundary=20, n_initial=10).conditions(3)
    bc, ic = conditions["bc"].points, conditions["ic"].points
    assert bc.shape == (20, 3) and ic.shape == (10, 3)
    on_wall = (bc[:, :2] == 0.0) | (bc[:, :2] == 1.0)
    assert torch.all(on_wall.any(dim=1)) and torch.all(ic[:, 2] == 0.0)


@pytest.mark.parametrize(("key", "value"), [("alpha", 0.0), ("n_initial", 0)])
def test_bad_values_are_one_line_errors(key, value):
    with pytest.raises(ValueError, match=f"problem.{key}="):
        Heat(**{key: value})


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_heat_trains_in_every_precision(tmp_path, monkeypatch, precision):
    extra = ("problem.n_initial=8", "problem.evaluation_grid=[5,5,3]")
    summary = tiny_problem_run(tmp_path, monkeypatch, "heat", precision, *extra)
    assert summary["status"] == "ok" and "u" in summary["l2"]
