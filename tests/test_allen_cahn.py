"""The Allen-Cahn PINN problem: its reference is our spectral solution, even in x (which is why
the Neumann condition is exact), its conditions sit where they should, bad values are one line,
and it trains in every precision."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from problem_runs import EVERY_PRECISION, tiny_problem_run

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.allen_cahn import AllenCahn


def test_the_reference_starts_at_the_datum_and_stays_even(tmp_path, monkeypatch):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path))
    problem = AllenCahn(resolution=256, dt=5e-3, evaluation_grid=(41, 11))
    grid = problem.evaluation_grid()
    reference = problem.reference(grid.points).reshape(41, 11)
    x = grid.axes[0].numpy()
    # between the 256 grid nodes the series of the datum, whose slope jumps at the periodic
    # seam, is off by O(1/modes^2): 4e-4 next to the seam
    np.testing.assert_allclose(reference[:, 0], x**2 * np.cos(math.pi * x), atol=1e-3)
    np.testing.assert_allclose(reference, reference.flip(0), atol=1e-10)  # even in x
    # the Neumann condition: the one-sided slope at the walls vanishes as the step shrinks
    for t in (0.5, 1.0):
        edge = problem.reference(torch.tensor([[1.0, t], [1.0 - 1e-3, t]], dtype=torch.float64))
        assert abs(float(edge[0, 0] - edge[1, 0])) / 1e-3 < 0.05


def test_conditions_and_residuals():
    problem = AllenCahn(n_domain=40, n_boundary=20, n_initial=10)
    conditions = problem.conditions(0)
    bc, ic = conditions["bc"].points, conditions["ic"].points
    assert torch.all(bc[:, 0].abs() == 1.0) and torch.all(ic[:, 1] == 0.0)
    inputs = ic.clone().requires_grad_(True)
    x = inputs[:, :1]
    d = Derivatives(inputs, x**2 * torch.cos(math.pi * x), ("x", "t"), ("u",))
    assert problem.initial(d).abs().max() < 1e-12
    # u = tanh-free steady states: +-1 and 0 make the PDE residual vanish, 0.5 does not
    points = conditions["pde"].points.clone().requires_grad_(True)
    for value, vanishes in ((1.0, True), (-1.0, True), (0.5, False)):
        u = value + 0 * points[:, :1]
        residual = problem.pde(Derivatives(points, u, ("x", "t"), ("u",)))
        assert bool(residual.abs().max() < 1e-12) == vanishes


@pytest.mark.parametrize(
    ("key", "value"), [("eps", 0.0), ("resolution", 15), ("dt", -1.0), ("n_boundary", 0)]
)
def test_bad_values_are_one_line_errors(key, value):
    with pytest.raises(ValueError, match=f"problem.{key}="):
        AllenCahn(**{key: value})


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_allen_cahn_trains_in_every_precision(tmp_path, monkeypatch, precision):
    extra = ("problem.n_initial=8", "problem.resolution=16", "problem.dt=0.01",
             "problem.evaluation_grid=[9,5]")  # fmt: skip
    summary = tiny_problem_run(tmp_path, monkeypatch, "allen_cahn", precision, *extra)
    assert summary["status"] == "ok" and "u" in summary["l2"]
