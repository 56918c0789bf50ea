"""Checks of `mpsciml.derivatives.autograd`: the derivatives every PINN residual is built from.

A wrong derivative here silently corrupts every residual and every loss, so each derivative is
compared with something computed independently: closed-form derivatives of known functions,
central finite differences of a real network, and exact PDE solutions whose residuals must vanish.
The caching that lets residuals be written "as on paper" is checked by counting backward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import Tensor

import mpsciml.derivatives.autograd
from mpsciml.derivatives.autograd import Derivatives, gradient
from mpsciml.models.mlp import MLP
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.burgers_exact import burgers_exact
from mpsciml.problems.navier_stokes import NavierStokes

# Relative (to the largest magnitude of the expected derivative) tolerances per dtype: float32
# autograd through a few transcendental functions is good to ~1e-7, float64 to ~1e-15.
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])

A, B = 2.0, -0.5  # u = sin(A x) exp(B t) + x^3 t^2


def _assert_close(actual: Tensor, expected: Tensor, rel: float, what: str = "") -> None:
    """max |actual - expected| <= rel * max |expected| (norm-wise relative, robust near zeros)."""
    assert actual.shape == expected.shape, what
    error = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), 1e-300)
    assert error <= rel * scale, f"{what}: max error {error:.3e} > {rel:.0e} * {scale:.3e}"


def _points(n: int, dtype: torch.dtype, seed: int = 0, dim: int = 2) -> Tensor:
    """Random points in [-1, 1]^dim, leaf tensor that requires grad."""
    generator = torch.Generator().manual_seed(seed)
    points = 2 * torch.rand(n, dim, generator=generator, dtype=torch.float64) - 1
    return points.to(dtype).requires_grad_(True)


def _analytic_xt(inputs: Tensor) -> tuple[Derivatives, dict[tuple[str, ...], Tensor]]:
    """Derivatives of u = sin(Ax)exp(Bt) + x^3 t^2 and v = tanh(x t), with closed forms.

    The expected values are evaluated in float64 from the (possibly float32) input values, so the
    comparison measures only the error of the autograd arithmetic.
    """
    x, t = inputs[:, 0], inputs[:, 1]
    u = torch.sin(A * x) * torch.exp(B * t) + x**3 * t**2
    v = torch.tanh(x * t)
    d = Derivatives(inputs, torch.stack([u, v], dim=-1), ("x", "t"), ("u", "v"))

    X, T = x.detach().double(), t.detach().double()
    s, c, e = torch.sin(A * X), torch.cos(A * X), torch.exp(B * T)
    th = torch.tanh(X * T)
    sech2 = 1 - th**2
    expected = {
        ("u",): s * e + X**3 * T**2,
        ("u", "x"): A * c * e + 3 * X**2 * T**2,
        ("u", "t"): B * s * e + 2 * X**3 * T,
        ("u", "x", "x"): -(A**2) * s * e + 6 * X * T**2,
        ("u", "t", "t"): B**2 * s * e + 2 * X**3,
        ("u", "x", "t"): A * B * c * e + 6 * X**2 * T,
        ("u", "t", "x"): A * B * c * e + 6 * X**2 * T,
        ("u", "x", "x", "t"): -(A**2) * B * s * e + 12 * X * T,
        ("u", "x", "t", "x"): -(A**2) * B * s * e + 12 * X * T,
        ("v",): th,
        ("v", "x"): T * sech2,
        ("v", "t"): X * sech2,
        ("v", "x", "x"): -2 * T**2 * th * sech2,
        ("v", "t", "t"): -2 * X**2 * th * sech2,
        ("v", "x", "t"): sech2 * (1 - 2 * X * T * th),
        ("v", "t", "x"): sech2 * (1 - 2 * X * T * th),
    }
    return d, expected


@DTYPES
def test_derivatives_match_closed_forms(dtype: torch.dtype) -> None:
    """First, second, mixed (both orders) and third derivatives equal their closed forms."""
    d, expected = _analytic_xt(_points(200, dtype))
    for key, value in expected.items():
        got = d(*key)
        assert got.dtype == dtype, key
        _assert_close(got, value, TOLERANCE[dtype], what=str(key))


@DTYPES
def test_getitem_and_coordinate_are_the_named_columns(dtype: torch.dtype) -> None:
    """d[name] and d.coordinate(name) must pick the column of that name, not a neighbour."""
    inputs = _points(50, dtype)
    outputs = torch.stack([inputs[:, 1] * 3, inputs[:, 0] - 1, inputs.sum(-1)], dim=-1)
    d = Derivatives(inputs, outputs, ("x", "t"), ("a", "b", "c"))
    assert torch.equal(d["b"], outputs[:, 1])
    assert torch.equal(d("c"), outputs[:, 2])  # no wrt: the output itself
    assert torch.equal(d.coordinate("t"), inputs[:, 1])
    assert torch.equal(d.coordinate("x"), inputs[:, 0])


def _three_d(inputs: Tensor) -> tuple[Derivatives, dict[str, Tensor]]:
    """w = x^2 y + sin(y) z^3 + exp(x z) with its unmixed second derivatives."""
    x, y, z = inputs[:, 0], inputs[:, 1], inputs[:, 2]
    w = x**2 * y + torch.sin(y) * z**3 + torch.exp(x * z)
    d = Derivatives(inputs, w.unsqueeze(-1), ("x", "y", "z"), ("w",))
    X, Y, Z = (c.detach().double() for c in (x, y, z))
    expected = {
        "x": 2 * Y + Z**2 * torch.exp(X * Z),
        "y": -torch.sin(Y) * Z**3,
        "z": 6 * torch.sin(Y) * Z + X**2 * torch.exp(X * Z),
    }
    return d, expected


@DTYPES
def test_laplacian_is_sum_of_second_derivatives(dtype: torch.dtype) -> None:
    """laplacian() over all inputs, and over a named subset, equals the analytic sum."""
    d, second = _three_d(_points(100, dtype, dim=3))
    tol = TOLERANCE[dtype]
    for name, value in second.items():
        _assert_close(d("w", name, name), value, tol, what=name)
    summed = d("w", "x", "x") + d("w", "y", "y") + d("w", "z", "z")
    assert torch.equal(d.laplacian("w"), summed)
    _assert_close(d.laplacian("w"), second["x"] + second["y"] + second["z"], tol)
    _assert_close(d.laplacian("w", "x", "z"), second["x"] + second["z"], tol, what="subset")
    _assert_close(d.laplacian("w", "y"), second["y"], tol, what="single")


def test_unused_input_gives_zeros() -> None:
    """A field independent of t must have u_t == 0 (a tensor, not None) of the right shape."""
    inputs = _points(30, torch.float64)
    u = torch.sin(inputs[:, 0]) ** 2
    d = Derivatives(inputs, u.unsqueeze(-1), ("x", "t"), ("u",))
    for key in [("t",), ("t", "t"), ("x", "t"), ("t", "x")]:
        got = d("u", *key)
        assert got.shape == (30,) and got.dtype == torch.float64
        assert torch.count_nonzero(got) == 0, key


def test_gradient_of_input_free_output_is_zero() -> None:
    """gradient() returns zeros when the output does not depend on the inputs at all."""
    inputs = _points(10, torch.float64)
    other = torch.ones(10, dtype=torch.float64, requires_grad=True)
    grad = gradient(other * 3, inputs)
    assert grad.shape == inputs.shape
    assert torch.count_nonzero(grad) == 0


def test_second_derivative_of_linear_field_is_zero() -> None:
    """u = 2x + t has u_xx == 0; the docstring promises zeros, never a special case."""
    inputs = _points(10, torch.float64)
    u = 2 * inputs[:, 0] + inputs[:, 1]
    d = Derivatives(inputs, u.unsqueeze(-1), ("x", "t"), ("u",))
    assert torch.count_nonzero(d("u", "x", "x")) == 0


# ---------------------------------------------------------------- caching


@pytest.fixture
def count_passes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Replace derivatives.autograd.gradient by a counting wrapper; returns the calls."""
    calls: list[tuple[int, int]] = []

    def counting(output: Tensor, inputs: Tensor, seed: float = 1.0) -> Tensor:
        calls.append((id(output), id(inputs)))
        return gradient(output, inputs, seed)

    monkeypatch.setattr(mpsciml.derivatives.autograd, "gradient", counting)
    return calls


def test_cache_shares_backward_passes(count_passes: list[tuple[int, int]]) -> None:
    """u_x, u_t share one pass; u_xx and u_xt share u_x's gradient; repeats cost nothing."""
    d, expected = _analytic_xt(_points(20, torch.float64))
    d("u", "x")
    d("u", "t")
    assert len(count_passes) == 1
    d("u", "x", "x")
    d("u", "x", "t")
    assert len(count_passes) == 2  # one pass for the gradient of u_x
    d("u", "t", "x")
    d("u", "t", "t")
    assert len(count_passes) == 3  # and one for u_t: the order of wrt matters for the key
    d("u", "x", "x", "t")
    assert len(count_passes) == 4
    for key in [("x",), ("t",), ("x", "x"), ("x", "t"), ("t", "x"), ("t", "t"), ("x", "x", "t")]:
        _assert_close(d("u", *key), expected[("u", *key)], 1e-10)  # re-requests: all cached
    assert len(count_passes) == 4
    d("v", "x")
    assert len(count_passes) == 5  # another output is another pass


def test_repeated_request_reuses_the_same_gradient_tensor() -> None:
    """Repeated requests are views of one cached tensor, not recomputed copies."""
    d, _ = _analytic_xt(_points(20, torch.float64))
    first, again = d("u", "x", "x"), d("u", "x", "x")
    assert first.data_ptr() == again.data_ptr()
    assert first.grad_fn is not None and again._base is first._base  # same (N, D) gradient
    assert d("u", "x", "t")._base is first._base  # u_xt is the other column of that gradient


def test_navier_stokes_residual_uses_seven_passes(count_passes: list[tuple[int, int]]) -> None:
    """u_x appears in momentum and continuity: 3 (u) + 3 (v) + 1 (p) passes, not more."""
    model = MLP(2, 3, hidden=(8,)).double()
    inputs = _points(16, torch.float64)
    d = Derivatives(inputs, model(inputs), ("x", "y"), ("u", "v", "p"))
    NavierStokes().momentum_and_continuity(d)
    assert len(count_passes) == 7


# ---------------------------------------------------------------- real networks


def _mlp_fields(seed: int = 0) -> tuple[MLP, Tensor]:
    torch.manual_seed(seed)
    model = MLP(2, 2, hidden=(16, 16), activation="tanh").double()
    return model, _points(64, torch.float64, seed=seed).detach()


def test_mlp_derivatives_match_finite_differences() -> None:
    """Autograd derivatives of a real tanh MLP agree with central differences (float64)."""
    model, points = _mlp_fields()
    inputs = points.clone().requires_grad_(True)
    d = Derivatives(inputs, model(inputs), ("x", "y"), ("u", "v"))

    def f(dx: float, dy: float) -> Tensor:
        with torch.no_grad():
            return model(points + torch.tensor([dx, dy], dtype=torch.float64))

    h1, h2 = 1e-5, 1e-4  # truncation ~h^2, round-off ~eps/h (first) and eps/h^2 (second)
    fd = {
        ("x",): (f(h1, 0) - f(-h1, 0)) / (2 * h1),
        ("y",): (f(0, h1) - f(0, -h1)) / (2 * h1),
        ("x", "x"): (f(h2, 0) - 2 * f(0, 0) + f(-h2, 0)) / h2**2,
        ("y", "y"): (f(0, h2) - 2 * f(0, 0) + f(0, -h2)) / h2**2,
        ("x", "y"): (f(h2, h2) - f(h2, -h2) - f(-h2, h2) + f(-h2, -h2)) / (4 * h2**2),
    }
    for key, value in fd.items():
        for j, name in enumerate(("u", "v")):
            _assert_close(d(name, *key), value[:, j], 1e-6, what=f"{name}_{''.join(key)}")
    _assert_close(d("u", "y", "x"), fd[("x", "y")][:, 0], 1e-6, what="u_yx")


def test_residual_derivatives_are_differentiable_in_the_weights() -> None:
    """create_graph=True: d(u_xx + u u_y)/d(weights) matches finite differences (gradcheck)."""
    model, points = _mlp_fields(seed=1)
    names = [name for name, _ in model.named_parameters()]
    params = {name: p.detach() for name, p in model.named_parameters()}
    points = points[:8]

    def residual(weight: Tensor) -> Tensor:
        inputs = points.clone().requires_grad_(True)
        outputs = torch.func.functional_call(model, {**params, names[0]: weight}, (inputs,))
        d = Derivatives(inputs, outputs, ("x", "y"), ("u", "v"))
        return d("u", "x", "x") + d["u"] * d("u", "y")

    weight = params[names[0]].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(residual, (weight,), eps=1e-6, atol=1e-7, rtol=1e-5)


# ---------------------------------------------------------------- errors


def test_inputs_without_requires_grad_raise() -> None:
    """Without requires_grad no derivative can be taken: fail at construction, not later."""
    inputs = torch.rand(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="require grad"):
        Derivatives(inputs, inputs.sum(-1, keepdim=True), ("x", "t"), ("u",))


def test_unknown_input_name_raises_key_error_listing_inputs() -> None:
    """A typo in a residual ('y' for 't') must name the inputs that do exist."""
    d, _ = _analytic_xt(_points(5, torch.float64))
    for wrt in [("y",), ("x", "y")]:
        with pytest.raises(KeyError) as info:
            d("u", *wrt)
        message = info.value.args[0]
        assert "'y'" in message and "['x', 't']" in message
    with pytest.raises(KeyError, match="'z'"):
        d.laplacian("u", "x", "z")


@pytest.mark.parametrize(("input_cols", "output_cols"), [(3, 1), (1, 1), (2, 2), (2, 0)], ids=str)
def test_shape_mismatch_raises(input_cols: int, output_cols: int) -> None:
    """Names and columns must agree, or d['u'] would silently read another field."""
    inputs = torch.rand(4, input_cols, dtype=torch.float64, requires_grad=True)
    outputs = torch.rand(4, output_cols, dtype=torch.float64)
    with pytest.raises(ValueError, match="shape mismatch"):
        Derivatives(inputs, outputs, ("x", "t"), ("u",))


# ---------------------------------------------------------------- exact PDE solutions


def _wrap(
    points: Tensor, fields: Callable[[Tensor, Tensor], tuple[Tensor, ...]], names: tuple[str, ...]
) -> tuple[Derivatives, Tensor]:
    inputs = points.clone().double().requires_grad_(True)
    outputs = torch.stack(fields(inputs[:, 0], inputs[:, 1]), dim=-1)
    return Derivatives(inputs, outputs, names, ("u", "v", "p")[: outputs.shape[-1]]), inputs


def test_kovasznay_exact_solution_has_zero_residuals() -> None:
    """The exact Kovasznay flow satisfies the residuals the PINN is trained on, to round-off."""
    problem = NavierStokes()
    conditions = problem.conditions(seed=0)
    d, _ = _wrap(conditions["pde"].points, problem.exact, ("x", "y"))
    residuals = problem.momentum_and_continuity(d)
    assert set(residuals) == {"momentum_x", "momentum_y", "continuity"}
    for name, value in residuals.items():
        assert value.abs().max().item() < 1e-10, name
    # The terms themselves are O(1-10), so the cancellation is not trivially small.
    assert d.laplacian("u").abs().max().item() > 1.0
    for key in ("bc", "outlet"):
        d, _ = _wrap(conditions[key].points, problem.exact, ("x", "y"))
        out = conditions[key].residual(d)
        for value in out.values() if isinstance(out, dict) else [out]:
            assert value.abs().max().item() < 1e-12, key


def test_kovasznay_residual_detects_a_wrong_reynolds_number() -> None:
    """Negative control: the exact flow for Re=20 does not satisfy the Re=40 equations."""
    d, _ = _wrap(NavierStokes().domain.interior(256, "sobol", 0), NavierStokes().exact, ("x", "y"))
    residuals = NavierStokes(reynolds=40.0).momentum_and_continuity(d)
    assert residuals["momentum_x"].abs().max().item() > 1e-2
    assert residuals["continuity"].abs().max().item() < 1e-10  # divergence-free regardless


def test_burgers_initial_and_boundary_residuals_vanish_on_exact_solution() -> None:
    """u(x, 0) = -sin(pi x) and u(+-1, t) = 0 give zero ic/bc residuals on their own points."""
    problem = Burgers()
    conditions = problem.conditions(seed=3)
    ic = conditions["ic"].points
    assert torch.count_nonzero(ic[:, 1]) == 0  # the initial points really are at t = 0
    d, _ = _wrap(ic, lambda x, t: (-torch.sin(math.pi * x),), ("x", "t"))
    assert problem.initial(d).abs().max().item() < 1e-15
    d, _ = _wrap(ic, lambda x, t: (torch.sin(math.pi * x),), ("x", "t"))
    assert problem.initial(d).abs().max().item() > 1.0  # wrong sign is caught

    bc = conditions["bc"].points
    exact = torch.from_numpy(burgers_exact(bc[:, 0].numpy(), bc[:, 1].numpy()))
    d, _ = _wrap(bc, lambda x, t: (exact + 0 * x,), ("x", "t"))
    assert set(np.unique(bc[:, 0].numpy())) == {-1.0, 1.0}
    assert problem.boundary(d).abs().max().item() < 1e-12


def test_burgers_pde_residual_vanishes_on_travelling_wave() -> None:
    """u = c - a tanh(a (x - c t) / (2 nu)) solves u_t + u u_x = nu u_xx exactly."""
    nu, a, c = 0.05, 0.5, 0.3
    problem = Burgers(nu=nu)

    def wave(x: Tensor, t: Tensor) -> tuple[Tensor]:
        return (c - a * torch.tanh(a * (x - c * t) / (2 * nu)),)

    d, _ = _wrap(problem.domain.interior(512, "sobol", 0), wave, ("x", "t"))
    assert problem.pde(d).abs().max().item() < 1e-10
    assert d("u", "x", "x").abs().max().item() > 1.0  # the terms are not trivially small
    assert Burgers(nu=2 * nu).pde(d).abs().max().item() > 0.1  # wrong viscosity is caught
