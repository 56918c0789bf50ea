"""Polygons with holes: interior points inside and exactly n of them in every sampling method,
boundary points on the edges and shared by length, unit outward normals, the evaluation mask,
and the same points from the same seed."""

from __future__ import annotations

import math

import pytest
import torch

from mpsciml.problems import geometry
from mpsciml.problems.geometry import Polygon, circle_ring
from mpsciml.problems.sampling import SAMPLING_METHODS
from mpsciml.seeding import seed_stream

L_SHAPE = [(-1.0, -1.0), (0.0, -1.0), (0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (-1.0, 1.0)]
SQUARE = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]


def l_shape() -> Polygon:
    return Polygon(L_SHAPE)


def plate_with_hole() -> Polygon:
    """A square with a circular hole and a square hole: two holes, two orientations given."""
    square_hole = [(0.1, 0.1), (0.1, 0.25), (0.25, 0.25), (0.25, 0.1)]  # clockwise already
    return Polygon(SQUARE, holes=[circle_ring((0.6, 0.6), 0.2, sides=32), square_hole])


def in_l_shape(points: torch.Tensor) -> torch.Tensor:
    x, y = points[:, 0], points[:, 1]
    in_box = (x.abs() < 1) & (y.abs() < 1)
    return in_box & ~((x >= 0) & (y <= 0))


@pytest.mark.parametrize("method", SAMPLING_METHODS)
def test_interior_points_are_inside_exactly_n_and_the_seed_decides_them(method):
    polygon = l_shape()
    points = polygon.interior(1000, method, seed_stream(7, "pde"))
    assert points.shape == (1000, 2) and points.dtype == torch.float64
    assert points.device.type == "cpu"
    assert torch.all(in_l_shape(points)) and torch.all(polygon.contains(points))
    again = l_shape().interior(1000, method, seed_stream(7, "pde"))
    assert torch.equal(points, again)
    assert not torch.equal(points, polygon.interior(1000, method, seed_stream(8, "pde")))
    # spread over the whole L: a third in each of its three unit squares, give or take
    left, low = points[:, 0] < 0, points[:, 1] < 0
    counts = [int((left & low).sum()), int((left & ~low).sum()), int((~left & ~low).sum())]
    assert all(abs(count - 333) < 60 for count in counts)


def test_interior_avoids_holes_and_fills_a_thin_domain():
    plate = plate_with_hole()
    points = plate.interior(500, "sobol", 3)
    assert points.shape == (500, 2)
    outside_disc = (points - torch.tensor([0.6, 0.6])).norm(dim=1) > 0.2 * math.cos(math.pi / 32)
    outside_square = ~((points >= 0.1) & (points <= 0.25)).all(dim=1)
    assert torch.all(outside_disc & outside_square)
    # a thin diagonal strip (4% of its bounding box): still exactly n, all inside
    strip = Polygon([(0, 0), (0.02, 0), (1, 0.98), (1, 1), (0.98, 1), (0, 0.02)])
    assert strip.area == pytest.approx(0.0396)
    for method in SAMPLING_METHODS:
        points = strip.interior(300, method, 0)
        assert points.shape == (300, 2) and torch.all(strip.contains(points))


def test_rejection_tops_up_with_fresh_rounds_when_a_round_falls_short(monkeypatch):
    strip = Polygon([(0, 0), (0.02, 0), (1, 0.98), (1, 1), (0.98, 1), (0, 0.02)])
    real, rounds = geometry.unit_cube, []
    monkeypatch.setattr(
        geometry,
        "unit_cube",
        lambda n, dim, method, seed: rounds.append(n) or real(n, dim, method, seed),
    )
    rounds_per_seed = []
    for seed in range(40):  # 47 candidates for 1 point: ~15% of the first rounds find none
        rounds.clear()
        point = strip.interior(1, "uniform", seed)
        assert point.shape == (1, 2) and strip.contains(point).all()
        rounds_per_seed.append(len(rounds))
        if max(rounds_per_seed) > 1:
            break
    assert min(rounds_per_seed) == 1 and max(rounds_per_seed) > 1, rounds_per_seed


def test_area_counts_holes():
    assert l_shape().area == pytest.approx(3.0)
    disc = 0.5 * 32 * 0.2**2 * math.sin(2 * math.pi / 32)  # the inscribed 32-gon
    assert plate_with_hole().area == pytest.approx(1.0 - disc - 0.15**2)


def test_boundary_points_lie_on_the_edges_shared_by_length():
    polygon = l_shape()
    points, normals = polygon.boundary_with_normals(80, "sobol", seed_stream(1, "bc"))
    assert points.shape == normals.shape == (80, 2)
    assert polygon.distance_to_boundary(points).max() < 1e-12
    # edges of length 1, 1, 1, 1, 2, 2 (after the first): 10, 10, 10, 10, 20, 20 points
    nearest = polygon._edge_distances(points).argmin(dim=1)
    assert sorted(torch.bincount(nearest, minlength=6).tolist()) == [10, 10, 10, 10, 20, 20]
    assert torch.equal(points, polygon.boundary(80, "sobol", seed_stream(1, "bc")))
    # a subset of edges, for a condition on part of the boundary (e.g. Neumann)
    part = polygon.boundary(7, "uniform", 0, edges=[0])
    assert torch.all(part[:, 1] == -1.0) and torch.all((part[:, 0] > -1) & (part[:, 0] < 0))
    with pytest.raises(ValueError, match="edges="):
        polygon.boundary(7, "uniform", 0, edges=[6])


@pytest.mark.parametrize("make", [l_shape, plate_with_hole])
def test_normals_are_unit_and_point_out_of_the_domain(make):
    polygon = make()
    points, normals = polygon.boundary_with_normals(400, "uniform", 5)
    assert torch.allclose(normals.norm(dim=1), torch.ones(400, dtype=torch.float64))
    step = 1e-6
    assert torch.all(polygon.contains(points - step * normals))
    assert not torch.any(polygon.contains(points + step * normals))
    # from coordinates alone, as a residual would ask
    assert torch.allclose(polygon.normals_at(points.float()), normals.float())


def test_orientation_of_the_given_rings_does_not_matter():
    counter, clockwise = Polygon(L_SHAPE), Polygon(L_SHAPE[::-1])
    for polygon in (counter, clockwise):
        points, normals = polygon.boundary_with_normals(60, "sobol", 2)
        assert torch.all(polygon.contains(points - 1e-6 * normals))


def test_mask_marks_inside_and_boundary_grid_points():
    polygon = l_shape()
    points, axes = polygon.grid((5, 5))  # coordinates -1, -0.5, 0, 0.5, 1
    mask = polygon.mask(points)
    assert len(axes) == 2 and points.shape == (25, 2)
    # the 25 nodes minus the 4 strictly inside or on the open edges of the missing quadrant:
    # (0.5, -0.5), (0.5, -1), (1, -0.5), (1, -1)
    assert int(mask.sum()) == 21 and not mask[torch.tensor([3 * 5 + 1, 3 * 5 + 0])].any()
    assert mask[2 * 5 + 2]  # the re-entrant corner (0, 0) is on the boundary: counted


def test_distance_to_boundary_of_a_square():
    square = Polygon.rectangle((0.0, 0.0), (1.0, 1.0))
    points = square.interior(200, "uniform", 4)
    x, y = points[:, 0], points[:, 1]
    expected = torch.stack([x, 1 - x, y, 1 - y]).min(dim=0).values
    assert torch.allclose(square.distance_to_boundary(points), expected)


@pytest.mark.parametrize(
    ("outer", "holes", "message"),
    [
        ([(0, 0), (1, 0)], [], ">= 3"),
        ([(0, 0), (1, 0), (2, 0)], [], "no area"),
        (SQUARE, [[(2, 2), (3, 2), (3, 3)]], "not inside"),
        ([(0, 0), (1, 0), (1, 0), (0, 1)], [], "length 0"),
    ],
)
def test_bad_polygons_are_one_line_errors(outer, holes, message):
    with pytest.raises(ValueError, match=message):
        Polygon(outer, holes)
