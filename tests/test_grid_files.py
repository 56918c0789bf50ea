"""A user's own grid data (`problem.data_path=`): neuraloperator-style .pt, .npz and .h5 files
that we write here, read back exactly; wrong keys, shapes or files are one line naming the key,
the file and what was expected."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mpsciml.data.grid_files import read_grid_arrays, read_grid_file
from mpsciml.problems.darcy import Darcy

RNG = np.random.default_rng(0)
X = RNG.uniform(3.0, 12.0, size=(6, 8, 8))
Y = RNG.normal(size=(6, 8, 8))


def write(path: Path, **arrays: np.ndarray) -> Path:
    """arrays in the format the suffix names: a dict of tensors (.pt), npz or h5 datasets."""
    if path.suffix == ".pt":
        torch.save({k: torch.from_numpy(v).float() for k, v in arrays.items()}, path)
    elif path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w") as h5:
            for key, value in arrays.items():
                h5.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize("suffix", [".pt", ".npz", ".h5"])
def test_each_format_reads_back_with_a_channel_axis(tmp_path, suffix):
    path = write(tmp_path / f"data{suffix}", x=X, y=Y)
    x, y = read_grid_file(path, "problem.data_path", (1, 1), 2)
    assert x.shape == (6, 1, 8, 8) and y.shape == (6, 1, 8, 8) and x.dtype == torch.float64
    tolerance = 1e-6 if suffix == ".pt" else 0.0  # the .pt file holds float32, as neuralop's
    torch.testing.assert_close(x[:, 0], torch.from_numpy(X), atol=tolerance * 12, rtol=tolerance)
    torch.testing.assert_close(y[:, 0], torch.from_numpy(Y), atol=tolerance * 5, rtol=tolerance)


def test_channels_given_explicitly_are_kept(tmp_path):
    path = write(tmp_path / "c.npz", x=np.stack([X, 2 * X], 1), y=Y[:, None])
    x, y = read_grid_file(path, "problem.data_path", (2, 1), 2)
    assert x.shape == (6, 2, 8, 8) and y.shape == (6, 1, 8, 8)
    torch.testing.assert_close(x[:, 1], torch.from_numpy(2 * X))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"a": X, "u": Y}, r"d\.npz lacks x and y; expected arrays x \(inputs\) and y \(outputs\), "
         r"found a, u"),
        ({"x": X, "y": Y[:, 0]}, r"d\.npz's y has shape \(6, 8\); expected \(N, n, n\) or "
         r"\(N, 1, n, n\)"),
        ({"x": np.stack([X, X], 1), "y": Y}, r"x has shape \(6, 2, 8, 8\); expected"),
        ({"x": X, "y": Y[:4]}, r"x of shape \(6, 1, 8, 8\) and y of shape \(4, 1, 8, 8\); "
         "expected the same number of samples on the same grid"),
        ({"x": X, "y": Y[:, :4, :4]}, "expected the same number of samples on the same grid"),
        ({"x": X * np.nan, "y": Y}, "x holds nan or inf values"),
    ],
)  # fmt: skip
def test_wrong_keys_and_shapes_are_one_line(tmp_path, arrays, message):
    path = write(tmp_path / "d.npz", **arrays)
    with pytest.raises(ValueError, match=message) as info:
        read_grid_file(path, "problem.data_path", (1, 1), 2)
    text = str(info.value)
    assert text.startswith(f"problem.data_path={path}: ") and "\n" not in text


def test_bad_files_are_one_line(tmp_path):
    def error(path: Path) -> str:
        with pytest.raises(ValueError) as info:
            read_grid_file(path, "problem.data_path", (1, 1), 2)
        assert "\n" not in str(info.value)
        return str(info.value)

    assert error(tmp_path / "missing.npz").endswith("missing.npz: no such file")
    (tmp_path / "d.csv").write_text("1,2")
    assert "unknown file type '.csv'; expected one of .pt" in error(tmp_path / "d.csv")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5 at all")
    assert "broken.h5 cannot be read as hdf5" in error(tmp_path / "broken.h5")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    assert "holds a list; expected a dict {'x': tensor, 'y': tensor}" in error(tmp_path / "list.pt")


def test_a_file_of_inputs_alone(tmp_path):
    path = write(tmp_path / "a.h5", x=X)
    arrays = read_grid_arrays(path, "problem.coefficient_path", {"x": 1}, 2)
    assert list(arrays) == ["x"] and arrays["x"].shape == (6, 1, 8, 8)


def test_darcy_trains_on_a_users_file_and_refuses_a_wrong_one(tmp_path):
    path = write(tmp_path / "darcy.pt", x=X, y=Y)
    problem = Darcy(n_train=4, n_test=2, data_path=str(path))
    assert problem.model_sizes()["grid"] == (8, 8)  # from the file, not problem.resolution
    assert problem.test_data().n_samples == 2 and problem.zero_shot_data() is None
    bad = write(tmp_path / "bad.npz", x=X, u=Y)
    with pytest.raises(ValueError, match=r"problem\.data_path=.*bad\.npz: bad\.npz lacks y"):
        Darcy(n_train=4, n_test=2, data_path=str(bad)).model_sizes()
    test_file = write(tmp_path / "test.npz", x=X[:3], y=Y[:3])
    separate = Darcy(n_train=6, n_test=3, data_path=str(path), test_data_path=str(test_file))
    torch.testing.assert_close(separate.test_data().outputs[:, 0], torch.from_numpy(Y[:3]))


def test_darcy_solves_a_users_coefficients(tmp_path):
    """Coefficients given per cell are solved by the generator's scheme: a constant a = 1 with
    f = 1 gives the Poisson solution, symmetric and positive inside."""
    a = np.ones((3, 8, 8))
    a[1] *= 2.0  # twice the coefficient, half the solution
    a[2, :4] = 10.0
    path = write(tmp_path / "a.npz", x=a)
    generator = {"solve_grid": 24, "modes": 8}
    problem = Darcy(n_train=2, n_test=1, coefficient_path=str(path), generator=generator)
    train, test = problem.train_data(), problem.test_data()
    u0, u1 = train.outputs[0, 0], train.outputs[1, 0]
    assert float(u0.min()) > 0 and float(u0.max()) == pytest.approx(0.0737, rel=0.03)
    torch.testing.assert_close(u0, u0.T)
    torch.testing.assert_close(u1, u0 / 2)
    assert test.n_samples == 1 and problem.zero_shot_data() is None
    with pytest.raises(ValueError, match=r"problem\.coefficient_path=.*holds 3 coefficient fields"):
        Darcy(n_train=3, n_test=1, coefficient_path=str(path)).train_data()
