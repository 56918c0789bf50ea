"""A network wrapped in a problem's output transform: hard constraints on boundary/initial values.

With `problem.hard_constraints=true` a PINN trains u(x) = transform(x, N(x)) instead of N(x),
where the transform satisfies some conditions by construction (Burgers: u = -sin(pi x) +
t (1 - x)(1 + x) N is -sin(pi x) at t = 0 and 0 at x = +-1 whatever N is). Everything that asks
the network for a value or a derivative (the residuals, the evaluation, the plots) sees the
wrapper, so the derivatives include the transform's product rule: autograd by differentiating
through it, Taylor mode through `derivatives.jets` (the same formula on jets).

Precision: the transform runs in the assembly dtype (fp32; fp64 in an fp64 run) with autocast off,
from the network's output upcast. The factors that vanish on the boundary are differences of
coordinates, 1 - x: in fp16, x^2 near x = 1 - 2^-11 rounds to a spacing of 2^-11, so 1 - x^2 there
would be off by up to a quarter of itself; in fp32 with the factored form (1 - x)(1 + x) the
subtraction is exact (Sterbenz) and the product good to an fp32 ulp. The boundary coordinates
themselves (+-1, 0) are exact in every format, so the constrained values hold to rounding
(|sin(pi)| ~ 1e-7 in fp32) at every boundary point in every precision; in a pure fp16/bf16 run
the coordinates reach the model rounded to the run's dtype, as for any model there.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from mpsciml.contract import ModelKind
from mpsciml.derivatives.jets import ColumnFormula


class ConstrainedModel(nn.Module):
    """u(x) = transform(x, net(x)), the transform in fp32 (see the module docstring)."""

    accepts: ClassVar[tuple[ModelKind, ...]] = (ModelKind.POINTWISE,)

    def __init__(self, net: nn.Module, formula: ColumnFormula) -> None:
        super().__init__()
        self.net = net
        #: (coordinate columns, network output columns) -> output columns; tensors or jets
        self.formula = formula

    def forward(self, x: Tensor) -> Tensor:
        raw = self.net(x)
        wide = torch.float64 in (x.dtype, raw.dtype)
        dtype = torch.float64 if wide else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            coordinates = [x[:, j].to(dtype) for j in range(x.shape[-1])]
            outputs = [raw[:, c].to(dtype) for c in range(raw.shape[-1])]
            return torch.stack(list(self.formula(coordinates, outputs)), dim=-1)
