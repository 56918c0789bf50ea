"""Random Fourier features followed by an MLP (Tancik et al. 2020; Wang et al.'s PINN variant).

gamma(x) = [sin(2 pi x B), cos(2 pi x B)] with a fixed Gaussian B (std `sigma`) lets an MLP fit
high frequencies that it learns slowly from raw coordinates (spectral bias). The feature layer is
also the textbook layer that half precision ruins: at sigma = 10 the phase 2 pi x B reaches ~100,
where one fp16 ulp is 0.06, so fp16 features are off by ~0.1. It therefore declares the precision
policy "fp32" (see `mpsciml.precision.policy`): B stays fp32 and the features are computed in
fp32 in every run, only the MLP after it runs in the run's precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from mpsciml.contract import ModelKind
from mpsciml.models.mlp import MLP


class FourierFeatures(nn.Module):
    """x (N, in_features) -> [sin(2 pi x B), cos(2 pi x B)] (N, 2 * n_features)."""

    def __init__(
        self, in_features: int, n_features: int, sigma: float, precision_policy: str | None
    ) -> None:
        super().__init__()
        if n_features <= 0:
            raise ValueError(f"model.n_features={n_features} must be > 0")
        if not sigma > 0:
            raise ValueError(f"model.sigma={sigma} must be > 0")
        # drawn from torch's global generator, seeded by the run like every initialisation
        self.register_buffer("B", torch.randn(in_features, n_features) * sigma)
        self.precision_policy = precision_policy

    def forward(self, x: Tensor) -> Tensor:
        phase = 2 * math.pi * (x @ self.B)
        return torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)


class FourierMLP(nn.Module):
    """Fourier features of the coordinates, then an MLP; sized like the MLP by the problem."""

    accepts: ClassVar[tuple[ModelKind, ...]] = (ModelKind.POINTWISE,)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        n_features: int = 64,
        sigma: float = 10.0,
        hidden: Sequence[int] = (32, 32, 32),
        activation: str = "tanh",
        init: str = "glorot_normal",
        features_fp32: bool = True,
    ) -> None:
        super().__init__()
        policy = "fp32" if features_fp32 else None
        self.features = FourierFeatures(in_features, n_features, sigma, policy)
        self.mlp = MLP(2 * n_features, out_features, hidden, activation, init)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.features(x))
