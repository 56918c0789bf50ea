"""Checks of `derivatives.taylor`: forward-mode derivatives must be the autograd ones, faster.

`mpsciml.derivatives.autograd.Derivatives` is the reference (itself checked against closed forms
in test_derivatives_autograd.py): values, streams, fallback partials, PDE residuals, weight
gradients and whole training runs of the two paths must agree to rounding, in fp64 and fp32. Low
precisions are only asked to stay finite and close, and to report overflowed derivatives like
`Derivatives` does.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping

import pytest
import torch
from torch import Tensor, nn

from mpsciml.benchmark.saved_bytes import SavedTensorMeter
from mpsciml.derivatives import rules as taylor_rules
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.carry import LAPLACIAN
from mpsciml.derivatives.taylor import (
    TaylorDerivatives,
    UnsupportedModelError,
    probe_derivatives,
    supports_taylor,
    taylor_forward,
)
from mpsciml.models.deeponet import DeepONet
from mpsciml.models.mlp import MLP
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.navier_stokes import NavierStokes


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These networks are too small to gain from threads, and on a shared CPU OpenMP workers
    spin-waiting for a busy core made the training-run test 40x slower (90 s instead of 2 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ACTIVATIONS = ["tanh", "sin", "gelu", "silu", "relu", "softplus"]
NAMES_IN, NAMES_OUT = ("x", "y", "t"), ("u", "v")


def _assert_close(actual: Tensor, expected: Tensor, rel: float, what: str = "") -> None:
    """max |actual - expected| <= rel * max |expected| (norm-wise relative, robust near zeros)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, what
    error = (actual.double() - expected.double()).abs().max().item()
    scale = max(expected.double().abs().max().item(), 1e-300)
    assert error <= rel * scale, f"{what}: max error {error:.3e} > {rel:.0e} * {scale:.3e}"


def _mlp(activation: str, dtype: torch.dtype = torch.float64, seed: int = 0, **kw: object) -> MLP:
    torch.manual_seed(seed)
    defaults: dict = {"hidden": (16, 16, 16), "init": "default"}
    return MLP(3, 2, activation=activation, **(defaults | kw)).to(dtype)


def _points(n: int, dim: int = 3, dtype: torch.dtype = torch.float64, seed: int = 1) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    points = 2 * torch.rand(n, dim, generator=generator, dtype=torch.float64) - 1
    return points.to(dtype).requires_grad_(True)


def _both(model: nn.Module, inputs: Tensor, **kw: object) -> tuple[Derivatives, Derivatives]:
    reference = Derivatives(inputs, model(inputs), NAMES_IN, NAMES_OUT, **kw)
    return reference, TaylorDerivatives(model, inputs, NAMES_IN, NAMES_OUT, **kw)


@pytest.mark.parametrize("activation", [*ACTIVATIONS, "gelu_tanh", "sigmoid"])
def test_streams_equal_autograd_in_fp64(activation: str) -> None:
    """Value, every first and every unmixed second derivative, for each activation."""
    if activation in ("gelu_tanh", "sigmoid"):
        model = _mlp("tanh")
        act = nn.GELU(approximate="tanh") if activation == "gelu_tanh" else nn.Sigmoid()
        model.net = nn.Sequential(*[act if isinstance(m, nn.Tanh) else m for m in model.net])
    else:
        model = _mlp(activation)
    reference, taylor = _both(model, _points(64))
    for out in NAMES_OUT:
        _assert_close(taylor[out], reference[out], 1e-12, out)
        for x in NAMES_IN:
            _assert_close(taylor(out, x), reference(out, x), 1e-12, f"{out}_{x}")
            _assert_close(taylor(out, x, x), reference(out, x, x), 1e-12, f"{out}_{x}{x}")
        _assert_close(taylor.laplacian(out), reference.laplacian(out), 1e-12, "laplacian")
    assert taylor.coordinate("t").equal(reference.coordinate("t"))


CARRIES = {
    "all": None,
    "values": (),
    "first": [("x",), ("y",), ("t",)],
    "burgers_like": [("x",), ("t",), ("x", "x")],
    "second_only": [("t", "t"), ("y", "y", "x")],  # a second derivative implies its first
}


@pytest.mark.parametrize("carry", list(CARRIES))
def test_mixed_and_higher_partials_fall_back_to_autograd(carry: str) -> None:
    """Whatever the streams do not carry comes from autograd of a stream, and is right."""
    model = _mlp("tanh")
    inputs = _points(32)
    reference = Derivatives(inputs, model(inputs), NAMES_IN, NAMES_OUT)
    taylor = TaylorDerivatives(model, inputs, NAMES_IN, NAMES_OUT, carry=CARRIES[carry])
    keys = [("x", "y"), ("y", "x"), ("t", "x"), ("x", "x", "y"), ("y", "y", "y"), ("x", "t", "t")]
    keys += [("x",), ("y",), ("t",), ("x", "x"), ("y", "y"), ("t", "t")]  # streams or fallbacks
    for key in keys:
        _assert_close(taylor("v", *key), reference("v", *key), 1e-11, str(key))
        _assert_close(taylor("u", *key), reference("u", *key), 1e-11, str(key))
    assert set(keys) <= taylor.requested


def test_unknown_names_raise_like_derivatives() -> None:
    d = TaylorDerivatives(_mlp("tanh"), _points(4), NAMES_IN, NAMES_OUT)
    for key in [("w",), ("u", "z"), ("u", "z", "z"), ("w", "x"), ("w", "x", "x")]:
        with pytest.raises(KeyError):
            d(*key)
    with pytest.raises(KeyError):
        d["w"]
    with pytest.raises(KeyError, match="carry"):
        TaylorDerivatives(_mlp("tanh"), _points(4), NAMES_IN, NAMES_OUT, carry=[("z",)])


# ---------------------------------------------------- residuals, gradients, training runs


def _loss(residual: Tensor | Mapping[str, Tensor]) -> Tensor:
    values = residual.values() if isinstance(residual, Mapping) else [residual]
    return sum((torch.mean(value**2) for value in values), start=torch.zeros(()))


CASES = {
    "burgers": (Burgers(), lambda p: p.pde, 1),
    "navier_stokes": (NavierStokes(n_domain=256), lambda p: p.momentum_and_continuity, 3),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("case", list(CASES))
def test_residuals_and_weight_gradients_equal_autograd(case: str, dtype: torch.dtype) -> None:
    problem, residual_of, outputs = CASES[case]
    residual = residual_of(problem)
    torch.manual_seed(3)
    model = MLP(2, outputs, hidden=(32, 32, 32)).to(dtype)
    points = problem.conditions(0)["pde"].points[:512].to(dtype)
    rel = 1e-10 if dtype == torch.float64 else 1e-5
    results = []
    for taylor in (False, True):
        inputs = points.clone().requires_grad_(True)
        names = (problem.input_names, problem.output_names)
        d = (
            TaylorDerivatives(model, inputs, *names)
            if taylor
            else Derivatives(inputs, model(inputs), *names)
        )
        value = residual(d)
        loss = _loss(value)
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((value, loss, grads))
    (value_a, loss_a, grads_a), (value_t, loss_t, grads_t) = results
    if isinstance(value_a, Mapping):
        for name in value_a:
            _assert_close(value_t[name], value_a[name], rel, name)
    else:
        _assert_close(value_t, value_a, rel, "residual")
    _assert_close(loss_t, loss_a, rel, "loss")
    for i, (grad_t, grad_a) in enumerate(zip(grads_t, grads_a, strict=True)):
        _assert_close(grad_t, grad_a, rel, f"gradient of parameter {i}")


def _train(model: nn.Module, problem: Burgers, taylor: bool, steps: int) -> list[float]:
    """Adam on all of Burgers' conditions, Taylor path carrying what each condition asks for."""
    conditions = problem.conditions(0)
    names = (problem.input_names, problem.output_names)
    carry = {
        k: probe_derivatives(c.residual, model, c.points, *names) for k, c in conditions.items()
    }
    assert carry == {"pde": (("x",), ("t",), ("x", "x")), "bc": (), "ic": ()}  # in this order
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros(())
        for name, condition in conditions.items():
            inputs = condition.points.float().requires_grad_(True)
            d = (
                TaylorDerivatives(model, inputs, *names, carry=carry[name])
                if taylor
                else Derivatives(inputs, model(inputs), *names)
            )
            loss = loss + _loss(condition.residual(d))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_run_matches_autograd_in_fp32() -> None:
    """30 Adam steps on Burgers: the losses of both paths agree to 1e-6 at every step."""
    problem = Burgers()
    torch.manual_seed(0)
    model = MLP(2, 1, hidden=(32, 32, 32))
    eager = _train(copy.deepcopy(model), problem, taylor=False, steps=30)
    taylor = _train(copy.deepcopy(model), problem, taylor=True, steps=30)
    assert eager[-1] < eager[0]  # it trains at all
    for step, (a, t) in enumerate(zip(eager, taylor, strict=True)):
        assert abs(t - a) <= 1e-6 * abs(a), f"step {step}: eager {a!r} vs taylor {t!r}"


# ------------------------------------------------------------------ low precision


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_is_finite_close_and_computed_in_low_precision(dtype: torch.dtype) -> None:
    """Under autocast the matmuls of every stream run in the low dtype; results come back fp32,
    finite, close to fp32 autograd, and so are the weight gradients of a residual loss."""
    model = _mlp("tanh", torch.float32, hidden=(32, 32, 32))
    inputs = _points(256, dtype=torch.float32)
    reference = Derivatives(inputs, model(inputs), NAMES_IN, NAMES_OUT)
    keys = [(), ("x",), ("t",), ("y", "y"), ("x", "t")]
    with torch.autocast("cpu", dtype=dtype):
        streams = taylor_forward(model, inputs)
        d = TaylorDerivatives.from_model(model, inputs, NAMES_IN, NAMES_OUT, track_nonfinite=True)
        values = {key: d("u", *key) for key in keys}
    assert streams.value.dtype == streams.first.dtype == streams.second.dtype == dtype
    assert set(d.nonfinite) == {1, 2} and {int(count) for count in d.nonfinite.values()} == {0}
    for key, value in values.items():
        assert value.dtype == torch.float32 and torch.isfinite(value).all(), key
        _assert_close(value, reference("u", *key), 0.05, str(key))
    loss = torch.mean((d("u", "t") - d.laplacian("v")) ** 2 + d["v"] ** 2)
    expected = torch.mean(
        (reference("u", "t") - reference.laplacian("v")) ** 2 + reference["v"] ** 2
    )
    for got, want in zip(
        torch.autograd.grad(loss, list(model.parameters())),
        torch.autograd.grad(expected, list(model.parameters())),
        strict=True,
    ):
        _assert_close(got, want, 0.1)


def test_pure_fp16_streams_are_returned_in_fp32() -> None:
    model = _mlp("tanh", torch.float32)
    inputs = _points(128, dtype=torch.float32)
    reference = Derivatives(inputs, model(inputs), NAMES_IN, NAMES_OUT)
    half = copy.deepcopy(model).half()
    d = TaylorDerivatives(half, inputs.detach().half(), NAMES_IN, NAMES_OUT)
    for key in [(), ("y",), ("t", "t")]:
        assert d("v", *key).dtype == torch.float32
        _assert_close(d("v", *key), reference("v", *key), 0.02, str(key))


def test_seeds_scale_streams_exactly_and_prevent_fp16_overflow() -> None:
    """A steep layer makes u_xx ~ 1e5 > 65504: with seed 1 the fp16 order-2 streams overflow and
    are counted; with seed(2) = 2^-6 they do not, and the fp64 results do not depend on seeds."""
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 2))
    with torch.no_grad():
        model[0].weight.mul_(300 / model[0].weight.abs().max())
        model[2].weight.fill_(0.5)
    inputs = _points(64, dtype=torch.float32) * 3e-3
    plain = TaylorDerivatives(copy.deepcopy(model).double(), inputs.double(), NAMES_IN, NAMES_OUT)
    assert plain("u", "x", "x").abs().max() > 1e5
    seeds = {1: 0.5, 2: 2.0**-6}
    seeded = TaylorDerivatives(
        copy.deepcopy(model).double(), inputs.double(), NAMES_IN, NAMES_OUT, seed=seeds.get
    )
    for key in [("x",), ("x", "x"), ("x", "y")]:
        assert seeded("u", *key).equal(plain("u", *key)), key
    half, low = copy.deepcopy(model).half(), inputs.detach().half()
    overflowed = TaylorDerivatives(half, low, NAMES_IN, NAMES_OUT, track_nonfinite=True)
    assert int(overflowed.nonfinite[2]) > 0 and int(overflowed.nonfinite[1]) == 0
    safe = TaylorDerivatives(half, low, NAMES_IN, NAMES_OUT, seed=seeds.get, track_nonfinite=True)
    assert int(safe.nonfinite[2]) == 0
    _assert_close(safe("u", "x", "x"), plain("u", "x", "x").float(), 0.05)


def test_tensor_seeds_give_the_float_seeds_streams_in_fp16() -> None:
    """A compiled step passes its seeds as tensors (no recompile when the scaler moves them):
    the streams, the results and the non-finite counts are those of the same float seeds."""
    model = _mlp("tanh", torch.float16)
    inputs = _points(32, dtype=torch.float16)
    floats = {1: 0.5, 2: 0.25}
    tensors = torch.tensor([0.5, 0.25])
    kw = {"track_nonfinite": True}
    by_float = TaylorDerivatives(model, inputs, NAMES_IN, NAMES_OUT, seed=floats.get, **kw)
    by_tensor = TaylorDerivatives(
        model, inputs, NAMES_IN, NAMES_OUT, seed=lambda k: tensors[k - 1], **kw
    )
    for key in [("x",), ("t",), ("x", "x"), ("y", "y")]:
        assert by_tensor("v", *key).equal(by_float("v", *key)), key
    assert by_tensor.nonfinite.keys() == by_float.nonfinite.keys()


def test_without_fallback_inputs_stay_plain_and_uncarried_derivatives_are_refused() -> None:
    """`fallback=False` (what a compiled step uses): the inputs are not marked for autograd
    (torch.compile cannot return such a tensor, nor differentiate twice), the carried streams
    are the fallback=True ones, and a derivative outside the streams is an error, not autograd."""
    model = _mlp("tanh", torch.float32)
    inputs = _points(16, dtype=torch.float32).detach()
    plain = TaylorDerivatives(model, inputs, NAMES_IN, NAMES_OUT, fallback=False)
    assert not plain.inputs.requires_grad
    reference = TaylorDerivatives(model, inputs, NAMES_IN, NAMES_OUT)
    for key in [(), ("x",), ("t", "t")]:
        assert plain("u", *key).equal(reference("u", *key)), key
    assert plain.coordinate("y").equal(reference.coordinate("y"))
    with pytest.raises(KeyError, match=r"d\(u, x, y\) is not carried"):
        plain("u", "x", "y")


# ------------------------------------------------------------------ what is supported


def test_supports_taylor_recognises_mlps_and_refuses_the_rest() -> None:
    nested = nn.Sequential(
        nn.Linear(2, 8), nn.Sequential(nn.SiLU(), nn.Identity()), nn.Linear(8, 1)
    )
    assert supports_taylor(_mlp("gelu")) and supports_taylor(nested)
    layer_norm = nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8), nn.Linear(8, 1))
    assert not supports_taylor(layer_norm)
    assert not supports_taylor(
        DeepONet(n_sensors=4, coord_dim=1, branch_hidden=(8,), trunk_hidden=(8,))
    )
    with pytest.raises(UnsupportedModelError, match="LayerNorm"):
        TaylorDerivatives(layer_norm, _points(4, dim=2), ("x", "t"), ("u",))
    hooked = _mlp("tanh")
    handle = hooked.net[0].register_forward_hook(lambda *args: None)
    assert not supports_taylor(hooked)
    handle.remove()
    assert supports_taylor(hooked)


def test_values_only_works_for_any_model() -> None:
    """carry=() is a plain forward, so boundary terms never need the engine."""
    model = nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1)).double()
    inputs = _points(16, dim=2)
    d = TaylorDerivatives(model, inputs, ("x", "t"), ("u",), carry=())
    reference = Derivatives(inputs, model(inputs), ("x", "t"), ("u",))
    assert d["u"].equal(reference["u"])
    _assert_close(d("u", "x", "t"), reference("u", "x", "t"), 1e-12)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_vanishing_second_derivatives_are_zeros(activation: str | None) -> None:
    layers = [nn.Linear(3, 8), nn.Linear(8, 2)] if activation is None else [_mlp("relu")]
    d = TaylorDerivatives(nn.Sequential(*layers).double(), _points(8), NAMES_IN, NAMES_OUT)
    assert d("u", "x", "x").shape == (8,) and torch.count_nonzero(d.laplacian("v")) == 0
    assert math.isfinite(d("u", "y").sum().item())


def test_probe_derivatives_for_navier_stokes() -> None:
    problem = NavierStokes()
    model = MLP(2, 3, hidden=(8,))
    names = (problem.input_names, problem.output_names)
    residuals: dict[str, Callable] = {k: c.residual for k, c in problem.conditions(0).items()}
    points = problem.conditions(0)["pde"].points
    carry = {k: probe_derivatives(r, model, points, *names) for k, r in residuals.items()}
    laplacian = (LAPLACIAN, "x", "y")  # asked for as d.laplacian: one summed stream
    assert carry == {"pde": (("x",), ("y",), laplacian), "bc": (), "outlet": ()}  # this order


_PROBE_IN_A_FRESH_PROCESS = """
from mpsciml.derivatives.taylor import probe_derivatives
from mpsciml.models.mlp import MLP
from mpsciml.problems.navier_stokes import NavierStokes
problem = NavierStokes()
pde = problem.conditions(0)["pde"]
model = MLP(2, 3, hidden=(8,))
print(probe_derivatives(pde.residual, model, pde.points, problem.input_names, problem.output_names))
"""


def test_the_carried_directions_keep_one_order_whatever_the_string_hashes() -> None:
    """The carry's order is the order of the Taylor streams' directions, which moves the last
    bits of every derivative: under a set's order a run differed from its own rerun (each
    Python process hashes strings differently) by 1e-8 in the cavity's loss after 300 steps."""
    orders = {
        subprocess.run(
            [sys.executable, "-c", _PROBE_IN_A_FRESH_PROCESS],
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in range(4)
    }
    assert len(orders) == 1, orders


# ---------------------------------------- low-precision activation steps: memory, not results


def _activation_module(name: str) -> nn.Module:
    special = {
        "gelu_tanh": nn.GELU(approximate="tanh"),
        "sigmoid": nn.Sigmoid(),
        "softplus_beta": nn.Softplus(beta=2.0, threshold=1.0),  # both branches at |z| ~ 1
    }
    return special[name] if name in special else _mlp(name).net[1]


STEP_ACTIVATIONS = [*ACTIVATIONS, "gelu_tanh", "sigmoid", "softplus_beta"]


@pytest.mark.parametrize("activation", STEP_ACTIVATIONS)
def test_low_precision_step_is_twice_differentiable_in_fp64(activation: str) -> None:
    """gradcheck and gradgradcheck of the recomputing Function (sigma''' included), with
    point-independent and per-point first streams, with and without incoming second streams
    and with a seed ratio != 1, per direction and summed (a Laplacian); twice, because the
    mixed-partial fallback differentiates its backward again."""
    layer = _activation_module(activation)
    generator = torch.Generator().manual_seed(4)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(True)

    z, first, first_shared, second = randn(3, 2), randn(3, 3, 2), randn(3, 1, 2), randn(2, 3, 2)
    summed = randn(1, 3, 2)
    for streams, is_sum in [
        ((z, first, second), False),
        ((z, first_shared, second), False),
        ((z, first_shared, None), False),
        ((z, first, summed), True),
        ((z, first_shared, None), True),
    ]:

        def step(
            z: Tensor, first: Tensor, second: Tensor | None = None, is_sum: bool = is_sum
        ) -> tuple[Tensor, ...]:
            outputs = taylor_rules._LowPrecisionStep.apply(layer, 2, 0.7, is_sum, z, first, second)
            return tuple(output for output in outputs if output is not None)

        inputs = tuple(tensor for tensor in streams if tensor is not None)
        assert torch.autograd.gradcheck(step, inputs)
        assert torch.autograd.gradgradcheck(step, inputs)


def _graph_has(tensor: Tensor, node_name: str) -> bool:
    """Whether the autograd graph that made `tensor` has a node of that type name."""
    seen, todo = set(), [tensor.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == node_name:
            return True
        todo.extend(next_node for next_node, _ in node.next_functions)
    return False


def _loss_and_gradients(model: nn.Module, inputs: Tensor) -> tuple[Tensor, ...]:
    """A residual-like loss from streams and one autograd fallback (u_xy), and its gradients."""
    d = TaylorDerivatives(model, inputs, NAMES_IN, NAMES_OUT)
    loss = torch.mean(
        (d("u", "t") - d.laplacian("v")) ** 2 + d["v"] ** 2 + d("u", "x", "y") ** 2 + d("v", "x")
    )
    return (loss, *torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize("low", [None, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("activation", STEP_ACTIVATIONS)
def test_recomputing_step_gives_the_plain_losses_and_gradients(
    activation: str, low: torch.dtype | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loss and weight gradients with the recomputing step equal those of the plain autograd
    step: to 1e-6 in fp32 (where it is forced on), to rounding under fp16/bf16 autocast."""
    model = _mlp("tanh", torch.float32, hidden=(16, 16))
    layer = _activation_module(activation)
    model.net = nn.Sequential(*[layer if isinstance(m, nn.Tanh) else m for m in model.net])
    inputs = _points(64, dtype=torch.float32)
    dtype = low or torch.float32
    results = []
    for recompute in (set(), {dtype}):
        monkeypatch.setattr(taylor_rules, "RECOMPUTE_DTYPES", recompute)
        with torch.autocast("cpu", dtype=dtype, enabled=low is not None):
            streams = taylor_forward(model, inputs)
            uses_function = _graph_has(streams.value, "_LowPrecisionStepBackward")
            results.append(_loss_and_gradients(model, inputs))
        assert uses_function == bool(recompute)  # the path under test was taken
    rel = 1e-6 if low is None else 2e-2
    for i, (new, plain) in enumerate(zip(results[1], results[0], strict=True)):
        assert torch.isfinite(new).all()
        _assert_close(new, plain, rel, "loss" if i == 0 else f"gradient of parameter {i - 1}")


@pytest.mark.parametrize("low", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_mixed_precision_halves_the_memory_saved_for_backward(
    low: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes autograd saves for a Taylor forward + residual of a 2-[64]x3-3 MLP on 512 points
    with second derivatives: under autocast <= 0.55x fp32; with the fp32 intermediates saved
    (the plain step) it is not, so the bound measures the recomputing step."""
    torch.manual_seed(0)
    model = MLP(2, 3, hidden=(64, 64, 64))
    inputs = _points(512, dim=2, dtype=torch.float32)

    def saved_bytes(autocast: bool) -> int:
        with SavedTensorMeter() as meter, torch.autocast("cpu", dtype=low, enabled=autocast):
            d = TaylorDerivatives(model, inputs, ("x", "y"), ("u", "v", "p"))
            residual = d["u"] * d("u", "x") + d("p", "y") - 0.05 * d.laplacian("v")
            torch.mean(residual**2).backward()
        return meter.total_bytes

    fp32 = saved_bytes(autocast=False)
    assert saved_bytes(autocast=True) <= 0.55 * fp32
    monkeypatch.setattr(taylor_rules, "RECOMPUTE_DTYPES", set())
    assert saved_bytes(autocast=True) > 0.8 * fp32
