"""poisson_grid (DiffNet's parametric Poisson, data-free) and its reference solver data/poisson_fd:
second order, the loss consistent with the reference, fields a pure function of (seed, step,
slot), boundary values imposed, residuals assembled in fp32, one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate

from mpsciml.data.poisson_fd import flux_matrix, solve_poisson
from mpsciml.derivatives.stencils import flux_divergence
from mpsciml.problems.data_free_grid import DataFreeGridProblem
from mpsciml.problems.poisson_grid import PoissonGrid


def manufactured(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nu, f, u on n x n nodes with u = 1 - x + sin(pi x) cos(pi y) / 2: u(0) = 1, u(1) = 0 and
    du/dy = 0 on y = 0, 1; nu = exp(g), g = 0.3 sin(2x + y), f = -nu (grad g . grad u + lap u)."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    pi = math.pi
    u = 1 - x + 0.5 * np.sin(pi * x) * np.cos(pi * y)
    ux = -1 + 0.5 * pi * np.cos(pi * x) * np.cos(pi * y)
    uy = -0.5 * pi * np.sin(pi * x) * np.sin(pi * y)
    lap = -(pi**2) * np.sin(pi * x) * np.cos(pi * y)
    g = 0.3 * np.sin(2 * x + y)
    gx, gy = 0.6 * np.cos(2 * x + y), 0.3 * np.cos(2 * x + y)
    nu = np.exp(g)
    return nu, -nu * (gx * ux + gy * uy + lap), u


def test_the_reference_solver_converges_at_second_order():
    errors = []
    for n in (17, 33, 65):
        nu, f, exact = manufactured(n)
        errors.append(np.abs(solve_poisson(nu, f) - exact).max())
    assert errors[0] < 1e-2
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5, errors


@pytest.mark.parametrize("log_nu_std", [1.0, 3.0])
def test_the_iterative_solver_agrees_with_the_sparse_lu(log_nu_std):
    nu = PoissonGrid(grid=(33, 17), log_nu_std=log_nu_std).test_fields(2)[:, 0]
    direct = solve_poisson(nu, 0.5, method="direct")
    np.testing.assert_allclose(solve_poisson(nu, 0.5, method="pcg"), direct, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="method='cg' is unknown; allowed: auto, direct, pcg"):
        solve_poisson(nu, method="cg")


def test_the_sparse_matrix_is_the_stencil_operator():
    rng = np.random.default_rng(0)
    nu, u = np.exp(rng.standard_normal((7, 9))), rng.standard_normal((7, 9))
    for average in ("harmonic", "arithmetic"):
        by_matrix = (flux_matrix(nu, average) @ u.ravel()).reshape(7, 9)
        by_conv = flux_divergence(
            torch.from_numpy(u)[None, None],
            torch.from_numpy(nu)[None, None],
            (1 / 6, 1 / 8),
            average,
        )
        np.testing.assert_allclose(by_conv[0, 0].numpy(), by_matrix, rtol=1e-12, atol=1e-10)


def test_the_residual_loss_of_the_reference_is_round_off_and_the_energy_is_its_minimum():
    problem = PoissonGrid(grid=17, loss="residual", constraint="overwrite")
    nu = problem.test_fields(2)
    u = torch.from_numpy(problem.solve_reference(nu, progress=False))
    nu = torch.from_numpy(nu)
    assert problem.residual_terms(nu, u)["pde"].max() < 1e-18
    noisy = u + 0.01 * torch.sin(3 * torch.arange(17.0, dtype=torch.float64)).view(1, 1, 1, -1)
    assert problem.residual_terms(nu, problem.impose(nu, noisy))["pde"].min() > 1e-4
    # the Q1 Ritz energy's minimiser is the FEM solution, O(h^2) from the FV reference. The
    # energy is quadratic in the free nodes (f = 0): column k of its Hessian is the gradient at
    # the unit field e_k (zero walls), all columns in one batched gradient, then one solve
    energy = PoissonGrid(grid=17, loss="energy", constraint="overwrite")  # zeros -> zero inside

    def gradient(nu_k: torch.Tensor, fields: torch.Tensor) -> torch.Tensor:
        fields = fields.clone().requires_grad_(True)
        energy.residual_terms(nu_k.expand_as(fields), fields)["pde"].sum().backward()
        return fields.grad[:, :, 1:-1].flatten(1)

    n_free = 15 * 17
    units = torch.eye(n_free, dtype=torch.float64).reshape(n_free, 1, 15, 17)
    units = torch.nn.functional.pad(units, (0, 0, 1, 1))
    minimiser = u.clone()
    for k in range(2):
        hessian = gradient(nu[k : k + 1], units)
        walls = energy.impose(nu[k : k + 1], torch.zeros_like(u[k : k + 1]))
        inner = torch.linalg.solve(hessian, -gradient(nu[k : k + 1], walls)[0])
        minimiser[k, :, 1:-1] = inner.reshape(1, 15, 17)
    assert float(gradient(nu[:1], minimiser[:1]).abs().max()) < 1e-10
    assert float((minimiser - u).norm() / u.norm()) < 5e-3
    start = energy.residual_terms(nu, u)["pde"]
    assert torch.all(energy.residual_terms(nu, minimiser)["pde"] <= start + 1e-12)


def test_fields_are_a_pure_function_of_seed_step_and_slot():
    problem = PoissonGrid(grid=9, batch_size=4)
    whole = problem.parameter_fields(3, 7, torch.arange(4))
    assert whole.shape == (4, 1, 9, 9) and whole.dtype == torch.float64 and (whole > 0).all()
    odd, even = (problem.parameter_fields(3, 7, torch.arange(r, 4, 2)) for r in (1, 0))
    torch.testing.assert_close(whole[1::2], odd, rtol=0, atol=0)
    torch.testing.assert_close(whole[0::2], even, rtol=0, atol=0)
    assert not torch.equal(whole, problem.parameter_fields(3, 8, torch.arange(4)))
    assert not torch.equal(whole, problem.parameter_fields(4, 7, torch.arange(4)))
    assert not np.allclose(problem.test_fields(4), whole.numpy())  # held out
    # log nu has about the configured spread and is centred by network_inputs
    many = problem.network_inputs(problem.parameter_fields(0, 0, torch.arange(32)))
    assert abs(float(many.mean())) < 0.15 and 0.7 < float(many.std()) < 1.3


def test_impose_overwrite_writes_the_dirichlet_walls_and_keeps_the_rest():
    problem = PoissonGrid(grid=(9, 7), constraint="overwrite")
    raw = torch.randn(2, 1, 9, 7, requires_grad=True)
    out = problem.impose(torch.ones(2, 1, 9, 7), raw)
    assert (out[:, :, 0] == 1).all() and (out[:, :, -1] == 0).all()
    torch.testing.assert_close(out[:, :, 1:-1], raw[:, :, 1:-1])
    out.sum().backward()
    assert (raw.grad[:, :, 0] == 0).all() and (raw.grad[:, :, 1:-1] == 1).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_impose_lift_is_the_ramp_plus_a_bubble_times_the_output(dtype):
    problem = PoissonGrid(grid=(9, 7), u_left=2.0, u_right=-0.5)
    assert problem.constraint == "lift"  # the default
    raw = (10 * torch.randn(2, 1, 9, 7, dtype=torch.float64)).to(dtype).requires_grad_(True)
    out = problem.impose(torch.ones(2, 1, 9, 7), raw)
    assert out.shape == raw.shape and out.dtype == dtype
    assert (out[:, :, 0] == 2.0).all() and (out[:, :, -1] == -0.5).all()  # exact, any output
    x = torch.linspace(0, 1, 9, dtype=torch.float64).view(1, 1, 9, 1)
    expected = 2.0 * (1 - x) - 0.5 * x + 4 * x * (1 - x) * raw.detach().double()
    tol = 1e-12 if dtype == torch.float64 else (1e-5 if dtype == torch.float32 else 0.2)
    torch.testing.assert_close(out.detach().double(), expected.expand_as(out), rtol=0, atol=tol)
    # a zero output is the ramp; the walls get no gradient, the middle node the full one
    ramp = problem.impose(torch.ones(1, 1, 9, 7), torch.zeros(1, 1, 9, 7, dtype=dtype))
    torch.testing.assert_close(ramp.double(), (2.0 - 2.5 * x).expand(1, 1, 9, 7), rtol=0, atol=tol)
    out.sum().backward()
    assert (raw.grad[:, :, [0, -1]] == 0).all() and (raw.grad[:, :, 4] == 1).all()


def test_impose_lift_scale_and_levels_keep_the_walls_and_weight_coarse_averages():
    problem = PoissonGrid(grid=(17, 12), lift_scale=0.5, lift_levels=2)
    raw = torch.randn(2, 1, 17, 12, dtype=torch.float64, requires_grad=True)
    out = problem.impose(torch.ones(2, 1, 17, 12), raw)
    assert (out[:, :, 0] == 1).all() and (out[:, :, -1] == 0).all()
    out.sum().backward()  # the wall nodes' raw values reach the inside through the averages
    assert torch.isfinite(raw.grad).all() and (raw.grad[:, :, [0, -1]] != 0).any()
    # a constant output c is its own average at every level: 2 x 0.5 x c (1 + 2 + 4) x(1-x)
    x = torch.linspace(0, 1, 17, dtype=torch.float64).view(1, 1, 17, 1)
    flat = problem.impose(None, torch.full((1, 1, 17, 12), 0.3, dtype=torch.float64))
    expected = 1 - x + 2.0 * 0.3 * 7 * x * (1 - x)
    torch.testing.assert_close(flat, expected.expand(1, 1, 17, 12), rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss", ["energy", "residual"])
@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_terms_are_per_sample_and_assembled_in_fp32_under_half_outputs(loss, half):
    problem = PoissonGrid(grid=9, loss=loss)
    nu = problem.parameter_fields(0, 0, torch.arange(3))
    u = problem.impose(nu, torch.rand(3, 1, 9, 9).to(half))
    terms = problem.residual_terms(nu, u)
    assert set(terms) == set(problem.term_names)
    assert terms["pde"].shape == (3,) and terms["pde"].dtype == torch.float32
    assert problem.residual_terms(nu, u.double())["pde"].dtype == torch.float64


def test_test_data_is_solved_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path))
    problem = PoissonGrid(grid=9, n_test=3)
    data = problem.test_data()
    assert data.inputs.shape == (3, 1, 9, 9) and data.outputs.shape == (3, 1, 9, 9)
    assert len(list(tmp_path.glob("poissongrid_test-*.npz"))) == 1
    again = PoissonGrid(grid=9, n_test=3).test_data()
    torch.testing.assert_close(again.outputs, data.outputs, rtol=0, atol=0)
    assert isinstance(problem, DataFreeGridProblem) and problem.data_free
    assert problem.model_sizes() == {"in_channels": 1, "out_channels": 1, "grid": (9, 9)}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "l2"}, r"problem.loss='l2' is unknown; allowed: energy, residual"),
        ({"grid": 4}, r"problem.grid=4 is too small: need >= 5"),
        ({"grid": [16, 16, 16]}, r"problem.grid=\[16, 16, 16\] must be an integer or a list of 2"),
        ({"log_nu_std": 5.0}, r"problem.log_nu_std=5.0 must be in \[0, 3.0\]"),
        ({"modes": 40, "grid": 16}, r"problem.modes=40 must be an integer in \[2, 16\]"),
        ({"average": "geometric"}, r"problem.average='geometric' is unknown; allowed"),
        ({"constraint": "hard"}, r"problem.constraint='hard' is unknown; allowed: lift, overwrite"),
        ({"lift_scale": 0.0}, r"problem.lift_scale=0.0 must be finite and > 0"),
        ({"lift_levels": 5, "grid": 16}, r"problem.lift_levels=5 must be an integer in \[0, 4\]"),
        ({"batch_size": 0}, r"problem.batch_size=0 is invalid"),
        ({"tau": -1.0}, r"problem.alpha=2.0, problem.tau=-1.0"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PoissonGrid(**kwargs)


def test_the_problem_yaml_composes_and_instantiates(tmp_path):
    cfg = compose_config(["problem=poisson_grid", "problem.grid=16"], tmp_path)
    assert cfg.model._target_.endswith("DiffNet")  # its default model
    problem = instantiate(cfg.problem)
    assert isinstance(problem, PoissonGrid) and problem.grid == (16, 16)
    assert problem.loss == "energy" and problem.batch_size == 8 and problem.constraint == "lift"
