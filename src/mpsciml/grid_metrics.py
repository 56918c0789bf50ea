"""Relative L2 and H1 errors of fields sampled on a regular grid of the unit box, per sample.

Operator learning reports the error of each test function on its own scale (a small solution
must be learnt as well as a large one), so every norm here is taken per sample and per channel,
and the losses average the per-sample ratios (Li et al. 2021; neuraloperator's LpLoss/H1Loss).

Where the samples sit (`layout`, one of GRID_LAYOUTS), n points per dimension of [0, 1]:
  * "periodic": x_i = i / n, the box wraps around (Burgers, Navier-Stokes);
  * "nodes":    x_i = i / (n - 1), the first and last points on the walls;
  * "cells":    x_i = (i + 1/2) / n, cell centres, the walls half a cell outside.

Norms, integrated over the box (volume 1) by the rule that is second-order for the layout (the
mean over the points for "periodic" and "cells", the trapezoidal rule for "nodes"):

    ||u||^2_L2 = int u^2,     |u|^2_H1 = sum_d int (du/dx_d)^2,     ||u||^2_H1 = both summed.

Relative errors are ||pred - ref|| / ||ref||, for the L2 norm and for the full H1 norm (L2 part
included, as neuraloperator's H1Loss).

Derivatives: second-order finite differences on the grid, not FFT derivatives. FFT derivatives
are exact for smooth periodic fields but wrong for a non-periodic one (Darcy's u is zero on the
walls while its slope is not: the periodic extension has a kink, and its Fourier derivative
rings across the whole box). Finite differences serve every layout: central differences with
wrap-around on a periodic grid, central inside and second-order one-sided at the ends otherwise
(`torch.gradient(edge_order=2)`). Norms and derivatives converge at O(h^2) (tested on analytic
fields for each layout).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

#: the relative errors a grid run can train on and report (`problem.loss`)
GRID_LOSSES = ("l2", "h1")
#: where a grid's samples sit in [0, 1] (see above)
GRID_LAYOUTS = ("periodic", "nodes", "cells")


def grid_spacing(n: int, layout: str) -> float:
    """The distance between neighbouring points of n along one dimension."""
    if layout not in GRID_LAYOUTS:
        raise ValueError(f"unknown grid layout {layout!r}; allowed: {', '.join(GRID_LAYOUTS)}")
    return 1.0 / (n - 1) if layout == "nodes" else 1.0 / n


def grid_coordinates(n: int, layout: str) -> Tensor:
    """The n coordinates in [0, 1] of one dimension, float64."""
    offset = 0.5 if layout == "cells" else 0.0
    return (torch.arange(n, dtype=torch.float64) + offset) * grid_spacing(n, layout)


def integrate(f: Tensor, layout: str) -> Tensor:
    """The integral over the unit box of each sample and channel of f (N, C, *grid): (N, C)."""
    if layout != "nodes":
        grid_spacing(1, layout)  # the layout's check
        return f.flatten(2).mean(-1)
    while f.dim() > 2:
        f = torch.trapezoid(f, dx=grid_spacing(f.shape[-1], layout), dim=-1)
    return f


def grid_gradient(u: Tensor, layout: str) -> list[Tensor]:
    """du/dx_d for each spatial dimension d of u (N, C, *grid), each (N, C, *grid)."""
    derivatives = []
    for axis in range(2, u.dim()):
        n = u.shape[axis]
        if n < 3:
            raise ValueError(
                f"a derivative needs >= 3 grid points along a dimension, got {u.shape}"
            )
        h = grid_spacing(n, layout)
        if layout == "periodic":
            derivative = (u.roll(-1, axis) - u.roll(1, axis)) / (2.0 * h)
        else:
            derivative = torch.gradient(u, spacing=h, dim=axis, edge_order=2)[0]
        derivatives.append(derivative)
    return derivatives


def squared_norms(u: Tensor, kind: str, layout: str) -> Tensor:
    """||u||^2 per sample and channel, (N, C): the L2 norm, or the full H1 norm."""
    if kind not in GRID_LOSSES:
        raise ValueError(f"unknown norm {kind!r}; allowed: {', '.join(GRID_LOSSES)}")
    squared = integrate(u.pow(2), layout)
    if kind == "h1":
        for derivative in grid_gradient(u, layout):
            squared = squared + integrate(derivative.pow(2), layout)
    return squared


def relative_errors(prediction: Tensor, reference: Tensor, kind: str, layout: str) -> Tensor:
    """||prediction - reference|| / ||reference|| per sample and channel, (N, C), in float64."""
    prediction, reference = prediction.double(), reference.double()
    error = squared_norms(prediction - reference, kind, layout)
    return torch.sqrt(error / squared_norms(reference, kind, layout))


def relative_loss(prediction: Tensor, reference: Tensor, kind: str, layout: str) -> Tensor:
    """The training loss: the mean over samples of ||error|| / ||reference||, the norms taken
    over every channel of a sample together, in the dtype of the inputs (the caller assembles
    in >= fp32). A scalar."""
    error = squared_norms(prediction - reference, kind, layout).sum(1)
    norm = squared_norms(reference, kind, layout).sum(1)
    return torch.sqrt(error / norm).mean()


def field_errors(
    prediction: Tensor,
    reference: Tensor,
    names: Sequence[str],
    layout: str,
    prefix: str = "",
) -> dict[str, float]:
    """{prefix + field: mean relative L2, prefix + "h1_" + field: mean relative H1} per output
    channel, the form of a grid run's errors (e.g. {"u": ..., "h1_u": ...})."""
    l2 = relative_errors(prediction, reference, "l2", layout).mean(0)
    h1 = relative_errors(prediction, reference, "h1", layout).mean(0)
    errors: dict[str, float] = {}
    for i, name in enumerate(names):
        errors[f"{prefix}{name}"] = float(l2[i])
        errors[f"{prefix}h1_{name}"] = float(h1[i])
    return errors
