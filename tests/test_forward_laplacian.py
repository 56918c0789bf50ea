"""A residual's Laplacian as one summed Taylor stream (`derivatives.carry`, `taylor_laplacian=`).

The summed stream must give what autograd gives (values and weight gradients), through plain,
periodic and output-transformed MLPs, in low precision through the recomputing activation step,
and under training; and it must really carry fewer streams: that is the point of it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from test_compiled_step import TINY_NS, assert_same_training, train
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.carry import (
    LAPLACIAN,
    CarryPlan,
    laplacian_streams,
    laplacians_apart,
    plan_carry,
)
from mpsciml.derivatives.taylor import TaylorDerivatives, probe_derivatives
from mpsciml.models.constrained import ConstrainedModel
from mpsciml.models.mlp import MLP
from mpsciml.problems.navier_stokes import NavierStokes
from mpsciml.train import derivative_facts

NAMES_IN, NAMES_OUT = ("x", "y", "t"), ("u", "v")
LAP_XY = (LAPLACIAN, "x", "y")


def residual(d: Derivatives) -> Tensor:
    """A heat-like equation with a nonlinearity: u_t + lap u + v lap v."""
    return d("u", "t") + d.laplacian("u", "x", "y") + d["v"] * d.laplacian("v", "x", "y")


def _bump(coordinates: list, raw: list) -> list:
    """An output transform (hard-constraint style): x (1 - x) N_u, N_v + y."""
    x, y = coordinates[0], coordinates[1]
    return [x * (1 - x) * raw[0], raw[1] + y]


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mlp": lambda: MLP(3, 2, (16, 16)),
    "periodic": lambda: MLP(3, 2, (16, 16), periodic={0: 2.0}),
    "constrained": lambda: ConstrainedModel(MLP(3, 2, (16, 16)), _bump),
}


@pytest.mark.parametrize(
    ("carry", "plan"),
    [
        ([LAP_XY], CarryPlan((0, 1), (0, 1), True)),
        ([("t",), LAP_XY], CarryPlan((0, 1, 2), (0, 1), True)),
        ([LAP_XY, ("x", "x")], CarryPlan((0, 1), (0, 1), False)),  # u_xx wanted on its own
        ([LAP_XY, (LAPLACIAN, "x", "t")], CarryPlan((0, 1, 2), (0, 1, 2), False)),
        ([(LAPLACIAN, "y")], CarryPlan((1,), (1,), False)),  # one term: nothing to sum
        ([("x",), ("x", "x")], CarryPlan((0,), (0,), False)),
    ],
)
def test_a_laplacian_is_summed_only_when_its_terms_are_never_wanted_apart(carry, plan) -> None:
    assert plan_carry(carry, NAMES_IN) == plan


def test_unknown_inputs_in_a_laplacian_are_named() -> None:
    with pytest.raises(KeyError, match=r"unknown input\(s\) \['z'\]"):
        plan_carry([(LAPLACIAN, "x", "z")], NAMES_IN)


def test_apart_replaces_a_laplacian_by_its_terms_in_stream_order() -> None:
    keys = laplacians_apart([LAP_XY, ("t",)], NAMES_IN)
    assert keys == (("x",), ("y",), ("t",), ("x", "x"), ("y", "y"))


@pytest.mark.parametrize("name", list(MODELS))
def test_the_summed_stream_gives_autograd_values_and_weight_gradients_in_fp64(name) -> None:
    torch.manual_seed(0)
    model = MODELS[name]().double()
    points = torch.rand(40, 3, dtype=torch.float64)
    carry = probe_derivatives(residual, model, points, NAMES_IN, NAMES_OUT)
    assert carry == (("t",), LAP_XY)
    taylor = TaylorDerivatives(model, points, NAMES_IN, NAMES_OUT, carry=carry)
    assert taylor._laplacian is not None and taylor._laplacian.shape == (1, 40, 2)
    inputs = points.clone().requires_grad_(True)
    reference = Derivatives(inputs, model(inputs), NAMES_IN, NAMES_OUT)
    results = []
    for d in (taylor, reference):
        value = residual(d)
        grads = torch.autograd.grad(value.square().mean(), list(model.parameters()))
        results.append((value, grads))
    (value, grads), (expected, expected_grads) = results
    torch.testing.assert_close(value, expected, rtol=1e-11, atol=1e-11)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-11)


def test_without_fallback_the_laplacian_comes_from_the_summed_stream_only() -> None:
    """A compiled step's derivatives (no autograd fallback): the Laplacian is served, a single
    u_xx that was not carried is refused, not silently differentiated."""
    model = MLP(3, 2, (8,))
    d = TaylorDerivatives(
        model, torch.rand(5, 3), NAMES_IN, NAMES_OUT, carry=(("t",), LAP_XY), fallback=False
    )
    assert d.laplacian("v", "y", "x").shape == (5,)  # the same set of inputs, any order
    with pytest.raises(KeyError, match="not carried"):
        d("u", "x", "x")


def _matmul_flops(model: nn.Module, points: Tensor, carry: tuple) -> int:
    with FlopCounterMode(display=False) as counter:
        TaylorDerivatives(model, points, ("x", "y"), ("u", "v", "p"), carry=carry)
    return counter.get_total_flops()


def test_navier_stokes_carries_four_streams_instead_of_five() -> None:
    """Value, u_x, u_y and one Laplacian: the hidden matmuls run on 4N rows, not 5N."""
    problem = NavierStokes(n_domain=256)
    pde = problem.conditions(0)["pde"]
    model = MLP(2, 3, (64, 64, 64)).double()  # the problem's points are fp64
    names = problem.input_names, problem.output_names
    summed = probe_derivatives(pde.residual, model, pde.points, *names)
    assert summed == (("x",), ("y",), LAP_XY)
    apart = laplacians_apart(summed, problem.input_names)
    ratio = _matmul_flops(model, pde.points, summed) / _matmul_flops(model, pde.points, apart)
    assert 0.75 <= ratio <= 0.82, ratio


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_under_autocast_the_summed_stream_agrees_with_the_terms_apart(dtype) -> None:
    """Low precision goes through the recomputing step (its summed backward included); the
    sum and the terms summed after round differently, so they agree to the dtype's precision."""
    torch.manual_seed(1)
    model = MLP(3, 2, (32, 32))
    points = torch.rand(64, 3)
    results = []
    for carry in ((("t",), LAP_XY), laplacians_apart((("t",), LAP_XY), NAMES_IN)):
        with torch.autocast("cpu", dtype=dtype):
            d = TaylorDerivatives(model, points, NAMES_IN, NAMES_OUT, carry=carry)
            value = residual(d)
        grads = torch.autograd.grad(value.square().mean(), list(model.parameters()))
        results.append((value, torch.cat([g.flatten() for g in grads])))
    (value, grads), (value_apart, grads_apart) = results
    assert torch.isfinite(value).all() and torch.isfinite(grads).all()
    scale = value_apart.abs().max()
    assert (value - value_apart).abs().max() <= 0.03 * scale
    cosine = torch.nn.functional.cosine_similarity(grads, grads_apart, dim=0)
    assert cosine > 0.999, cosine


def test_training_with_the_laplacian_summed_or_apart_is_the_same_run(tiny_config) -> None:
    """Navier-Stokes in fp32 over 10 steps: the same losses, gradients and weights to 1e-5,
    and summary.json says which way the Laplacian travelled."""
    common = [*TINY_NS, "derivatives=taylor", "trainer.max_steps=10"]
    summed = train(tiny_config(*common))
    apart = train(tiny_config(*common, "taylor_laplacian=apart"))
    assert_same_training(apart, summed, rel=1e-5)
    assert summed["module"]._carry["pde"] == (("x",), ("y",), LAP_XY)
    assert LAP_XY not in apart["module"]._carry["pde"]
    engine = {"requested": "taylor", "used": "taylor", "reason": None}
    assert derivative_facts(summed["module"]) == {**engine, "laplacian": "summed"}
    assert derivative_facts(apart["module"]) == {**engine, "laplacian": "apart"}


def test_how_the_laplacians_travel_is_reported_only_where_there_are_some() -> None:
    assert laplacian_streams([[("t",), ("x", "x")], []], NAMES_IN) is None  # Burgers-like
    assert laplacian_streams([[LAP_XY], [("x",)]], NAMES_IN) == "summed"
    assert laplacian_streams([[LAP_XY], [LAP_XY, ("y", "y")]], NAMES_IN) == "apart"


def test_an_unknown_laplacian_mode_names_the_allowed_ones(tiny_config) -> None:
    from mpsciml.compose import build

    with pytest.raises(ValueError, match="taylor_laplacian='sideways' is unknown; allowed: summed"):
        build(tiny_config(*TINY_NS, "derivatives=taylor", "taylor_laplacian=sideways"))
