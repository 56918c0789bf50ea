"""Grid stencils (derivatives/stencils.py): exact on polynomials of their order, second-order on
smooth fields, assembled in fp32 whatever the field's precision."""

from __future__ import annotations

import math

import pytest
import torch

from mpsciml.derivatives.stencils import (
    first_derivative,
    flux_divergence,
    laplacian,
    q1_energy,
    second_derivative,
)


def mesh(nx: int, ny: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.linspace(0.0, 1.0, nx, dtype=torch.float64)
    y = torch.linspace(0.0, 1.0, ny, dtype=torch.float64)
    gx, gy = torch.meshgrid(x, y, indexing="ij")
    return gx[None, None], gy[None, None]


def test_first_and_second_differences_exact_on_polynomials_including_the_ends():
    x, y = mesh(9, 7)
    hx, hy = 1 / 8, 1 / 6
    u = 3 * x**2 - 2 * x * y + y**2 + 1
    torch.testing.assert_close(first_derivative(u, hx, 0), 6 * x - 2 * y)
    torch.testing.assert_close(first_derivative(u, hy, 1), -2 * x + 2 * y)
    cubic = x**3 - 2 * y**3 + x * y**2
    torch.testing.assert_close(second_derivative(cubic, hx, 0), 6 * x)
    torch.testing.assert_close(second_derivative(cubic, hy, 1), -12 * y + 2 * x)
    expected = (6 * x - 12 * y + 2 * x)[..., 1:-1, 1:-1]
    torch.testing.assert_close(laplacian(cubic, (hx, hy)), expected)


def test_flux_divergence_exact_inside_for_linear_nu_and_quadratic_u():
    x, y = mesh(8, 6)
    nu = 1 + x + 0.5 * y
    u = x**2 + 2 * y**2 - x * y
    # div(nu grad u) = nu_x u_x + nu u_xx + nu_y u_y + nu u_yy
    exact = (2 * x - y) + nu * 2 + 0.5 * (4 * y - x) + nu * 4
    div = flux_divergence(u, nu, (1 / 7, 1 / 5), average="arithmetic")
    torch.testing.assert_close(div[..., 1:-1, 1:-1], exact[..., 1:-1, 1:-1])
    # zero-flux walls: a field with zero normal slope gives a small wall value, u = x keeps 0
    lin = flux_divergence(x.clone(), torch.ones_like(x), (1 / 7, 1 / 5))
    assert lin[..., 1:-1, :].abs().max() < 1e-12


def _errors(n: int) -> tuple[float, float, float]:
    x, y = mesh(n, n)
    h = 1 / (n - 1)
    u = torch.sin(math.pi * x) * torch.cos(2 * y)
    nu = torch.exp(0.5 * torch.sin(2 * x + y))
    d1 = (first_derivative(u, h, 0) - math.pi * torch.cos(math.pi * x) * torch.cos(2 * y)).abs()
    d2 = (laplacian(u, (h, h)) - (-(math.pi**2) - 4) * u[..., 1:-1, 1:-1]).abs()
    # div(nu grad u) with nu = exp(g): nu (g_x u_x + g_y u_y + lap u)
    gx, gy = torch.cos(2 * x + y), 0.5 * torch.cos(2 * x + y)
    ux = math.pi * torch.cos(math.pi * x) * torch.cos(2 * y)
    uy = -2 * torch.sin(math.pi * x) * torch.sin(2 * y)
    exact = nu * (gx * ux + gy * uy + (-(math.pi**2) - 4) * u)
    d3 = (flux_divergence(u, nu, (h, h))[..., 1:-1, 1:-1] - exact[..., 1:-1, 1:-1]).abs()
    return float(d1.max()), float(d2.max()), float(d3.max())


def test_second_order_convergence_on_smooth_fields():
    coarse, fine = _errors(17), _errors(33)
    for c, f in zip(coarse, fine, strict=True):
        assert 3.5 < c / f < 4.5, (coarse, fine)


def test_periodic_differences_wrap_around():
    n = 32
    x = (torch.arange(n, dtype=torch.float64) / n)[None, None]
    u = torch.sin(2 * math.pi * x)
    d1 = first_derivative(u, 1 / n, 0, periodic=True)
    d2 = second_derivative(u, 1 / n, 0, periodic=True)
    assert (d1 - 2 * math.pi * torch.cos(2 * math.pi * x)).abs().max() < 0.03 * 2 * math.pi
    assert (d2 + (2 * math.pi) ** 2 * u).abs().max() < 0.01 * (2 * math.pi) ** 2


def test_q1_energy_exact_for_bilinear_fields():
    x, y = mesh(5, 9)
    u = x * y
    energy = q1_energy(u, torch.ones_like(u), (1 / 4, 1 / 8))
    torch.testing.assert_close(energy, torch.tensor([1 / 3], dtype=torch.float64))
    with_source = q1_energy(u, torch.ones_like(u), (1 / 4, 1 / 8), source=1.0)
    torch.testing.assert_close(with_source, torch.tensor([1 / 3 - 1 / 4], dtype=torch.float64))
    # nu linear, |grad u|^2 = y^2 + x^2: int (1 + x) (x^2 + y^2) / 2 = (1/3 + 1/4 + 1/3 + 1/6)/2
    energy = q1_energy(u, 1 + x, (1 / 4, 1 / 8))
    torch.testing.assert_close(energy, torch.tensor([13 / 24], dtype=torch.float64))


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_fields_are_assembled_in_fp32(half):
    x, y = mesh(9, 9)
    u = (x**2 + y).to(half)
    for out in (
        first_derivative(u, 1 / 8, 0),
        second_derivative(u, 1 / 8, 1),
        laplacian(u, (1 / 8, 1 / 8)),
        flux_divergence(u, torch.ones_like(u), (1 / 8, 1 / 8)),
        q1_energy(u, torch.ones_like(u), (1 / 8, 1 / 8)),
    ):
        assert out.dtype == torch.float32
    assert laplacian(x.float(), (1 / 8, 1 / 8)).dtype == torch.float32
    assert laplacian(x, (1 / 8, 1 / 8)).dtype == torch.float64


def test_gradients_flow_through_the_stencils():
    x, y = mesh(6, 6)
    u = (x * y).requires_grad_(True)
    (
        flux_divergence(u, 1 + x, (0.2, 0.2)).square().sum() + q1_energy(u, 1 + x, (0.2, 0.2)).sum()
    ).backward()
    assert u.grad is not None and torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0


def test_bad_arguments_are_one_line_errors():
    u = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="face average 'geometric' is unknown; allowed"):
        flux_divergence(u, u + 1, (0.1, 0.1), average="geometric")
    with pytest.raises(ValueError, match="needs >= 4 points"):
        second_derivative(torch.zeros(1, 1, 3), 0.5, 0)
    with pytest.raises(ValueError, match="not a spatial dimension"):
        first_derivative(u, 0.1, 2)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_autocast_around_the_loss_does_not_round_the_stencils(half):
    """The mixed precisions compute the loss inside autocast, which runs every conv in half;
    the stencils must still be fp32 and equal to their value outside autocast."""
    x, y = mesh(65, 65)
    u = (torch.sin(3 * x) * torch.cos(2 * y)).float()
    nu = torch.exp(0.5 * x * y).float()
    h = (1 / 64, 1 / 64)
    outside = [laplacian(u, h), flux_divergence(u, nu, h), q1_energy(u, nu, h, source=nu)]
    with torch.autocast("cpu", dtype=half):
        inside = [laplacian(u, h), flux_divergence(u, nu, h), q1_energy(u, nu, h, source=nu)]
    for a, b in zip(inside, outside, strict=True):
        assert a.dtype == torch.float32 and torch.equal(a, b)
