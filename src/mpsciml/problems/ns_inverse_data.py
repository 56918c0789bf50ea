"""Velocity and pressure snapshots in the layout of Raissi et al.'s cylinder-wake `.mat` file.

The layout (`cylinder_nektar_wake.mat` of the PINNs repository), read with `scipy.io.loadmat`:

    X_star (N, 2)     the x, y of N points
    t      (T, 1)     T times
    U_star (N, 2, T)  u, v at every point and time
    p_star (N, T)     p at every point and time

A user's file in that layout is what `problem=ns_inverse problem.data_path=...` trains on; we
write one from our exact solution (`write_snapshots`) to test the round trip. The points must
form a tensor-product grid in (x, y) (any order, any spacing; Raissi's is a 100 x 50 grid), so
the run's errors are measured on the file's own values without interpolating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
from torch import Tensor

#: the arrays of the layout and their shapes, for the one line that refuses a file
EXPECTED = "X_star (N, 2), t (T, 1), U_star (N, 2, T), p_star (N, T)"


@dataclass(frozen=True)
class Snapshots:
    """The file's fields on the tensor-product grid (x, y, t), the last input fastest."""

    axes: tuple[Tensor, Tensor, Tensor]  # sorted 1-D x, y, t (float64)
    fields: Tensor  # (nx * ny * nt, 3): u, v, p at the grid points, in grid order

    @property
    def points(self) -> Tensor:
        mesh = torch.meshgrid(*self.axes, indexing="ij")
        return torch.stack([m.reshape(-1) for m in mesh], dim=-1)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.axes[0]), len(self.axes[1]), len(self.axes[2]))


def _refuse(path: str | Path, why: str) -> ValueError:
    return ValueError(f"problem.data_path={path}: {why}; expected the arrays {EXPECTED}")


def read_snapshots(path: str | Path) -> Snapshots:
    """The file's fields on its grid; one line naming the expected arrays if it does not fit."""
    try:
        arrays = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise _refuse(path, "no such file") from None
    except Exception as exc:  # not a .mat file: scipy's reasons vary
        raise _refuse(path, f"not a readable .mat file ({type(exc).__name__})") from None
    missing = [name for name in ("X_star", "t", "U_star", "p_star") if name not in arrays]
    if missing:
        raise _refuse(path, f"missing {', '.join(missing)}")
    xy, t = np.asarray(arrays["X_star"], float), np.asarray(arrays["t"], float).reshape(-1)
    velocity, pressure = np.asarray(arrays["U_star"], float), np.asarray(arrays["p_star"], float)
    n, nt = xy.shape[0], t.size
    fits = xy.ndim == 2 and xy.shape[1] == 2 and velocity.shape == (n, 2, nt)
    if not fits or pressure.shape != (n, nt):
        shapes = f"X_star {xy.shape}, t {arrays['t'].shape}, U_star {velocity.shape}, "
        raise _refuse(path, f"shapes do not fit ({shapes}p_star {pressure.shape})")
    if n == 0 or nt == 0 or not all(np.isfinite(a).all() for a in (xy, t, velocity, pressure)):
        raise _refuse(path, "empty or non-finite values")
    xs, x_index = np.unique(xy[:, 0], return_inverse=True)
    ys, y_index = np.unique(xy[:, 1], return_inverse=True)
    flat = x_index * len(ys) + y_index
    if len(xs) * len(ys) != n or len(np.unique(flat)) != n:
        raise _refuse(path, "X_star is not a tensor-product grid of x and y")
    times, t_order = np.unique(t, return_index=True)
    if len(times) != nt:
        raise _refuse(path, "repeated times in t")
    grid = np.empty((len(xs), len(ys), nt, 3))
    grid.reshape(n, nt, 3)[flat, :, :2] = velocity[:, :, t_order].transpose(0, 2, 1)
    grid.reshape(n, nt, 3)[flat, :, 2] = pressure[:, t_order]
    axes = (torch.from_numpy(xs), torch.from_numpy(ys), torch.from_numpy(times))
    return Snapshots(axes, torch.from_numpy(grid.reshape(-1, 3)))


def write_snapshots(path: str | Path, snapshots: Snapshots) -> None:
    """`snapshots` as a `.mat` file in Raissi's layout (X_star with y fastest, as his grid)."""
    nx, ny, nt = snapshots.shape
    grid = snapshots.fields.reshape(nx * ny, nt, 3).numpy()
    mesh = torch.meshgrid(snapshots.axes[0], snapshots.axes[1], indexing="ij")
    scipy.io.savemat(
        str(path),
        {
            "X_star": torch.stack([m.reshape(-1) for m in mesh], dim=-1).numpy(),
            "t": snapshots.axes[2].numpy().reshape(-1, 1),
            "U_star": grid[:, :, :2].transpose(0, 2, 1),
            "p_star": grid[:, :, 2],
        },
    )
