"""Point sets on boxes and their faces: where a PINN's residuals are enforced.

All samplers are driven by a seed (an integer or a stream of `mpsciml.seeding`) and return
float64 CPU tensors, so the same seed gives the same collocation points on any machine and in
any precision (the cast to the training dtype happens later, on the device). The faces of a box
draw from streams of their own, keyed by axis and side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import qmc
from torch import Tensor

from mpsciml.seeding import Seed, int_seed, seed_stream, torch_generator

SAMPLING_METHODS = ("uniform", "sobol", "lhs")


def unit_cube(n: int, dim: int, method: str, seed: Seed) -> Tensor:
    """n points in [0, 1]^dim: pseudo-random, scrambled Sobol, or Latin hypercube."""
    if method == "uniform":
        return torch.rand(n, dim, generator=torch_generator(seed), dtype=torch.float64)
    if method == "sobol":
        engine = torch.quasirandom.SobolEngine(dim, scramble=True, seed=int_seed(seed))
        return engine.draw(n, dtype=torch.float64)
    if method == "lhs":
        return torch.from_numpy(qmc.LatinHypercube(d=dim, seed=int_seed(seed)).random(n))
    raise ValueError(f"unknown sampling method {method!r}; allowed: {', '.join(SAMPLING_METHODS)}")


@dataclass(frozen=True)
class Box:
    """An axis-aligned box, the domain of every problem so far (space-time counts as a box)."""

    low: Sequence[float]
    high: Sequence[float]

    @property
    def dim(self) -> int:
        return len(self.low)

    def interior(self, n: int, method: str, seed: Seed) -> Tensor:
        low = torch.tensor(self.low, dtype=torch.float64)
        high = torch.tensor(self.high, dtype=torch.float64)
        return low + (high - low) * unit_cube(n, self.dim, method, seed)

    def face(self, axis: int, side: str, n: int, method: str, seed: Seed) -> Tensor:
        """n points on the face where coordinate `axis` is at its 'low' or 'high' end."""
        others = [i for i in range(self.dim) if i != axis]
        sub = Box([self.low[i] for i in others], [self.high[i] for i in others])
        points = torch.empty(n, self.dim, dtype=torch.float64)
        if others:
            points[:, others] = sub.interior(n, method, seed)
        points[:, axis] = self.low[axis] if side == "low" else self.high[axis]
        return points

    def faces(self, n: int, method: str, seed: Seed, axes: Sequence[int] | None = None) -> Tensor:
        """n points spread over both faces of each given axis, in proportion to face size."""
        axes = list(range(self.dim)) if axes is None else list(axes)
        sides = [(axis, side) for axis in axes for side in ("low", "high")]
        sizes = np.array([self._face_measure(axis) for axis, _ in sides])
        shares = n * sizes / sizes.sum()
        counts = np.floor(shares).astype(int)
        # the remainder goes to the faces that lost the largest fractions (largest remainder)
        counts[np.argsort(-(shares - counts), kind="stable")[: n - counts.sum()]] += 1
        parts = [
            self.face(axis, side, int(count), method, seed_stream(seed, "face", axis, side))
            for (axis, side), count in zip(sides, counts, strict=True)
            if count > 0
        ]
        return torch.cat(parts)

    def grid(self, counts: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        """A tensor-product grid: (points (prod(counts), dim), 1-D axes), the last axis fastest."""
        axes = [
            torch.linspace(lo, hi, c, dtype=torch.float64)
            for lo, hi, c in zip(self.low, self.high, counts, strict=True)
        ]
        mesh = torch.meshgrid(*axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1), axes

    def _face_measure(self, axis: int) -> float:
        return float(
            np.prod([self.high[i] - self.low[i] for i in range(self.dim) if i != axis] or [1.0])
        )
