"""Random Fourier features followed by an MLP (Tancik et al. 2020; Wang et al.'s PINN variant).

gamma(x) = [sin(2 pi x B), cos(2 pi x B)] with a fixed Gaussian B (std `sigma`) lets an MLP fit
high frequencies that it learns slowly from raw coordinates (spectral bias). The feature layer is
also the textbook layer that half precision ruins: at sigma = 10 the phase 2 pi x B reaches ~100,
where one fp16 ulp is 0.06, so fp16 features are off by ~0.1. It therefore declares the precision
policy "fp32" (see `mpsciml.precision.policy`): B stays fp32 and the features are computed in
fp32 in every run, only the MLP after it runs in the run's precision.

Periodic inputs compose (`periodic`, as on the MLP): the coordinates go through a
`PeriodicEmbedding` first and the Fourier features are taken of its cos/sin columns, which keeps
the network exactly periodic (a function of periodic functions). The embedding lives inside the
feature layer, under its fp32 policy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from mpsciml.contract import ModelKind
from mpsciml.models.mlp import MLP
from mpsciml.models.periodic import PeriodicEmbedding, check_periods


class FourierFeatures(nn.Module):
    """x (N, in_features) -> [sin(2 pi x B), cos(2 pi x B)] (N, 2 * n_features)."""

    def __init__(
        self,
        in_features: int,
        n_features: int,
        sigma: float,
        precision_policy: str | None,
        embedding: PeriodicEmbedding | None = None,
    ) -> None:
        super().__init__()
        if n_features <= 0:
            raise ValueError(f"model.n_features={n_features} must be > 0")
        if not sigma > 0:
            raise ValueError(f"model.sigma={sigma} must be > 0")
        # drawn from torch's global generator, seeded by the run like every initialisation
        width = in_features if embedding is None else embedding.out_features
        self.register_buffer("B", torch.randn(width, n_features) * sigma)
        self.precision_policy = precision_policy
        self.embedding = embedding  # registered after B: B decides the input dtype

    def forward(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            x = self.embedding(x)
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
        periodic: Mapping[int, float] | None = None,
        harmonics: int = 1,
    ) -> None:
        super().__init__()
        policy = "fp32" if features_fp32 else None
        embedding = None
        if periodic:
            check_periods(periodic, in_features, harmonics)
            embedding = PeriodicEmbedding(in_features, periodic, harmonics)
        self.features = FourierFeatures(in_features, n_features, sigma, policy, embedding)
        self.mlp = MLP(2 * n_features, out_features, hidden, activation, init)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(self.features(x))
