"""The two-scale 1-D wave problem: its exact solution satisfies its own equation, boundary and
both initial conditions (so the reference is right), bad values are one line, and it trains in
every precision."""

from __future__ import annotations

import pytest
import torch
from problem_runs import EVERY_PRECISION, tiny_problem_run

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.wave import Wave


def exact_derivatives(problem: Wave, points: torch.Tensor) -> Derivatives:
    """Derivatives of the exact solution, as a residual would see a perfect network."""
    inputs = points.clone().requires_grad_(True)
    u = problem.exact(inputs[:, 0], inputs[:, 1]).unsqueeze(-1)
    return Derivatives(inputs, u, problem.input_names, problem.output_names)


def residuals(problem: Wave, condition_points: dict) -> dict[str, torch.Tensor]:
    out = {}
    for name, condition in condition_points.items():
        value = condition.residual(exact_derivatives(problem, condition.points))
        items = value.items() if isinstance(value, dict) else [("", value)]
        out.update({f"{name}_{key}".rstrip("_"): v for key, v in items})
    return out


@pytest.mark.parametrize(("speed", "mode"), [(2.0, 4), (1.0, 3)])
def test_the_exact_solution_satisfies_every_condition(speed, mode):
    problem = Wave(speed=speed, mode=mode, n_domain=64, n_boundary=32, n_initial=16)
    terms = residuals(problem, problem.conditions(0))
    assert set(terms) == {"pde", "bc", "ic_u", "ic_ut"}
    for name, value in terms.items():
        assert value.abs().max() < 1e-9, name  # u_tt and u_xx are ~600: relative 1e-12
    wrong = Wave(speed=speed * 1.1, mode=mode)  # a wrong wave speed leaves a residual
    points = problem.conditions(0)["pde"].points
    assert wrong.pde(exact_derivatives(problem, points)).abs().max() > 1.0


def test_the_reference_is_the_exact_solution():
    problem = Wave(evaluation_grid=(3, 3))
    reference = problem.reference(problem.evaluation_grid().points).reshape(3, 3)
    # x = 0.5: sin(pi/2) = 1, sin(2 pi) = 0; t = 0.5: cos(pi) = -1
    assert reference[1, 0] == pytest.approx(1.0)
    assert reference[1, 1] == pytest.approx(-1.0)
    assert torch.all(reference[[0, 2]].abs() < 1e-12)  # the fixed ends


@pytest.mark.parametrize(("key", "value"), [("speed", -1.0), ("mode", 0), ("mode", 1.5)])
def test_bad_values_are_one_line_errors(key, value):
    with pytest.raises(ValueError, match=f"problem.{key}="):
        Wave(**{key: value})


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_wave_trains_in_every_precision(tmp_path, monkeypatch, precision):
    extra = ("problem.n_initial=8", "problem.evaluation_grid=[9,9]")
    summary = tiny_problem_run(tmp_path, monkeypatch, "wave", precision, *extra)
    assert summary["status"] == "ok" and "u" in summary["l2"]
