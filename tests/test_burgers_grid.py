"""burgers_grid (space-time Burgers, data-free) and its reference solver data/burgers_godunov:
exact shock speed and rarefaction, the loss consistent with the reference, fields a pure function
of (seed, step, slot), terms per sample in fp32, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from mpsciml.data.burgers_godunov import godunov_flux, solve_burgers
from mpsciml.problems.burgers_grid import BurgersGrid


def cells(m: int) -> np.ndarray:
    return (np.arange(m) + 0.5) / m


def test_a_shock_moves_at_the_rankine_hugoniot_speed():
    m = 100
    x = cells(m)
    u = solve_burgers(np.where(x < 0.2, 1.5, 0.5), 1.0, [0.4], boundary="outflow")[:, 0]
    k = int(np.argmax(u < 1.0))  # the shock: where u crosses the mean of its states
    position = x[k - 1] + (x[k] - x[k - 1]) * (u[k - 1] - 1.0) / (u[k - 1] - u[k])
    assert abs(position - (0.2 + 1.0 * 0.4)) < 0.25 / m  # speed (1.5 + 0.5) / 2
    assert np.all(np.diff(u) <= 1e-12)  # no oscillation across it


@pytest.mark.parametrize(("left", "right"), [(0.0, 1.0), (-0.5, 1.0)])
def test_a_rarefaction_fan_converges_to_the_exact_one_transonic_too(left, right):
    errors = []
    for m in (100, 200):
        x = cells(m)
        u = solve_burgers(np.where(x < 0.4, left, right), 1.0, [0.3], boundary="outflow")[:, 0]
        errors.append(np.abs(u - np.clip((x - 0.4) / 0.3, left, right)).mean())
    assert errors[0] < 0.01 and errors[0] / errors[1] > 1.7, errors
    assert godunov_flux(np.array([-0.5]), np.array([1.0]))[0] == 0.0  # sonic point: f(0)


def test_the_periodic_scheme_conserves_and_respects_the_maximum_principle():
    x = cells(64)
    u0 = 0.5 * (1 - np.cos(2 * np.pi * 3 * x))
    u = solve_burgers(u0, 1.0, [0.1, 0.3], nu=0.0)
    np.testing.assert_allclose(u.sum(0), u0.sum(), rtol=1e-12)
    assert u.max() <= 1.0 + 1e-12 and u.min() >= -1e-12


def test_split_diffusion_agrees_with_explicit_diffusion():
    x = np.arange(128) / 128
    u0 = 0.5 * (1 - np.cos(2 * np.pi * 2 * x))
    times = [0.1, 0.3]
    explicit = solve_burgers(u0, 1.0, times, nu=0.02, diffusion="explicit")
    split = solve_burgers(u0, 1.0, times, nu=0.02)  # the default when periodic and viscous
    assert np.abs(split - explicit).max() < 2e-4
    np.testing.assert_allclose(split.sum(0), u0.sum(), rtol=1e-12)
    with pytest.raises(ValueError, match="diffusion='split' needs boundary='periodic'"):
        solve_burgers(u0, 1.0, times, nu=0.02, boundary="outflow", diffusion="split")


def test_the_references_pde_residual_vanishes_at_second_order_and_the_other_terms_at_0():
    means = []
    for n in (17, 33):
        problem = BurgersGrid(grid=n, nu=0.05, max_frequency=2, final_time=0.3)
        b = problem.test_fields(2)
        u = torch.from_numpy(problem.solve_reference(b, progress=False))
        b = torch.from_numpy(b)
        terms = problem.residual_terms(b, u)
        assert terms["boundary"].max() == 0.0 and terms["initial"].max() < 1e-5
        frozen = problem.residual_terms(b, b.clone())["pde"]  # u = b at every t: wrong
        assert torch.all(terms["pde"] < 0.05 * frozen)
        means.append(float(terms["pde"].mean()))
    assert means[0] / means[1] > 10, means  # residual O(h^2), its square O(h^4)


def test_fine_cell_averages_of_a_raised_cosine_are_exact():
    problem = BurgersGrid(grid=17, refine=3, max_frequency=3)
    x = np.arange(16) / 16
    b = 0.5 * (1 - np.cos(2 * np.pi * 3 * x))
    fine = problem.fine_cell_averages(b[None])
    xf = np.arange(48) / 48
    exact = 0.5 * (1 - np.cos(2 * np.pi * 3 * xf) * np.sinc(3 / 48))
    np.testing.assert_allclose(fine[0], exact, atol=1e-13)


def test_fields_are_a_pure_function_of_seed_step_and_slot_and_broadcast_over_t():
    problem = BurgersGrid(grid=(17, 9), batch_size=3)
    whole = problem.parameter_fields(1, 5, torch.arange(3))
    assert whole.shape == (3, 1, 17, 9) and whole.dtype == torch.float64
    torch.testing.assert_close(problem.parameter_fields(1, 5, torch.tensor([2])), whole[2:])
    assert torch.equal(whole, whole[..., :1].expand_as(whole))  # the same b at every t
    assert torch.equal(whole[:, :, 0], whole[:, :, -1])  # periodic: x = L repeats x = 0
    assert whole.min() >= 0.0 and whole.max() <= 1.0 + 1e-12
    assert not torch.equal(whole, problem.parameter_fields(1, 6, torch.arange(3)))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_terms_are_per_sample_in_fp32_with_the_tools_weights(half):
    problem = BurgersGrid(grid=(17, 9), nu=0.0)
    b = problem.parameter_fields(0, 0, torch.arange(2))
    terms = problem.residual_terms(b, torch.rand(2, 1, 17, 9).to(half))
    assert tuple(terms) == problem.term_names == ("pde", "boundary", "initial")
    assert all(t.shape == (2,) and t.dtype == torch.float32 for t in terms.values())
    assert problem.default_loss_weights == {"pde": 1.0, "boundary": 64.0, "initial": 64.0}
    raw = torch.rand(2, 1, 17, 9)
    assert torch.equal(problem.impose(b, raw), raw)  # soft constraints only
    coords = problem.coordinates((17, 9))
    assert float(coords[0][-1]) == 1.0 and float(coords[1][-1]) == 0.5


def test_test_data_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path))
    data = BurgersGrid(grid=(17, 9), n_test=2, max_frequency=2).test_data()
    assert data.outputs.shape == (2, 1, 17, 9)
    torch.testing.assert_close(data.outputs[..., 0], data.inputs[..., 0], atol=0.02, rtol=0)
    assert len(list(tmp_path.glob("burgersgrid_test-*.npz"))) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nu": -0.1}, r"problem.nu=-0.1 must be finite and >= 0"),
        (
            {"grid": 16, "max_frequency": 8},
            r"problem.max_frequency=8 must be an integer in \[1, 7\]",
        ),
        ({"grid": [3, 16]}, r"problem.grid=\[3, 16\] is too small"),
        ({"final_time": 0.0}, r"problem.final_time=0.0 must be finite and > 0"),
        ({"n_cosines": 0}, r"problem.n_cosines=0 must be an integer >= 1"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BurgersGrid(**kwargs)


def test_the_problem_yaml_composes_and_instantiates(tmp_path):
    cfg = compose_config(["problem=burgers_grid", "problem.grid=[32,16]"], tmp_path)
    assert cfg.model._target_.endswith("DiffNet")
    problem = instantiate(cfg.problem)
    assert isinstance(problem, BurgersGrid) and problem.grid == (32, 16) and problem.nu == 0.01
