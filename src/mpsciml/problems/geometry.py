"""Polygons with holes: the domains a box cannot be (an L-shape, a plate with a hole).

A `Polygon` is an outer ring of vertices and any number of hole rings, each a closed chain of
straight edges. It offers what a PINN problem needs from a domain, with the conventions of
`mpsciml.problems.sampling.Box` (float64 CPU tensors, points a function of the seed alone):

- `interior(n, method, seed)`, the same signature as `Box.interior`, so whatever draws candidate
  points from a problem's domain (adaptive sampling) works on a polygon too. The points come
  from the bounding box with the chosen method (uniform | sobol | lhs) and those outside are
  rejected; rounds of fresh candidates, each from its own stream, top the set up until there
  are n. Rejection keeps the method's character inside the domain (a Sobol prefix restricted to
  a subdomain is still evenly spread), where mapping the unit square onto a polygon would not.
- `boundary(n, method, seed)`: n points on the edges, shared by length (largest remainder, so
  the counts are exact), each edge from its own stream; `boundary_with_normals` adds the unit
  outward normal of each point's edge, for Neumann conditions.
- `contains` and `mask` for evaluation grids, `distance_to_boundary` (zero on the boundary,
  positive inside: the factor of a hard-constraint output transform), `normals_at` for a
  residual that only sees coordinates.

Rings are normalised on construction (outer counter-clockwise, holes clockwise), so the domain is
on the left of every edge and the outward normal of an edge (dx, dy) is (dy, -dx) / length.
Curved boundaries are polygons too: `circle_ring` gives a regular polygon with as many sides as
asked (a circular hole of 64 sides is within 0.12% of its radius). Rings that cross themselves or
each other are not detected; a hole must lie inside the outer ring (checked at its vertices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mpsciml.problems.sampling import Box, unit_cube
from mpsciml.seeding import Seed, seed_stream

Point = tuple[float, float]
Ring = Sequence[Sequence[float]]

_MAX_ROUNDS = 64  # rejection rounds before giving up (a sliver of a domain in a huge box)


def circle_ring(center: Sequence[float], radius: float, sides: int = 64) -> list[Point]:
    """A regular polygon inscribed in the circle: a circular hole or domain, to within
    1 - cos(pi / sides) of the radius."""
    if not (radius > 0 and sides >= 3):
        raise ValueError(f"a circle needs radius > 0 and sides >= 3, got {radius}, {sides}")
    cx, cy = float(center[0]), float(center[1])
    return [
        (
            cx + radius * math.cos(2 * math.pi * k / sides),
            cy + radius * math.sin(2 * math.pi * k / sides),
        )
        for k in range(sides)
    ]


class Polygon:
    """A 2-D polygonal domain: an outer ring minus its hole rings."""

    dim = 2

    def __init__(self, outer: Ring, holes: Sequence[Ring] = ()) -> None:
        rings = [_ring_tensor(outer, "outer")] + [
            _ring_tensor(hole, f"hole {k}") for k, hole in enumerate(holes)
        ]
        # outer counter-clockwise, holes clockwise: the domain lies left of every edge
        rings = [
            ring if (_signed_area(ring) > 0) == (k == 0) else ring.flip(0)
            for k, ring in enumerate(rings)
        ]
        self.rings = rings
        self.starts = torch.cat(rings)
        self.ends = torch.cat([ring.roll(-1, dims=0) for ring in rings])
        direction = self.ends - self.starts
        self.lengths = direction.norm(dim=1)
        if torch.any(self.lengths == 0):
            raise ValueError("a polygon ring repeats a vertex (an edge of length 0)")
        self.normals = (
            torch.stack([direction[:, 1], -direction[:, 0]], dim=1) / self.lengths[:, None]
        )
        self.area = sum(_signed_area(ring) for ring in rings)  # holes count negative
        for k, hole in enumerate(rings[1:]):
            if not torch.all(_even_odd(hole, [rings[0]])):
                raise ValueError(f"hole {k} of the polygon is not inside its outer ring")
        if self.area <= 0:
            raise ValueError("the polygon's holes cover its whole outer ring")

    @classmethod
    def rectangle(cls, low: Sequence[float], high: Sequence[float]) -> Polygon:
        (x0, y0), (x1, y1) = low, high
        return cls([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])

    @property
    def low(self) -> tuple[float, float]:
        """The lower corner of the bounding box (the outer ring's)."""
        return tuple(float(v) for v in self.rings[0].min(dim=0).values)  # type: ignore[return-value]

    @property
    def high(self) -> tuple[float, float]:
        return tuple(float(v) for v in self.rings[0].max(dim=0).values)  # type: ignore[return-value]

    @property
    def diameter(self) -> float:
        """The bounding box's diagonal: the scale of the tolerance for 'on the boundary'."""
        return math.dist(self.low, self.high)

    # ------------------------------------------------------------- membership
    def contains(self, points: Tensor) -> Tensor:
        """Strictly inside (even-odd rule over every ring, so holes are outside); on an edge the
        answer is either, which is why `mask` adds the boundary explicitly."""
        return _even_odd(points.double(), self.rings)

    def distance_to_boundary(self, points: Tensor) -> Tensor:
        """Euclidean distance of each point to the nearest edge, (N,) float64."""
        return self._edge_distances(points.double()).min(dim=1).values

    def mask(self, points: Tensor, tolerance: float | None = None) -> Tensor:
        """Inside or on the boundary (within `tolerance`, 1e-9 of the diameter by default): the
        grid points at which errors are measured and fields drawn."""
        tolerance = 1e-9 * self.diameter if tolerance is None else tolerance
        return self.contains(points) | (self.distance_to_boundary(points) <= tolerance)

    def normals_at(self, points: Tensor) -> Tensor:
        """The unit outward normal of the edge nearest each point, in the points' dtype and
        device: for a residual that sees coordinates only (at a vertex, either edge's)."""
        nearest = self._edge_distances(points.double().cpu()).argmin(dim=1)
        return self.normals[nearest].to(points.device, points.dtype)

    # --------------------------------------------------------------- sampling
    def interior(self, n: int, method: str, seed: Seed) -> Tensor:
        """n points inside, drawn from the bounding box with `method` and rejected outside."""
        low = torch.tensor(self.low, dtype=torch.float64)
        high = torch.tensor(self.high, dtype=torch.float64)
        inside_fraction = self.area / float(torch.prod(high - low))
        kept: list[Tensor] = []
        count = 0
        for round_ in range(_MAX_ROUNDS):
            if count >= n:
                break
            wanted = math.ceil(1.2 * (n - count) / inside_fraction) + 16
            candidates = low + (high - low) * unit_cube(
                wanted, 2, method, seed_stream(seed, "candidates", round_)
            )
            accepted = candidates[self.contains(candidates)]
            kept.append(accepted)
            count += len(accepted)
        if count < n:
            raise RuntimeError(f"{_MAX_ROUNDS} rounds of rejection found {count} of {n} points")
        return torch.cat(kept)[:n]

    def boundary(
        self, n: int, method: str, seed: Seed, edges: Sequence[int] | None = None
    ) -> Tensor:
        """n points on the edges (all, or the given edge indices), shared by length."""
        return self.boundary_with_normals(n, method, seed, edges)[0]

    def boundary_with_normals(
        self, n: int, method: str, seed: Seed, edges: Sequence[int] | None = None
    ) -> tuple[Tensor, Tensor]:
        """n boundary points and the unit outward normal at each, (n, 2) each. Edges are
        numbered along the outer ring, then each hole, in their normalised orientation."""
        chosen = list(range(len(self.lengths))) if edges is None else list(edges)
        if not chosen or not all(0 <= e < len(self.lengths) for e in chosen):
            raise ValueError(f"edges={chosen} must be indices in [0, {len(self.lengths)})")
        shares = n * (lengths := self.lengths[chosen].numpy()) / lengths.sum()
        counts = np.floor(shares).astype(int)
        # the remainder goes to the edges that lost the largest fractions (largest remainder)
        counts[np.argsort(-(shares - counts), kind="stable")[: n - counts.sum()]] += 1
        points, normals = [], []
        for edge, count in zip(chosen, counts, strict=True):
            if count == 0:
                continue
            t = unit_cube(int(count), 1, method, seed_stream(seed, "edge", edge))
            start, end = self.starts[edge], self.ends[edge]
            points.append(start + t * (end - start))
            normals.append(self.normals[edge].expand(int(count), 2))
        return torch.cat(points), torch.cat(normals)

    def grid(self, counts: Sequence[int]) -> tuple[Tensor, list[Tensor]]:
        """A tensor-product grid over the bounding box, the last axis fastest (as `Box.grid`);
        `mask` says which of its points are in the domain."""
        return Box(self.low, self.high).grid(counts)

    def _edge_distances(self, points: Tensor) -> Tensor:
        """(N, E): the distance of every point to every edge segment."""
        direction = self.ends - self.starts
        offset = points[:, None, :] - self.starts[None]
        along = (offset * direction).sum(-1) / self.lengths**2
        foot = self.starts + along.clamp(0, 1)[..., None] * direction
        return (points[:, None, :] - foot).norm(dim=-1)


def _ring_tensor(ring: Ring, name: str) -> Tensor:
    vertices = torch.tensor([[float(v) for v in vertex] for vertex in ring], dtype=torch.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
        raise ValueError(f"the {name} ring of a polygon needs >= 3 (x, y) vertices")
    if not torch.isfinite(vertices).all():
        raise ValueError(f"the {name} ring of a polygon has a non-finite vertex")
    if _signed_area(vertices) == 0:
        raise ValueError(f"the {name} ring of a polygon encloses no area")
    return vertices


def _signed_area(ring: Tensor) -> float:
    """Shoelace formula: positive for a counter-clockwise ring."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float((x * y.roll(-1) - x.roll(-1) * y).sum())


def _even_odd(points: Tensor, rings: Sequence[Tensor]) -> Tensor:
    """Ray casting along +x: a point is inside when the ray crosses an odd number of edges."""
    px, py = points[:, 0:1], points[:, 1:2]
    crossings = torch.zeros(len(points), dtype=torch.int64)
    for ring in rings:
        a, b = ring, ring.roll(-1, dims=0)
        ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
        straddles = (ay > py) != (by > py)
        height = torch.where(by == ay, torch.ones_like(ay), by - ay)
        x_cross = ax + (bx - ax) * (py - ay) / height
        crossings += (straddles & (px < x_cross)).sum(dim=1)
    return crossings % 2 == 1
