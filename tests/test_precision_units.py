"""The pieces of the precision system, each on a case small enough to reason about by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpsciml.derivatives.autograd import Derivatives, gradient
from mpsciml.precision.derivative_scaler import DerivativeScaler
from mpsciml.precision.diagnostics import gradient_underflow_fraction, lost_update_fraction
from mpsciml.precision.loss_scaler import DynamicLossScaler


def test_loss_scaler_unscales_backs_off_and_grows():
    scaler = DynamicLossScaler(init_scale=8.0, growth_interval=2)
    weight = nn.Parameter(torch.ones(3, dtype=torch.float16))
    scaler.scale_loss((weight * 0.5).sum()).backward()
    assert scaler.unscale_([weight]) is True
    assert torch.equal(weight.grad, torch.full((3,), 0.5, dtype=torch.float16))
    weight.grad = torch.tensor([1.0, float("inf"), 0.0], dtype=torch.float16)
    assert scaler.unscale_([weight]) is False
    scaler.update(found_nonfinite=True)
    assert scaler.get_scale() == 4.0
    scaler.update(False)
    scaler.update(False)
    assert scaler.get_scale() == 8.0


def test_derivative_scaler_backs_off_only_the_overflowing_order():
    scaler = DerivativeScaler(growth_interval=2)
    scaler.update(nonfinite_orders={2}, orders_seen={1, 2})
    assert (scaler.seed(1), scaler.seed(2)) == (1.0, 0.5)
    scaler.update(set(), {1, 2})
    scaler.update(set(), {1, 2})
    assert scaler.seed(2) == 1.0  # grown back, and never above max_scale
    scaler.update(set(), {1, 2})
    scaler.update(set(), {1, 2})
    assert scaler.seed(2) == 1.0
    assert scaler.overflow_steps == 1


def steep_network() -> nn.Module:
    """u(x) = 300 * tanh(40 x) + ...: u_xx reaches ~3e5 near 0.02, past fp16's 65504."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        net[0].weight.fill_(40.0)
        net[0].bias.zero_()
        net[2].weight.fill_(300.0 / 8)
        net[2].bias.zero_()
    return net


def second_derivative(net: nn.Module, x: torch.Tensor, seed: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        d = Derivatives(x, net(x), ("x",), ("u",), seed=lambda order: seed, track_nonfinite=True)
        return d("u", "x", "x"), d


def test_seeded_derivatives_equal_unseeded_in_fp64():
    x = torch.linspace(-1, 1, 50, dtype=torch.float64).unsqueeze(1).requires_grad_(True)
    u = torch.sin(3 * x) * x**2
    plain = gradient(gradient(u[:, 0], x)[:, 0], x)
    seeded = gradient(gradient(u[:, 0], x, seed=2.0**-6)[:, 0], x, seed=2.0**-6)
    assert torch.allclose(plain, seeded, rtol=1e-14, atol=1e-14)


def test_fp16_second_derivative_overflows_without_seed_scaling_and_not_with_it():
    net = steep_network()
    x = torch.linspace(0.005, 0.05, 64).unsqueeze(1)
    exact, _ = second_derivative(net.double(), x.double(), 1.0)
    net = net.float()
    unscaled, d_plain = second_derivative(net, x, 1.0)
    assert not torch.isfinite(unscaled).all()
    assert int(d_plain.nonfinite[2]) > 0  # the overflow is seen, in the step it happens
    scaled, d_scaled = second_derivative(net, x, 2.0**-4)
    assert torch.isfinite(scaled).all() and int(d_scaled.nonfinite[2]) == 0
    assert exact.abs().max() > 65504
    rel = ((scaled.double() - exact).norm() / exact.norm()).item()
    assert rel < 1e-2  # fp16 accuracy, but finite and right


def test_lost_updates_are_the_paper_failure_of_fp16_weights():
    for dtype, expected in ((torch.float16, 1.0), (torch.float32, 0.0)):
        weight = torch.ones(100, dtype=dtype)
        before = [weight.clone()]
        weight -= 1e-4  # Adam-sized step: below half an ulp of 1.0 in fp16 (4.9e-4)
        grads = [torch.ones(100, dtype=dtype)]
        assert lost_update_fraction(before, [weight], grads) == expected


def test_gradient_underflow_fraction_counts_what_fp16_would_zero():
    grads = [torch.tensor([1e-3, 1e-9, 0.0, 2e-7]), None]
    assert gradient_underflow_fraction(grads) == pytest.approx(0.5)
