"""Checks of `mpsciml.models.mlp.MLP`, the network of every PINN here.

The architecture and initialisation are experiment settings read from configs, so each name must
build what it says (the right widths, activation and weight scale) and each typo must fail with a
message naming the config key and the allowed values. The network must also survive the casts
that the precision experiments apply to it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.models.mlp import ACTIVATIONS, INITIALIZERS, MLP

FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "sin": torch.sin,
    "gelu": F.gelu,
    "silu": F.silu,
    "relu": F.relu,
    "softplus": F.softplus,
}


def _linears(model: MLP) -> list[nn.Linear]:
    return [m for m in model.net if isinstance(m, nn.Linear)]


@pytest.mark.parametrize("n", [0, 1, 17])
def test_output_shape(n: int) -> None:
    """(N, in) -> (N, out) for any batch size, including a single point and an empty batch."""
    model = MLP(3, 2, hidden=(8, 8))
    assert model(torch.rand(n, 3)).shape == (n, 2)


def test_layer_widths_follow_hidden() -> None:
    """in -> hidden... -> out, one activation between layers and none after the last."""
    model = MLP(2, 3, hidden=[5, 7, 11], activation="tanh")
    widths = [(m.in_features, m.out_features) for m in _linears(model)]
    assert widths == [(2, 5), (5, 7), (7, 11), (11, 3)]
    kinds = [type(m) for m in model.net]
    assert kinds == [nn.Linear, nn.Tanh] * 3 + [nn.Linear]
    # The output is linear, so it is not confined to tanh's (-1, 1).
    assert sum(p.numel() for p in model.parameters()) == sum(
        (i + 1) * o for i, o in [(2, 5), (5, 7), (7, 11), (11, 3)]
    )


def test_single_hidden_layer_and_float_widths_from_config() -> None:
    """hidden=(4,) gives two linears; widths given as floats (YAML) are cast to int."""
    model = MLP(1, 1, hidden=(4,))
    assert [(m.in_features, m.out_features) for m in _linears(model)] == [(1, 4), (4, 1)]
    assert [m.out_features for m in _linears(MLP(1, 1, hidden=(6.0, 3.0)))] == [6, 3, 1]


@pytest.mark.parametrize(
    ("init", "std"),
    [
        ("glorot_normal", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
        ("glorot_uniform", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
        ("he_normal", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ],
)
def test_initializer_weight_scale_and_zero_bias(
    init: str, std: Callable[[int, int], float]
) -> None:
    """Weights have the initializer's std on a wide layer (~0.3% sampling error); biases are 0."""
    torch.manual_seed(0)
    model = MLP(4, 2, hidden=(256, 768), init=init)
    for linear in _linears(model):
        assert torch.count_nonzero(linear.bias) == 0
    wide = _linears(model)[1]  # 256 -> 768: 196608 weights
    weights = wide.weight.detach().double()
    expected = std(wide.in_features, wide.out_features)
    assert weights.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(weights.mean().item()) < 0.02 * expected
    if init == "glorot_uniform":
        bound = math.sqrt(6 / (wide.in_features + wide.out_features))
        assert weights.abs().max().item() <= bound
        assert weights.abs().max().item() > 0.99 * bound


def test_glorot_normal_is_the_default_and_differs_from_torch_default() -> None:
    """The default init is glorot_normal; 'default' keeps PyTorch's (non-zero bias) init."""
    torch.manual_seed(1)
    default_model = MLP(2, 1, hidden=(64,))
    torch.manual_seed(1)
    glorot = MLP(2, 1, hidden=(64,), init="glorot_normal")
    for a, b in zip(default_model.parameters(), glorot.parameters(), strict=True):
        assert torch.equal(a, b)
    torch_default = MLP(2, 1, hidden=(64,), init="default")
    first = _linears(torch_default)[0]
    assert torch.count_nonzero(first.bias) > 0
    assert first.weight.abs().max().item() <= 1 / math.sqrt(first.in_features)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_every_activation_builds_and_computes_the_named_function(activation: str) -> None:
    """The name maps to that function: the forward pass equals a hand-written composition."""
    assert set(FUNCTIONS) == set(ACTIVATIONS)  # a new activation needs a reference here
    torch.manual_seed(2)
    model = MLP(2, 3, hidden=(16, 16), activation=activation).double()
    x = torch.randn(32, 2, dtype=torch.float64)
    h = x
    linears = _linears(model)
    for linear in linears[:-1]:
        h = FUNCTIONS[activation](F.linear(h, linear.weight, linear.bias))
    expected = F.linear(h, linears[-1].weight, linears[-1].bias)
    out = model(x)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["tanh", "sin", "gelu", "silu", "softplus"])
def test_smooth_activations_have_nonzero_second_derivatives(activation: str) -> None:
    """A PINN needs u_xx; smooth activations give a non-trivial one through Derivatives."""
    torch.manual_seed(3)
    model = MLP(2, 1, hidden=(16,), activation=activation).double()
    x = torch.randn(20, 2, dtype=torch.float64, requires_grad=True)
    d = Derivatives(x, model(x), ("x", "t"), ("u",))
    assert d("u", "x", "x").abs().max().item() > 1e-6


@pytest.mark.parametrize("bad", ["Tanh", "swish", ""])
def test_unknown_activation_names_key_and_allowed_values(bad: str) -> None:
    """A config typo must point at model.activation and list what is allowed."""
    with pytest.raises(ValueError, match=r"model\.activation=") as info:
        MLP(2, 1, activation=bad)
    message = str(info.value)
    assert repr(bad) in message
    assert all(name in message for name in ACTIVATIONS)


@pytest.mark.parametrize("bad", ["xavier", "glorot", "kaiming_normal"])
def test_unknown_init_names_key_and_allowed_values(bad: str) -> None:
    """A config typo must point at model.init and list what is allowed."""
    with pytest.raises(ValueError, match=r"model\.init=") as info:
        MLP(2, 1, init=bad)
    message = str(info.value)
    assert repr(bad) in message
    assert all(name in message for name in INITIALIZERS)


@pytest.mark.parametrize("hidden", [(), [], (32, 0), (-4,), (16, -1, 16)])
def test_empty_or_nonpositive_hidden_raises(hidden: tuple[int, ...] | list[int]) -> None:
    """No hidden layer or a width <= 0 is a config error naming model.hidden and the rule."""
    with pytest.raises(ValueError, match=r"model\.hidden=") as info:
        MLP(2, 1, hidden=hidden)
    message = str(info.value)
    assert str(list(hidden)) in message
    assert "non-empty" in message and "> 0" in message


def test_float64_forward_and_derivatives() -> None:
    """After .to(float64) parameters, outputs and derivatives are all float64."""
    torch.manual_seed(4)
    model = MLP(2, 2, hidden=(8, 8)).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    x = torch.rand(10, 2, dtype=torch.float64, requires_grad=True)
    out = model(x)
    assert out.dtype == torch.float64
    d = Derivatives(x, out, ("x", "y"), ("u", "v"))
    assert d("u", "x", "y").dtype == torch.float64
    # float64 and float32 copies of the same network agree to float32 accuracy
    out32 = model.to(torch.float32)(x.detach().float())
    torch.testing.assert_close(out32.double(), out.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_float16_forward(activation: str) -> None:
    """The fp16 copy runs on the CPU and agrees with fp32 to half precision (~1e-3)."""
    torch.manual_seed(5)
    model = MLP(2, 3, hidden=(32, 32), activation=activation)
    x = torch.rand(64, 2) * 2 - 1
    reference = model(x).detach()
    half = model.to(torch.float16)
    assert all(p.dtype == torch.float16 for p in half.parameters())
    with torch.no_grad():
        out = half(x.half())
    assert out.dtype == torch.float16
    assert torch.isfinite(out).all()
    error = (out.float() - reference).abs().max().item()
    assert error < 1e-2 * max(1.0, reference.abs().max().item())
