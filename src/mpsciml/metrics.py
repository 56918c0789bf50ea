"""Relative L2 error, the one accuracy number every run reports per output field."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


class RelativeL2Error(Metric):
    """||prediction - reference||_2 / ||reference||_2 over everything seen, in float64.

    Accumulating the two squared norms (rather than averaging per-batch ratios) makes the result
    independent of how the evaluation grid is chunked, and float64 states keep a low-precision
    prediction from also degrading the measurement of its own error.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("error_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("reference_sq", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prediction: Tensor, reference: Tensor) -> None:
        prediction, reference = prediction.double(), reference.double()
        self.error_sq += torch.sum((prediction - reference) ** 2)
        self.reference_sq += torch.sum(reference**2)

    def compute(self) -> Tensor:
        return torch.sqrt(self.error_sq / self.reference_sq)


def relative_l2(prediction: Tensor, reference: Tensor) -> float:
    metric = RelativeL2Error().to(prediction.device)
    metric.update(prediction, reference)
    return float(metric.compute())
