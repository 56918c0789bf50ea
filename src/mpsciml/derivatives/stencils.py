"""Derivatives of fields on regular grids by fixed stencils, applied as convolutions.

A data-free grid solver (DiffNet) never differentiates the network: its loss is the discretised
PDE on the output grid, so the derivatives are fixed linear stencils, i.e. convolutions with
constant weights (torch `conv1d`/`conv2d`), cheap, batched and differentiable w.r.t. the field.

Fields are (N, C, *grid), grid of 1 or 2 dimensions; `dim` names a spatial dimension (0 is the
tensor's dim 2). What is here:

* `first_derivative`, `second_derivative`: central differences inside, second-order one-sided
  differences at the ends (or wrap-around for a periodic dimension), the same shape out. Exact on
  quadratics (first) and cubics (second: the one-sided 4-point end stencil too).
* `laplacian`: the 5-point (2-D) / 3-point (1-D) stencil at the interior nodes.
* `flux_divergence`: div(nu grad u) in flux form, the vertex-centred finite-volume operator:
  face coefficients by the harmonic (default: exact for layered media, conservative across
  jumps) or arithmetic mean of the two nodes, flux nu_f (u_N - u_P) / h through every face, and
  at a wall node a half control volume whose wall face carries no flux (natural zero-flux wall).
  Second order inside; a Dirichlet node simply ignores its row. `data.poisson_fd` assembles the
  very same operator as a sparse matrix.
* `q1_energy`: the Ritz energy int 1/2 nu |grad u|^2 - f u of the bilinear (Q1) finite-element
  interpolant, each element by 2x2 Gauss quadrature, as DiffNet does: the value, the gradient and
  nu (and f) at the four Gauss points of every element are 2x2 convolutions of the nodal values.

Precision. Every function computes in `dtype`, by default `autograd.assembly_dtype(u)` (fp32,
fp64 for fp64): inputs are cast up first. A second difference divides differences of O(h^2 u)
by h^2, so it keeps log10(eps / h^2) digits of u's precision; in bf16 (eps 2^-8) or fp16 (2^-11)
that is nothing at 64x64 (scripts/bench_stencil_precision.py measures it). Passing a half
`dtype` explicitly is only for that measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mpsciml.derivatives.autograd import assembly_dtype

#: face averages of the coefficient in `flux_divergence`
FACE_AVERAGES = ("harmonic", "arithmetic")

# second-order one-sided end stencils (times 1/h and 1/h^2)
_D1_START = (-1.5, 2.0, -0.5)
_D2_START = (2.0, -5.0, 4.0, -1.0)


def _cast(u: Tensor, dtype: torch.dtype | None) -> Tensor:
    return u.to(assembly_dtype(u) if dtype is None else dtype)


def _stencil(conv: Callable[..., Tensor], field: Tensor, weight: Tensor) -> Tensor:
    """A fixed stencil in the field's own dtype. The loss is computed inside the mixed
    precisions' autocast, which would run every conv in fp16/bf16: the field rounded again and
    the 1/h^2 weights with it, all the fp32 assembly exists to avoid (fp16 loss was inf at
    64x64). Autocast is off here for the field's device."""
    with torch.autocast(field.device.type, enabled=False):
        return conv(field, weight)


def _spatial(u: Tensor) -> int:
    if u.dim() not in (3, 4):
        raise ValueError(f"stencils need fields (N, C, *grid) with 1 or 2 grid dims, got {u.shape}")
    return u.dim() - 2


def conv_along(u: Tensor, kernel: Sequence[float], dim: int) -> Tensor:
    """The 1-D stencil `kernel` applied along spatial dimension `dim` of u (N, C, *grid), "valid"
    (that dimension shrinks by len(kernel) - 1): conv1d on u with that axis last."""
    axis = 2 + dim
    moved = u.movedim(axis, -1)
    shape = moved.shape
    weight = torch.tensor(kernel, dtype=u.dtype, device=u.device).view(1, 1, -1)
    out = _stencil(F.conv1d, moved.reshape(-1, 1, shape[-1]), weight)
    return out.reshape(*shape[:-1], out.shape[-1]).movedim(-1, axis)


def _ends(u: Tensor, dim: int, start: Sequence[float], sign: float) -> tuple[Tensor, Tensor]:
    """The one-sided stencil at the first and (mirrored) last node of `dim`."""
    axis, k = 2 + dim, len(start)
    first = conv_along(u.narrow(axis, 0, k), start, dim)
    last = conv_along(u.narrow(axis, u.shape[axis] - k, k), [sign * c for c in start[::-1]], dim)
    return first, last


def _wrap(u: Tensor, dim: int) -> Tensor:
    axis = 2 + dim
    return torch.cat([u.narrow(axis, u.shape[axis] - 1, 1), u, u.narrow(axis, 0, 1)], axis)


def _check_points(u: Tensor, dim: int, need: int) -> None:
    if not 0 <= dim < _spatial(u):
        raise ValueError(f"dim={dim} is not a spatial dimension of a field {tuple(u.shape)}")
    if u.shape[2 + dim] < need:
        raise ValueError(f"this stencil needs >= {need} points along dim {dim}, got {u.shape}")


def first_derivative(
    u: Tensor, h: float, dim: int, periodic: bool = False, dtype: torch.dtype | None = None
) -> Tensor:
    """du/dx_dim, same shape: central (u_{i+1} - u_{i-1}) / 2h, one-sided second order at the
    ends (or wrap-around when `periodic`: the grid excludes the repeated end point)."""
    u = _cast(u, dtype)
    _check_points(u, dim, 3)
    if periodic:
        return conv_along(_wrap(u, dim), (-0.5 / h, 0.0, 0.5 / h), dim)
    inner = conv_along(u, (-0.5 / h, 0.0, 0.5 / h), dim)
    first, last = _ends(u, dim, [c / h for c in _D1_START], -1.0)
    return torch.cat([first, inner, last], 2 + dim)


def second_derivative(
    u: Tensor, h: float, dim: int, periodic: bool = False, dtype: torch.dtype | None = None
) -> Tensor:
    """d2u/dx_dim^2, same shape: (u_{i-1} - 2 u_i + u_{i+1}) / h^2 inside, the second-order
    one-sided (2, -5, 4, -1) / h^2 at the ends (or wrap-around when `periodic`)."""
    u = _cast(u, dtype)
    h2 = h * h
    _check_points(u, dim, 3 if periodic else 4)
    if periodic:
        return conv_along(_wrap(u, dim), (1.0 / h2, -2.0 / h2, 1.0 / h2), dim)
    inner = conv_along(u, (1.0 / h2, -2.0 / h2, 1.0 / h2), dim)
    first, last = _ends(u, dim, [c / h2 for c in _D2_START], 1.0)
    return torch.cat([first, inner, last], 2 + dim)


def laplacian(u: Tensor, spacings: Sequence[float], dtype: torch.dtype | None = None) -> Tensor:
    """The Laplacian at the interior nodes (every grid dim shrinks by 2): one conv2d with the
    5-point stencil in 2-D (spacings may differ per dimension), the 3-point one in 1-D."""
    u = _cast(u, dtype)
    dims = _spatial(u)
    if len(spacings) != dims or min(u.shape[2:]) < 3:
        raise ValueError(f"laplacian: need {dims} spacings and >= 3 points per dim, {u.shape}")
    if dims == 1:
        h2 = spacings[0] ** 2
        return conv_along(u, (1.0 / h2, -2.0 / h2, 1.0 / h2), 0)
    ax, ay = (1.0 / h**2 for h in spacings)
    kernel = torch.tensor(
        [[0.0, ax, 0.0], [ay, -2.0 * (ax + ay), ay], [0.0, ax, 0.0]], dtype=u.dtype, device=u.device
    )
    n, c = u.shape[:2]
    out = _stencil(F.conv2d, u.reshape(n * c, 1, *u.shape[2:]), kernel.view(1, 1, 3, 3))
    return out.reshape(n, c, *out.shape[2:])


def face_coefficients(nu: Tensor, dim: int, average: str = "harmonic") -> Tensor:
    """nu on the faces between neighbouring nodes along `dim` (that dim shrinks by 1)."""
    if average not in FACE_AVERAGES:
        raise ValueError(
            f"face average {average!r} is unknown; allowed: {', '.join(FACE_AVERAGES)}"
        )
    axis, n = 2 + dim, nu.shape[2 + dim]
    left, right = nu.narrow(axis, 0, n - 1), nu.narrow(axis, 1, n - 1)
    if average == "arithmetic":
        return conv_along(nu, (0.5, 0.5), dim)
    return 2.0 * left * right / (left + right)


def flux_divergence(
    u: Tensor,
    nu: Tensor,
    spacings: Sequence[float],
    average: str = "harmonic",
    dtype: torch.dtype | None = None,
) -> Tensor:
    """div(nu grad u) at every node, same shape as u: the vertex-centred finite-volume operator
    (fluxes nu_f (u_N - u_P) / h through the faces by the conv stencil (-1, 1) / h; at a wall
    node the half cell's wall face carries no flux, so its divergence is the inner face's flux
    over h / 2). u (N, C, *grid), nu broadcastable to it (e.g. (N, 1, *grid))."""
    u = _cast(u, dtype)
    nu = nu.to(u.dtype).expand_as(u)
    dims = _spatial(u)
    if len(spacings) != dims or min(u.shape[2:]) < 3:
        raise ValueError(f"flux_divergence: need {dims} spacings, >= 3 points per dim, {u.shape}")
    total = torch.zeros_like(u)
    for dim, h in enumerate(spacings):
        axis = 2 + dim
        flux = face_coefficients(nu, dim, average) * conv_along(u, (-1.0 / h, 1.0 / h), dim)
        zero = torch.zeros_like(flux.narrow(axis, 0, 1))
        padded = torch.cat([zero, flux, zero], axis)  # the walls carry no flux
        divergence = conv_along(padded, (-1.0 / h, 1.0 / h), dim)
        n = u.shape[axis]
        half_cells = torch.ones(n, dtype=u.dtype, device=u.device)
        half_cells[0] = half_cells[-1] = 2.0  # the wall nodes' control volumes are h / 2 wide
        total = total + divergence * half_cells.view(-1, *([1] * (dims - 1 - dim)))
    return total


# --------------------------------------------------------------- Q1 finite elements
_GAUSS = (0.5 - 0.5 / math.sqrt(3.0), 0.5 + 0.5 / math.sqrt(3.0))  # on [0, 1]


def q1_kernels(hx: float, hy: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(12, 1, 2, 2) conv2d weights: for each of the 4 Gauss points of an element (x index i,
    y index j; point order (xi, eta) = (g0, g0), (g0, g1), (g1, g0), (g1, g1)) the bilinear
    interpolant's value, d/dx and d/dy from the element's 4 corner nodes."""
    kernels = []
    for kind in ("value", "dx", "dy"):
        for xi in _GAUSS:
            for eta in _GAUSS:
                if kind == "value":
                    k = [[(1 - xi) * (1 - eta), (1 - xi) * eta], [xi * (1 - eta), xi * eta]]
                elif kind == "dx":
                    k = [[-(1 - eta) / hx, -eta / hx], [(1 - eta) / hx, eta / hx]]
                else:
                    k = [[-(1 - xi) / hy, (1 - xi) / hy], [-xi / hy, xi / hy]]
                kernels.append(k)
    return torch.tensor(kernels, dtype=dtype, device=device).unsqueeze(1)


def q1_energy(
    u: Tensor,
    nu: Tensor,
    spacings: Sequence[float],
    source: Tensor | float = 0.0,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """(N,) the Ritz energy sum_elements sum_gauss w |e| (1/2 nu |grad u|^2 - f u) of the Q1
    interpolant of nodal u (N, 1, nx, ny), with nu (and f) interpolated bilinearly from the nodes
    to the Gauss points (DiffNet's FEM loss). Its minimiser over the free nodes is the Q1 Galerkin
    solution with natural (zero-flux) walls."""
    u = _cast(u, dtype)
    if u.dim() != 4 or u.shape[1] != 1 or len(spacings) != 2 or min(u.shape[2:]) < 2:
        raise ValueError(f"q1_energy: need u (N, 1, nx, ny), nx, ny >= 2, got {tuple(u.shape)}")
    hx, hy = spacings
    kernels = q1_kernels(hx, hy, u.dtype, u.device)
    at_gauss = _stencil(F.conv2d, u, kernels)  # (N, 12, nx-1, ny-1)
    value, dx, dy = at_gauss[:, :4], at_gauss[:, 4:8], at_gauss[:, 8:]
    nu_g = _stencil(F.conv2d, nu.to(u.dtype).expand_as(u), kernels[:4])
    density = 0.5 * nu_g * (dx.square() + dy.square())
    if isinstance(source, Tensor):
        at_source = _stencil(F.conv2d, source.to(u.dtype).expand_as(u), kernels[:4])
        density = density - at_source * value
    elif source != 0.0:
        density = density - source * value
    return density.sum((1, 2, 3)) * (0.25 * hx * hy)  # Gauss weights 1/4 on each element
