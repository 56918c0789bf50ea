"""Operator learning on grids: the relative L2/H1 metrics against analytic fields, the problem
base (datasets read once, user files, errors), the module (normalisation buffers, loss in
physical units, errors at the training and zero-shot grids, plots) and a whole run through
compose with a tiny problem and a pointwise model defined here."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf
from torch import nn

from mpsciml.config import ConfigError
from mpsciml.contract import ModelKind
from mpsciml.grid_metrics import (
    field_errors,
    grid_coordinates,
    grid_gradient,
    relative_loss,
    squared_norms,
)
from mpsciml.modules.grid_operator import GridOperatorModule
from mpsciml.problems.grid_operator import GridData, GridOperatorProblem, channel_statistics
from mpsciml.train import run


# ----------------------------------------------------------- tiny problem and model
class AffineGrid(GridOperatorProblem):
    """a -> u = 3 a + 2 on a periodic square; a is a random trigonometric field. In normalised
    units u is a itself, so a pointwise model learns it exactly."""

    input_names = ("a",)
    output_names = ("u",)
    coordinate_names = ("x", "y")
    grid_layout = "periodic"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.generated: list[tuple[int, int, int]] = []

    def generate(self, n: int, resolution: int, seed: int) -> GridData:
        self.generated.append((n, resolution, seed))
        generator = torch.Generator().manual_seed(seed)
        coefficients = torch.randn(n, 3, generator=generator, dtype=torch.float64)
        x = grid_coordinates(resolution, "periodic")
        grid_x, grid_y = torch.meshgrid(x, x, indexing="ij")
        modes = torch.stack(
            [
                torch.sin(2 * math.pi * grid_x),
                torch.cos(2 * math.pi * grid_y),
                torch.ones_like(grid_x),
            ]
        )
        a = torch.einsum("nk,kxy->nxy", coefficients, modes).unsqueeze(1)
        return GridData(a, 3 * a + 2)


class PointwiseGrid(nn.Module):
    """A 1x1 convolution: (N, C_in, *grid) -> (N, C_out, *grid) at any grid."""

    accepts = (ModelKind.GRID_OPERATOR,)

    def __init__(self, in_channels: int, out_channels: int, grid: tuple[int, ...]) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.layer = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def tiny_problem(**overrides) -> AffineGrid:
    sizes = {"n_train": 12, "n_test": 4, "resolution": 8, "zero_shot_resolution": 16}
    return AffineGrid(**{**sizes, "n_zero_shot": 3, "batch_size": 4, **overrides})


def tiny_module(problem: AffineGrid | None = None) -> GridOperatorModule:
    problem = problem or tiny_problem()
    model = PointwiseGrid(**problem.model_sizes())
    optimizer = OmegaConf.create({"adam": {"_target_": "torch.optim.Adam", "_partial_": True}})
    return GridOperatorModule(problem, model, optimizer)


def exact_model(module: GridOperatorModule) -> None:
    """Weights of the identity in normalised units: the exact operator."""
    with torch.no_grad():
        module.model.layer.weight.fill_(1.0)
        module.model.layer.bias.zero_()


# -------------------------------------------------------------------- metrics
def sine_field(n: int, layout: str, k: int) -> torch.Tensor:
    x = grid_coordinates(n, layout)
    grid_x, grid_y = torch.meshgrid(x, x, indexing="ij")
    return (torch.sin(k * math.pi * grid_x) * torch.sin(k * math.pi * grid_y))[None, None]


@pytest.mark.parametrize(("layout", "k"), [("periodic", 2), ("nodes", 1), ("cells", 1)])
def test_the_h1_norm_converges_at_second_order_to_the_analytic_value(layout, k):
    """u = sin(k pi x) sin(k pi y): ||u||^2 = 1/4 and |u|^2_H1 = 2 (k pi)^2 / 4 on the unit
    square; periodic for k = 2, zero on the walls (nodes or cell centres) for k = 1."""
    exact = 0.25 + 2 * (k * math.pi) ** 2 / 4
    errors = [
        abs(float(squared_norms(sine_field(n, layout, k), "h1", layout)) - exact) / exact
        for n in (32, 64)
    ]
    assert errors[1] < 4e-3
    assert errors[0] / errors[1] > 2.8  # O(h^2): 4 asymptotically
    l2 = float(squared_norms(sine_field(64, layout, k), "l2", layout))
    assert l2 == pytest.approx(0.25, rel=1e-3)


def test_grid_derivatives_are_exact_for_quadratics_at_the_walls():
    x = grid_coordinates(9, "nodes")
    u = (x**2)[None, None]
    (du,) = grid_gradient(u, "nodes")
    torch.testing.assert_close(du[0, 0], 2 * x)  # second-order one-sided at both ends


def test_relative_errors_per_sample_averaged():
    reference = sine_field(16, "periodic", 2).repeat(2, 1, 1, 1)
    reference[1] *= 10  # a large sample does not outweigh a small one
    prediction = reference.clone()
    prediction[0] *= 1.1  # 10% off
    errors = field_errors(prediction, reference, ("u",), "periodic")
    assert errors["u"] == pytest.approx(0.05) and errors["h1_u"] == pytest.approx(0.05)
    assert list(errors) == ["u", "h1_u"]
    loss = relative_loss(prediction, reference, "h1", "periodic")
    assert float(loss) == pytest.approx(0.05)
    shifted = reference + 0.1  # a constant offset: no derivative error, so H1 < L2
    h1 = field_errors(shifted, reference, ("u",), "periodic")
    assert h1["h1_u"] < h1["u"]


# -------------------------------------------------------------------- problem
def test_datasets_are_read_once_with_a_stream_per_split():
    problem = tiny_problem()
    assert problem.model_sizes() == {"in_channels": 1, "out_channels": 1, "grid": (8, 8)}
    train, test, zero_shot = problem.train_data(), problem.test_data(), problem.zero_shot_data()
    assert problem.train_data() is train and problem.test_data() is test
    assert train.grid == (8, 8) and test.n_samples == 4
    assert zero_shot is not None and zero_shot.grid == (16, 16) and zero_shot.n_samples == 3
    seeds = {seed for _, _, seed in problem.generated}
    assert len(problem.generated) == 3 and len(seeds) == 3  # independent streams
    assert tiny_problem(n_zero_shot=0).zero_shot_data() is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"loss": "h2"}, "problem.loss='h2'"),
        ({"resolution": 0}, "problem.resolution=0"),
        ({"batch_size": -1}, "problem.batch_size=-1"),
        ({"n_zero_shot": -2}, "problem.n_zero_shot=-2"),
        ({"test_data_path": "t.pt"}, "problem.test_data_path"),
    ],
)
def test_bad_problem_keys_are_one_line_naming_the_key(override, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.").replace("'", ".")) as info:
        tiny_problem(**override)
    assert "\n" not in str(info.value)


def test_a_users_file_gives_train_test_and_no_generated_zero_shot(tmp_path):
    x = np.random.default_rng(0).normal(size=(7, 8, 8))
    np.savez(tmp_path / "d.npz", x=x, y=2 * x)
    problem = tiny_problem(n_train=5, n_test=2, data_path=str(tmp_path / "d.npz"))
    train, test = problem.train_data(), problem.test_data()
    torch.testing.assert_close(train.inputs[:, 0], torch.from_numpy(x[:5]))
    torch.testing.assert_close(test.outputs[:, 0], torch.from_numpy(2 * x[5:]))
    assert problem.zero_shot_data() is None and problem.generated == []
    with pytest.raises(ValueError, match=r"problem\.data_path=.*holds 7 samples"):
        tiny_problem(n_train=6, n_test=2, data_path=str(tmp_path / "d.npz")).test_data()


# --------------------------------------------------------------------- module
def test_normalisation_is_fitted_on_the_training_set_and_saved_in_checkpoints():
    module = tiny_module()
    train = module.problem.train_data()
    mean, std = channel_statistics(train.outputs)
    torch.testing.assert_close(module.output_mean, mean.float())
    torch.testing.assert_close(module.output_std, std.float())
    state = module.state_dict()
    assert {"input_mean", "input_std", "output_mean", "output_std"} <= set(state)
    constant = channel_statistics(torch.full((3, 1, 4, 4), 5.0, dtype=torch.float64))
    assert constant == (
        torch.tensor([5.0], dtype=torch.float64),
        torch.ones(1, dtype=torch.float64),
    )
    encoded = module.encode(train.inputs)
    assert abs(float(encoded.mean())) < 1e-5 and float(encoded.std()) == pytest.approx(1, rel=1e-3)


def test_the_loss_is_in_physical_units_and_the_exact_operator_scores_zero():
    module = tiny_module()
    train = module.problem.train_data()
    batch = module.batch_in_input_dtype({"inputs": train.inputs, "outputs": train.outputs})
    assert batch["outputs"].dtype == torch.float32
    terms = module.loss_terms(batch)
    assert list(terms) == ["l2"] and float(terms["l2"].detach()) > 0.05
    expected = relative_loss(module(batch["inputs"]), batch["outputs"], "l2", "periodic")
    torch.testing.assert_close(terms["l2"], expected)
    exact_model(module)
    assert float(module.loss_terms(batch)["l2"]) < 1e-6
    errors = module.evaluation_errors(module.predict_evaluation())
    assert list(errors) == ["u", "h1_u", "zero_shot_u", "zero_shot_h1_u"]
    assert max(errors.values()) < 1e-6  # also at the zero-shot grid, never seen in training


def test_errors_and_plots_cover_both_grids(tmp_path):
    module = tiny_module()
    prediction = module.predict_evaluation()
    assert prediction.shape == (4, 1, 8, 8) and prediction.dtype == torch.float64
    errors = module.evaluation_errors(prediction)
    assert all(0 < value < math.inf for value in errors.values())
    paths = module.evaluation_plots(prediction, tmp_path, "tiny")
    assert [p.name for p in paths] == ["u.png", "u_zero_shot.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_loss_weights_must_name_the_loss():
    problem = tiny_problem()
    model = PointwiseGrid(**problem.model_sizes())
    with pytest.raises(ValueError, match=r"loss_weights\.pde names no loss term; terms: l2"):
        GridOperatorModule(problem, model, OmegaConf.create({}), loss_weights={"pde": 1.0})


# --------------------------------------------------------- a run through compose
YAMLS = {
    "problem/affine_grid.yaml": """
        # @package _global_
        defaults:
          - override /model: pointwise_grid
        problem:
          _target_: test_grid_operator.AffineGrid
          n_train: 12
          n_test: 4
          resolution: 8
          zero_shot_resolution: 16
          n_zero_shot: 3
          batch_size: 4
    """,
    "model/pointwise_grid.yaml": """
        _target_: test_grid_operator.PointwiseGrid
    """,
    "model/picky_grid.yaml": """
        _target_: test_grid_operator.PickyGrid
    """,
}


class PickyGrid(PointwiseGrid):
    """Refuses every device, as a model with a half FFT refuses a non-power-of-two CUDA grid."""

    def check_device(self, device_type: str, input_dtype: torch.dtype | None = None) -> None:
        raise ValueError(f"model.spectral_precision=half cannot run on {device_type} here")


@pytest.fixture
def grid_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    conf = tmp_path / "conf"
    for name, text in YAMLS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(textwrap.dedent(text).lstrip())
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    return f"hydra.searchpath=[file://{conf}]"


RUN = [
    "trainer.max_steps=12",
    "val_every=6",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "optimizer.adam.lr=0.2",
]


def test_a_grid_run_trains_and_reports_every_error(grid_search_path, tmp_path):
    cfg = compose_config([*RUN, grid_search_path, "problem=affine_grid", "plots=false"], tmp_path)
    summary = run(cfg)
    assert summary["status"] == "ok", summary.get("error")
    assert summary["steps"] == 12
    assert set(summary["l2"]) == {"u", "h1_u", "zero_shot_u", "zero_shot_h1_u"}
    assert summary["final_losses"]["l2"] < 0.5  # from ~1 at the start
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert "output_std" in checkpoint["state_dict"]


def test_a_model_refusing_the_device_is_a_config_error(grid_search_path, tmp_path):
    overrides = [*RUN, grid_search_path, "problem=affine_grid", "model=picky_grid"]
    with pytest.raises(ConfigError, match=r"model\.spectral_precision=half cannot run on cpu"):
        run(compose_config(overrides, tmp_path))


# ------------------------------------------------------------ the real problems
TINY_GRID = [
    "problem.n_train=4",
    "problem.n_test=2",
    "problem.n_zero_shot=2",
    "model.hidden_channels=4",
    "model.n_modes=4",
    "trainer.max_steps=2",
    "val_every=2",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "plots=false",
]


@pytest.mark.parametrize(
    ("problem", "grid", "zero_shot"),
    [
        ("darcy", "problem.resolution=8", "problem.zero_shot_resolution=16"),
        ("burgers_operator", "problem.resolution=32", "problem.zero_shot_resolution=64"),
        ("ns_vorticity", "problem.resolution=16", "problem.zero_shot_resolution=32"),
    ],
)
def test_each_grid_problem_trains_on_h1_and_reports_both_grids(
    tmp_path, monkeypatch, problem, grid, zero_shot
):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    overrides = [*TINY_GRID, f"problem={problem}", grid, zero_shot, "problem.loss=h1"]
    summary = run(compose_config(overrides, tmp_path / "run"))
    assert summary["status"] == "ok", summary.get("error")
    field = {"darcy": "u", "burgers_operator": "u", "ns_vorticity": "w"}[problem]
    assert list(summary["l2"]) == [
        field,
        f"h1_{field}",
        f"zero_shot_{field}",
        f"zero_shot_h1_{field}",
    ]
    assert list(summary["final_losses"]) == ["h1", "total"]


def test_a_bad_generator_key_or_data_file_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(
        ConfigError, match=r"^problem\.generator\.hight is unknown; allowed: high, low"
    ):
        run(
            compose_config(
                [*TINY_GRID, "problem=darcy", "+problem.generator.hight=3"], tmp_path / "a"
            )
        )
    np.savez(tmp_path / "d.npz", x=np.ones((6, 8, 8)))
    bad = [*TINY_GRID, "problem=darcy", f"problem.data_path={tmp_path / 'd.npz'}"]
    with pytest.raises(ConfigError, match=r"problem\.data_path=.*d\.npz: d\.npz lacks y; expected"):
        run(compose_config(bad, tmp_path / "b"))
