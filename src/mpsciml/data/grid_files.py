"""A user's own grid data: input and output fields read from a file (`problem.data_path=`).

Formats, chosen by the file's suffix, each holding two arrays named `x` (inputs) and `y`
(outputs):
  * `.pt` / `.pth`: a dict of tensors `{"x": ..., "y": ...}`, the layout of neuraloperator's
    datasets (e.g. darcy_train_16.pt); read with `torch.load(weights_only=True)`, so a file
    holding anything but tensors and plain containers is refused rather than executed;
  * `.npz`: numpy arrays `x` and `y` (`np.savez(path, x=..., y=...)`);
  * `.h5` / `.hdf5`: datasets `x` and `y` at the file's root.

Shapes: (N, *grid) for one channel, or (N, C, *grid); `grid` has the problem's number of
spatial dimensions, and x and y share N and the grid. Anything else is a ValueError of one line
naming the config key, the file and what was expected, which a run turns into exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

KEYS = ("x", "y")
SUFFIXES = {".pt": "torch", ".pth": "torch", ".npz": "numpy", ".h5": "hdf5", ".hdf5": "hdf5"}


def read_grid_file(
    path: str | Path, key: str, channels: tuple[int, int], spatial_dims: int
) -> tuple[Tensor, Tensor]:
    """The inputs (N, C_in, *grid) and outputs (N, C_out, *grid) in `path`, float64 on the CPU.

    `key` is the config key that named the file (`problem.data_path`), for the messages;
    `channels` the (input, output) channel counts the problem expects, and `spatial_dims` its
    number of spatial dimensions (2 for a field on a square).
    """
    arrays = read_grid_arrays(path, key, {"x": channels[0], "y": channels[1]}, spatial_dims)
    x, y = arrays["x"], arrays["y"]
    if x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
        raise ValueError(
            f"{key}={path}: {Path(path).name} has x of shape {tuple(x.shape)} and y of shape "
            f"{tuple(y.shape)}; expected the same number of samples on the same grid"
        )
    return x, y


def read_grid_arrays(
    path: str | Path, key: str, expected: dict[str, int], spatial_dims: int
) -> dict[str, Tensor]:
    """The arrays named in `expected` (name -> channels), each (N, C, *grid) float64: the
    reader of `read_grid_file`, also for files of inputs alone (Darcy coefficients, `x`)."""
    file = Path(path).expanduser()
    where = f"{key}={path}"
    if not file.is_file():
        raise ValueError(f"{where}: no such file")
    kind = SUFFIXES.get(file.suffix.lower())
    wanted = " and ".join(f"{name} ({_what(name)})" for name in expected)
    if kind is None:
        raise ValueError(
            f"{where}: unknown file type {file.suffix!r}; expected one of "
            f"{', '.join(SUFFIXES)} holding arrays {wanted}"
        )
    arrays = _read(file, kind, where)
    missing = [name for name in expected if name not in arrays]
    if missing:
        found = ", ".join(sorted(map(str, arrays))) or "nothing"
        raise ValueError(
            f"{where}: {file.name} lacks {' and '.join(missing)}; expected arrays {wanted}, "
            f"found {found}"
        )
    return {
        name: _fields(arrays[name], name, channels, spatial_dims, where, file.name)
        for name, channels in expected.items()
    }


def _what(name: str) -> str:
    return {"x": "inputs", "y": "outputs"}.get(name, "fields")


def _read(file: Path, kind: str, where: str) -> dict[str, Any]:
    try:
        if kind == "torch":
            content = torch.load(file, map_location="cpu", weights_only=True)
            if not isinstance(content, dict):
                raise ValueError(
                    f"{where}: {file.name} holds a {type(content).__name__}; expected a dict "
                    "{'x': tensor, 'y': tensor} (neuraloperator's layout)"
                )
            return content
        if kind == "numpy":
            with np.load(file, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        import h5py  # only for .h5 files

        with h5py.File(file, "r") as h5:
            return {
                name: np.asarray(item)
                for name, item in h5.items()
                if isinstance(item, h5py.Dataset)
            }
    except ValueError:
        raise
    except Exception as exc:  # torch, numpy and h5py each fail their own way on a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"{where}: {file.name} cannot be read as {kind}: {reason}") from None


def _fields(
    array: Any, name: str, channels: int, spatial_dims: int, where: str, file_name: str
) -> Tensor:
    """One array as (N, C, *grid) float64, with the channel axis added for (N, *grid)."""
    expected = (
        f"expected (N, {', '.join(['n'] * spatial_dims)}) or "
        f"(N, {channels}, {', '.join(['n'] * spatial_dims)})"
    )
    try:
        tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, Tensor) else array)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{where}: {file_name}'s {name} is not a numeric array; {expected}"
        ) from None
    if not (tensor.is_floating_point() or tensor.dtype in _INTEGER_DTYPES):
        raise ValueError(
            f"{where}: {file_name}'s {name} has dtype {tensor.dtype}; expected real numbers"
        )
    if tensor.dim() == spatial_dims + 1:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != spatial_dims + 2 or tensor.shape[1] != channels:
        raise ValueError(
            f"{where}: {file_name}'s {name} has shape {tuple(tensor.shape)}; {expected}"
        )
    if tensor.shape[0] < 1 or min(tensor.shape[2:]) < 3:
        raise ValueError(
            f"{where}: {file_name}'s {name} has shape {tuple(tensor.shape)}; expected at least "
            "one sample and 3 grid points per dimension"
        )
    tensor = tensor.to(torch.float64).contiguous()
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{where}: {file_name}'s {name} holds nan or inf values")
    return tensor


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
