"""problem=ns_inverse: the translating Taylor-Green vortex, its observations, the pressure gauge,
the .mat file in Raissi's layout, and a few training steps in every precision."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from conftest import TINY, compose_config
from problem_runs import EVERY_PRECISION

from mpsciml.config import ConfigError
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.problems.ns_inverse import NSInverse
from mpsciml.problems.ns_inverse_data import Snapshots, read_snapshots, write_snapshots
from mpsciml.train import run

UNKNOWNS = {"C1": 0.0, "C2": 0.0}


def exact_residuals(problem: NSInverse, points: torch.Tensor) -> dict[str, torch.Tensor]:
    """The residuals of the exact solution (as a 'network'), with the problem's coefficients."""
    inputs = points.clone().requires_grad_(True)
    d = Derivatives(inputs, problem.exact(inputs), problem.input_names, problem.output_names)
    return problem.momentum_and_continuity(d)


@pytest.mark.parametrize("drift", [(1.0, 0.5), (0.0, 0.0)])
def test_the_exact_solution_solves_the_equations(drift: tuple[float, float]) -> None:
    problem = NSInverse(viscosity=0.05, drift=drift, n_observations=8, unknowns={})
    points = problem.domain.interior(200, "sobol", 1).double()
    for name, residual in exact_residuals(problem, points).items():
        assert residual.abs().max() < 1e-12, name


def test_the_drift_is_what_identifies_c1() -> None:
    """A wrong C1 leaves a residual whose curl is not zero with the drift (no pressure can
    absorb it), and none at rest: there C1 * u.grad(u) is a gradient, and the pressure
    p + (1 - C1) phi absorbs it (here checked as: the wrong-C1 residual is curl-free)."""
    points = NSInverse(n_observations=8).domain.interior(64, "sobol", 2).double()

    def curl_of_residual(drift: tuple[float, float]) -> float:
        problem = NSInverse(viscosity=0.05, drift=drift, unknowns={"C1": 0.5}, n_observations=8)
        inputs = points.clone().requires_grad_(True)
        d = Derivatives(inputs, problem.exact(inputs), problem.input_names, problem.output_names)
        r = problem.momentum_and_continuity(d)
        (rx_y,) = torch.autograd.grad(r["momentum_x"].sum(), inputs, retain_graph=True)
        (ry_x,) = torch.autograd.grad(r["momentum_y"].sum(), inputs)
        return float((ry_x[:, 0] - rx_y[:, 1]).abs().max())

    assert curl_of_residual((0.0, 0.0)) < 1e-12
    assert curl_of_residual((1.0, 0.5)) > 0.1


def test_observations_are_the_exact_velocity_with_seeded_noise() -> None:
    clean = NSInverse(n_observations=500, noise=0.0)
    data = clean.conditions(0)["data"]
    assert data.values is not None and data.values.shape == (500, 2)
    torch.testing.assert_close(data.values, clean.exact(data.points)[:, :2])
    noisy = NSInverse(n_observations=500, noise=0.01).conditions(0)["data"]
    assert noisy.values is not None
    ratio = (noisy.values - data.values).std(dim=0) / data.values.std(dim=0)
    assert ((ratio > 0.008) & (ratio < 0.012)).all(), ratio
    again = NSInverse(n_observations=500, noise=0.01).conditions(5)["data"]  # any draw, same data
    torch.testing.assert_close(again.values, noisy.values)


def test_the_pressure_gauge_is_fixed_per_time_slice() -> None:
    """A prediction off by a function of time only (the freedom the equations leave) has
    zero error after the gauge; an error that varies in space is kept."""
    problem = NSInverse(n_observations=8, evaluation_grid=(5, 4, 3))
    grid = problem.evaluation_grid()
    reference = problem.reference(grid.points)
    shifted = reference.clone()
    shifted[:, 2] += 3.0 + grid.points[:, 2] ** 2
    torch.testing.assert_close(problem.fix_gauge(shifted, grid, reference), reference)
    wrong = reference.clone()
    wrong[:, 2] += grid.points[:, 0]
    assert (problem.fix_gauge(wrong, grid, reference) - reference)[:, 2].abs().max() > 0.1


def snapshots_of(problem: NSInverse, shape: tuple[int, int, int]) -> Snapshots:
    axes = tuple(
        torch.linspace(lo, hi, n, dtype=torch.float64)
        for lo, hi, n in zip(problem.domain.low, problem.domain.high, shape, strict=True)
    )
    mesh = torch.meshgrid(*axes, indexing="ij")
    points = torch.stack([m.reshape(-1) for m in mesh], dim=-1)
    return Snapshots(axes, problem.exact(points))  # type: ignore[arg-type]


def test_a_mat_file_in_raissis_layout_round_trips(tmp_path: Path) -> None:
    """Written from our exact solution, read back: the problem trains on its values and
    measures its errors on the file's grid, against the file's own values."""
    exact = NSInverse(n_observations=8)
    path = tmp_path / "wake.mat"
    write_snapshots(path, snapshots_of(exact, (6, 5, 4)))
    arrays = scipy.io.loadmat(str(path))
    assert arrays["X_star"].shape == (30, 2) and arrays["t"].shape == (4, 1)
    assert arrays["U_star"].shape == (30, 2, 4) and arrays["p_star"].shape == (30, 4)
    problem = NSInverse(data_path=str(path), n_observations=50, unknowns=UNKNOWNS)
    grid = problem.evaluation_grid()
    assert grid.shape == (6, 5, 4) and list(problem.domain.high) == [1.0, 1.0, 1.0]
    torch.testing.assert_close(problem.reference(grid.points), exact.exact(grid.points))
    data = problem.conditions(0)["data"]
    assert data.values is not None
    torch.testing.assert_close(data.values, exact.exact(data.points)[:, :2])
    # the file's rows in another order (times reversed, points shuffled) read the same
    order = np.random.default_rng(0).permutation(30)
    shuffled = {key: arrays[key] for key in ("X_star", "t", "U_star", "p_star")}
    shuffled["X_star"], shuffled["t"] = arrays["X_star"][order], arrays["t"][::-1]
    shuffled["U_star"] = arrays["U_star"][order][:, :, ::-1]
    shuffled["p_star"] = arrays["p_star"][order][:, ::-1]
    scipy.io.savemat(str(tmp_path / "shuffled.mat"), shuffled)
    again = read_snapshots(tmp_path / "shuffled.mat")
    torch.testing.assert_close(again.fields, read_snapshots(path).fields)


@pytest.mark.parametrize(
    ("arrays", "why"),
    [
        ({"X_star": np.zeros((4, 2)), "t": np.zeros((2, 1))}, "missing U_star, p_star"),
        (
            {
                "X_star": np.zeros((4, 2)),
                "t": np.zeros((2, 1)),
                "U_star": np.zeros((4, 3, 2)),
                "p_star": np.zeros((4, 2)),
            },
            "shapes do not fit",
        ),
    ],
)
def test_a_file_with_wrong_arrays_is_refused_in_one_line(
    tmp_path: Path, arrays: dict, why: str
) -> None:
    path = tmp_path / "bad.mat"
    scipy.io.savemat(str(path), arrays)
    with pytest.raises(ValueError, match=why) as caught:
        NSInverse(data_path=str(path))
    message = str(caught.value)
    assert "X_star (N, 2), t (T, 1), U_star (N, 2, T), p_star (N, T)" in message
    assert "\n" not in message


def test_a_bad_unknown_stops_the_run_with_one_line(tiny_config) -> None:  # type: ignore[no-untyped-def]
    from mpsciml.compose import build

    cfg = tiny_config("problem=ns_inverse", "problem.unknowns={C3: 0.0}", "model.hidden=[8]")
    with pytest.raises(ConfigError, match=r"problem.unknowns.C3 is not a coefficient of "):
        build(cfg)


@pytest.mark.parametrize("precision", EVERY_PRECISION)
def test_ns_inverse_trains_in_every_precision_with_fp32_unknowns(
    tmp_path: Path, precision: str
) -> None:
    overrides = [*TINY, "problem=ns_inverse", f"precision={precision}", "trainer.max_steps=2"]
    overrides += ["problem.n_domain=32", "problem.n_observations=16", "model.hidden=[8]"]
    overrides += ["precision.init_scale=256"]  # fp16: no step skipped for a first overflow
    summary = run(compose_config(overrides, tmp_path))
    assert summary["status"] == "ok"
    assert all(math.isfinite(summary["l2"][field]) for field in ("u", "v", "p"))
    unknowns = summary["unknowns"]
    full = "float64" if precision == "fp64" else "float32"
    for name in ("C1", "C2"):
        assert unknowns[name]["dtype"] == full
        assert unknowns[name]["final"] != unknowns[name]["initial"]  # the gradient reached it
    assert summary["precision"]["layer_policies"] == {"unknowns": "fp32"}
    assert {"data_u", "data_v", "pde_continuity"} <= set(summary["final_losses"])


@pytest.mark.slow
def test_the_compiled_step_learns_the_unknowns_as_the_eager_one(tmp_path: Path) -> None:
    """compile=true: the observed values and the unknowns go through the compiled Taylor step,
    which moves C1 and C2 as the eager Taylor step does."""
    finals = []
    for compiled in (False, True):
        overrides = [*TINY, "problem=ns_inverse", "problem.n_domain=32", "model.hidden=[8]"]
        overrides += ["problem.n_observations=16", "derivatives=taylor", f"compile={compiled}"]
        summary = run(compose_config(overrides, tmp_path / str(compiled)))
        finals.append([summary["unknowns"][name]["final"] for name in ("C1", "C2")])
        assert summary["unknowns"]["C1"]["final"] != 0.0
    assert finals[0] == pytest.approx(finals[1], rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_a_run_trains_on_a_mat_file_and_measures_on_its_grid(tmp_path: Path) -> None:
    path = tmp_path / "wake.mat"
    write_snapshots(path, snapshots_of(NSInverse(n_observations=8), (6, 5, 4)))
    overrides = [*TINY, "problem=ns_inverse", f"problem.data_path={path}", "model.hidden=[8]"]
    overrides += ["problem.n_domain=32", "problem.n_observations=40", "problem.viscosity=null"]
    summary = run(compose_config(overrides, tmp_path / "run"))
    assert summary["status"] == "ok" and math.isfinite(summary["l2"]["u"])
    assert summary["unknowns"]["C2"]["true"] is None
    assert summary["unknowns"]["C2"]["relative_error"] is None
    assert summary["unknowns"]["C1"]["relative_error"] is not None
