"""Checks of `mpsciml.problems.sampling`: where the residuals of a PINN are enforced.

Collocation points that leave the domain, boundary points that miss the boundary, or point sets
that change between runs with the same seed would all make precision comparisons meaningless, so
each property the training relies on is checked here, including that quasi-random points really
cover the domain more evenly than pseudo-random ones (the reason to offer them).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy.stats import qmc

from mpsciml.problems.burgers import Burgers
from mpsciml.problems.navier_stokes import NavierStokes
from mpsciml.problems.sampling import SAMPLING_METHODS, Box, unit_cube

METHODS = pytest.mark.parametrize("method", SAMPLING_METHODS)
BOX_3D = Box(low=(-1.0, 0.0, 2.0), high=(1.0, 0.5, 5.0))


def _inside(points: torch.Tensor, box: Box) -> bool:
    low = torch.tensor(box.low, dtype=torch.float64)
    high = torch.tensor(box.high, dtype=torch.float64)
    return bool(((points >= low) & (points <= high)).all())


@METHODS
@pytest.mark.parametrize(("n", "dim"), [(1, 1), (100, 2), (257, 3)])
def test_unit_cube_shape_dtype_range(method: str, n: int, dim: int) -> None:
    """n points of dimension dim, float64 on the CPU, inside [0, 1]^dim."""
    points = unit_cube(n, dim, method, seed=0)
    assert points.shape == (n, dim)
    assert points.dtype == torch.float64
    assert points.device.type == "cpu"
    assert _inside(points, Box([0.0] * dim, [1.0] * dim))


@METHODS
def test_interior_inside_box_and_covering_it(method: str) -> None:
    """Interior points lie in the box and reach across it (mapped, not left in [0, 1])."""
    points = BOX_3D.interior(500, method, seed=1)
    assert points.shape == (500, 3) and points.dtype == torch.float64
    assert _inside(points, BOX_3D)
    extent = points.max(0).values - points.min(0).values
    size = torch.tensor(BOX_3D.high) - torch.tensor(BOX_3D.low)
    assert bool((extent > 0.95 * size.double()).all())


@METHODS
def test_same_seed_same_points_different_seed_different(method: str) -> None:
    """Reproducibility: the seed alone fixes the collocation points."""
    first = BOX_3D.interior(64, method, seed=5)
    assert torch.equal(first, BOX_3D.interior(64, method, seed=5))
    other = BOX_3D.interior(64, method, seed=6)
    assert not torch.allclose(first, other)
    assert torch.equal(BOX_3D.faces(64, method, seed=5), BOX_3D.faces(64, method, seed=5))
    assert not torch.equal(BOX_3D.faces(64, method, seed=5), BOX_3D.faces(64, method, seed=6))


@METHODS
@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("side", ["low", "high"])
def test_face_fixes_coordinate_exactly(method: str, axis: int, side: str) -> None:
    """Boundary points must be exactly on the face (a bc enforced beside it is a different bc)."""
    points = BOX_3D.face(axis, side, 40, method, seed=2)
    assert points.shape == (40, 3) and points.dtype == torch.float64
    bound = BOX_3D.low[axis] if side == "low" else BOX_3D.high[axis]
    assert bool((points[:, axis] == bound).all())
    assert _inside(points, BOX_3D)
    free = [i for i in range(3) if i != axis]
    assert points[:, free].unique(dim=0).shape[0] == 40  # the other coordinates are spread


def test_face_of_one_dimensional_box_is_the_end_point() -> None:
    """A 1-D box has point faces: every point is the end point itself."""
    box = Box(low=(-2.0,), high=(3.0,))
    assert torch.equal(box.face(0, "low", 3, "sobol", 0), torch.full((3, 1), -2.0).double())
    assert torch.equal(box.face(0, "high", 2, "uniform", 0), torch.full((2, 1), 3.0).double())


def _face_counts(points: torch.Tensor, box: Box, axes: list[int]) -> list[int]:
    return [
        int((points[:, axis] == bound).sum())
        for axis in axes
        for bound in (box.low[axis], box.high[axis])
    ]


@METHODS
@pytest.mark.parametrize("n", [400, 401, 7, 4, 1])
def test_faces_proportional_to_face_length(method: str, n: int) -> None:
    """On the Kovasznay box (1.5 x 2) the x-faces get 2/7 of the points each, the y-faces 1.5/7.

    Each face gets floor(share) or one more, and the total is exactly n.
    """
    box = NavierStokes.domain
    points = box.faces(n, method, seed=0)
    assert points.shape == (n, 2)  # exactly n, remainder handed out
    assert _inside(points, box)
    counts = _face_counts(points, box, [0, 1])  # x=-0.5, x=1, y=-0.5, y=1.5
    assert sum(counts) == n  # every point on exactly one face (no corners hit)
    shares = [Fraction(n * 4, 14), Fraction(n * 4, 14), Fraction(n * 3, 14), Fraction(n * 3, 14)]
    for count, share in zip(counts, shares, strict=True):
        assert math.floor(share) <= count <= math.floor(share) + 1, (counts, shares)
    if n == 400:  # shares 114.3 and 85.7: more points on the longer x-faces
        assert counts[0] + counts[1] in (228, 229, 230) and counts[2] + counts[3] in (170, 171, 172)


def test_faces_remainder_goes_to_largest_fractions() -> None:
    """n=7 on the 1.5 x 2 box: shares (2, 2, 1.5, 1.5) must give counts (2, 2, 2, 1) or so."""
    box = NavierStokes.domain
    counts = _face_counts(box.faces(7, "sobol", seed=0), box, [0, 1])
    assert counts[:2] == [2, 2], counts


def test_faces_3d_and_axes_subset() -> None:
    """Face measures are areas in 3-D; axes= restricts to the faces of the chosen axes."""
    box = Box(low=(0.0, 0.0, 0.0), high=(1.0, 2.0, 3.0))  # face areas 6, 3, 2 per side
    points = box.faces(220, "sobol", seed=0)
    counts = _face_counts(points, box, [0, 1, 2])
    assert sum(counts) == 220
    for count, area in zip(counts, [6, 6, 3, 3, 2, 2], strict=True):
        assert abs(count - 220 * area / 22) < 1
    burgers = Burgers.domain
    bc = burgers.faces(64, "sobol", seed=1, axes=[0])
    assert _face_counts(bc, burgers, [0]) == [32, 32]  # x = -1 and x = 1 only
    assert bool(((bc[:, 1] > burgers.low[1]) & (bc[:, 1] < burgers.high[1])).all())


def test_opposite_faces_are_not_copies() -> None:
    """Each face draws with its own seed: opposite faces must not share free coordinates."""
    points = Burgers.domain.faces(64, "sobol", seed=0, axes=[0])
    left, right = points[points[:, 0] == -1.0], points[points[:, 0] == 1.0]
    assert not np.intersect1d(left[:, 1].numpy(), right[:, 1].numpy()).size


def test_grid_shape_and_last_axis_fastest() -> None:
    """grid() is a tensor product with the last input fastest, end points included exactly."""
    box = Box(low=(0.0, 10.0, -1.0), high=(1.0, 20.0, 1.0))
    points, axes = box.grid((3, 4, 5))
    assert points.shape == (60, 3) and points.dtype == torch.float64
    assert [a.shape[0] for a in axes] == [3, 4, 5]
    assert all(a.dtype == torch.float64 for a in axes)
    for a, lo, hi in zip(axes, box.low, box.high, strict=True):
        assert a[0].item() == lo and a[-1].item() == hi
        assert torch.allclose(a.diff(), torch.full_like(a.diff(), (hi - lo) / (len(a) - 1)))
    # first rows: only the last coordinate moves
    assert torch.equal(points[:5, 2], axes[2])
    assert bool((points[:5, :2] == torch.tensor([0.0, 10.0], dtype=torch.float64)).all())
    cube = points.reshape(3, 4, 5, 3)
    for i, j, k in [(0, 0, 0), (2, 1, 3), (1, 3, 4), (2, 3, 4)]:
        expected = torch.stack([axes[0][i], axes[1][j], axes[2][k]])
        assert torch.equal(cube[i, j, k], expected)


def test_problem_evaluation_grid_matches_box_grid() -> None:
    """The evaluation grid shape is in input order, so a reshape gives (nx, nt) fields."""
    problem = Burgers(evaluation_grid=(8, 5))
    grid = problem.evaluation_grid()
    assert grid.points.shape == (40, 2) and grid.shape == (8, 5)
    assert torch.equal(grid.points.reshape(8, 5, 2)[:, 0, 0], grid.axes[0])


@pytest.mark.parametrize("method", ["halton", "Sobol", ""])
def test_unknown_method_names_allowed_methods(method: str) -> None:
    """A typo in problem.sampling must fail loudly and say what would have worked."""
    for call in (
        lambda: unit_cube(8, 2, method, 0),
        lambda: BOX_3D.interior(8, method, 0),
        lambda: BOX_3D.faces(8, method, 0),
    ):
        with pytest.raises(ValueError, match="allowed: uniform, sobol, lhs") as info:
            call()
        assert repr(method) in str(info.value)


def test_quasi_random_points_are_better_spread_than_uniform() -> None:
    """Sobol (and LHS) have lower centered L2 discrepancy than pseudo-random points.

    Measured at n=256 in 2-D: uniform ~1e-3, LHS ~1.5e-4, Sobol ~1.1e-5.
    """
    seeds = range(5)

    def discrepancy(method: str) -> list[float]:
        return [qmc.discrepancy(unit_cube(256, 2, method, s).numpy()) for s in seeds]

    uniform, sobol, lhs = discrepancy("uniform"), discrepancy("sobol"), discrepancy("lhs")
    assert max(sobol) < min(uniform) / 10
    assert np.mean(lhs) < np.mean(uniform) / 2
    assert all(math.isfinite(v) for v in uniform + sobol + lhs)


def test_lhs_stratifies_each_coordinate() -> None:
    """Latin hypercube: each of the n equal strata of every coordinate holds exactly one point."""
    n = 50
    points = unit_cube(n, 3, "lhs", seed=4)
    strata = torch.floor(points * n).long()
    for column in strata.T:
        assert sorted(column.tolist()) == list(range(n))
