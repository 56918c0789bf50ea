"""Operator learning: advection data, the DeepONet's indexed form, the operator module's losses
and errors, the physics conditions, and short training runs of every operator problem."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, load_generate_data_script
from omegaconf import OmegaConf

from mpsciml.config import ConfigError
from mpsciml.data.advection import PeriodicGaussianRandomField, make_advection_data
from mpsciml.data.functions import FunctionBatches
from mpsciml.models.deeponet import DeepONet
from mpsciml.modules.operator import OperatorModule, function_errors
from mpsciml.problems.diffusion_reaction import DiffusionReaction
from mpsciml.train import run

# Small enough that a run takes seconds: few functions, few points, few steps.
OPERATOR_TINY = {
    "antiderivative": ["problem.n_train=12", "problem.n_test=6", "problem.n_points=20"],
    "advection": [
        "problem.n_train=12",
        "problem.n_test=4",
        "problem.functions_per_step=6",
        "model.branch_hidden=[32]",
        "model.trunk_hidden=[32]",
        "model.latent=32",
    ],
    "diffusion_reaction": [
        "problem.n_train=8",
        "problem.n_test=3",
        "problem.functions_per_step=4",
        "problem.nx=21",
        "problem.nt=21",
        "problem.n_domain=16",
        "problem.n_boundary=8",
        "problem.n_initial=8",
        "model.branch_hidden=[16]",
        "model.trunk_hidden=[16]",
        "model.latent=16",
    ],
}
COMMON = [
    "trainer.max_steps=4",
    "val_every=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
]


@pytest.fixture(autouse=True)
def data_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))


def operator_config(problem: str, tmp_path: Path, *extra: str):  # type: ignore[no-untyped-def]
    overrides = [f"problem={problem}", *COMMON, *OPERATOR_TINY[problem], *extra]
    return compose_config(overrides, tmp_path / "run")


# ------------------------------------------------------------------ advection data
def test_periodic_field_has_the_kernel_as_covariance() -> None:
    field = PeriodicGaussianRandomField(length_scale=0.2)
    assert field.truncated_variance < 1e-10
    points = np.array([0.0, 0.05, 0.2, 0.5, 0.95])
    samples = field.evaluate(field.sample_coefficients(40_000, 3), points)
    covariance = np.cov(samples.T)
    expected = field.kernel(points[:, None] - points[None, :])
    # 40k samples: standard error of a covariance entry ~ sqrt(2 / 40k) = 0.007
    np.testing.assert_allclose(covariance, expected, atol=0.03)
    assert abs(samples.mean()) < 0.02


def test_advection_data_is_the_shifted_initial_condition() -> None:
    data = make_advection_data(5, nx=40, nt=40, seed=2)
    outputs = data["outputs"].reshape(5, 40, 40)  # (function, x, t), t fastest
    np.testing.assert_allclose(outputs[:, :, 0], data["branch"], atol=1e-12)  # u(x, 0) = v(x)
    # t = k dx shifts by exactly k grid cells: u(x_j, t) = v(x_{j-k}) (periodic)
    dx = 1.0 / 40
    shifted = make_advection_data(5, nx=40, nt=41, t_final=40 * dx, seed=2)
    u = shifted["outputs"].reshape(5, 40, 41)
    np.testing.assert_allclose(u[:, :, 3], np.roll(shifted["branch"], 3, axis=1), atol=1e-12)


def test_advection_solution_satisfies_the_pde() -> None:
    field = PeriodicGaussianRandomField(0.2)
    coefficients = field.sample_coefficients(3, 7)
    x, t, h = np.linspace(0.1, 0.9, 9), 0.37, 1e-5

    def u(x: np.ndarray, t: float) -> np.ndarray:
        return field.evaluate(coefficients, np.mod(x - t, 1.0))

    u_t = (u(x, t + h) - u(x, t - h)) / (2 * h)
    u_x = (u(x + h, t) - u(x - h, t)) / (2 * h)
    np.testing.assert_allclose(u_t + u_x, 0.0, atol=1e-6)


# ---------------------------------------------------------------- DeepONet forms
def test_indexed_form_equals_the_pointwise_form() -> None:
    torch.manual_seed(0)
    net = DeepONet(7, 2, out_features=2, branch_hidden=[9], trunk_hidden=[9], latent=5)
    branch, trunk = torch.randn(4, 7), torch.randn(10, 2)
    index = torch.tensor([0, 3, 3, 1, 2, 0, 0, 1, 2, 3])
    expected = net(branch[index], trunk)
    torch.testing.assert_close(net.forward_indexed(branch, trunk, index), expected)


# ----------------------------------------------------------------- module pieces
def test_function_errors_are_means_over_functions_of_relative_l2() -> None:
    reference = torch.tensor([[[3.0], [4.0]], [[1.0], [0.0]]])  # norms 5 and 1
    prediction = reference + torch.tensor([[[0.0], [0.5]], [[0.1], [0.0]]])  # errors 0.5, 0.1
    assert function_errors(prediction, reference, ("u",))["u"] == pytest.approx((0.1 + 0.1) / 2)


def test_relative_l2_loss_is_layout_independent(tmp_path: Path) -> None:
    """The mean relative L2 loss of unaligned rows equals that of the same pairs aligned."""
    aligned = run_module("antiderivative", tmp_path / "a", "problem.data_loss=rel_l2")
    module = aligned
    data = module.problem.train_data()
    prediction = module.model.forward_aligned(data.branch.float(), data.trunk.float())
    loss_aligned = module._data_loss(prediction, data.outputs.float(), None).mean()
    n, p = data.outputs.shape[:2]
    index = torch.arange(n).repeat_interleave(p)
    loss_rows = module._data_loss(
        prediction.reshape(n * p, -1), data.outputs.float().reshape(n * p, -1), index, n
    ).mean()
    torch.testing.assert_close(loss_rows, loss_aligned)
    error = (prediction - data.outputs.float()).pow(2).sum((1, 2)).sqrt()
    norm = data.outputs.float().pow(2).sum((1, 2)).sqrt()
    torch.testing.assert_close(loss_aligned, (error / norm).mean())


def run_module(problem: str, tmp_path: Path, *extra: str) -> OperatorModule:
    return build_module_and_data(problem, tmp_path, *extra)[0]


def build_module_and_data(
    problem: str, tmp_path: Path, *extra: str
) -> tuple[OperatorModule, FunctionBatches]:
    from mpsciml.compose import build

    module, _, parts = build(operator_config(problem, tmp_path, *extra))
    assert isinstance(module, OperatorModule)
    return module, parts["datamodule"]


def test_physics_points_carry_the_source_at_their_x(tmp_path: Path) -> None:
    problem = DiffusionReaction(n_train=5, n_test=2, nx=21, nt=21, n_domain=30)
    conditions = problem.physics_conditions()
    source = torch.from_numpy(problem._train_arrays()["source"])
    points, known = conditions["pde"].points, conditions["pde"].known
    column = torch.round(points[..., 0] * 20).long()
    torch.testing.assert_close(known[..., 0], torch.gather(source, 1, column))
    assert (points[..., 1] >= 0).all() and (points[..., 1] <= 1).all()
    assert (conditions["ic"].points[..., 1] == 0).all()
    assert set(conditions["bc"].points[..., 0].unique().tolist()) <= {0.0, 1.0}


def test_diffusion_reaction_residual_vanishes_on_a_manufactured_solution() -> None:
    """pde(d, v) = u_t - D u_xx - k u^2 - v is zero for u = sin(pi x) t and the matching v."""
    from mpsciml.derivatives.autograd import Derivatives

    problem = DiffusionReaction(n_train=2, n_test=1)
    xt = torch.rand(50, 2, dtype=torch.float64, requires_grad=True)
    x, t = xt[:, 0], xt[:, 1]
    u = torch.sin(math.pi * x) * t
    v = torch.sin(math.pi * x) * (1 + problem.diffusion * math.pi**2 * t) - problem.reaction * u**2
    d = Derivatives(xt, u[:, None], ("x", "t"), ("u",))
    residual = problem.pde(d, v.detach()[:, None])
    assert residual.abs().max() < 1e-12


# ------------------------------------------------------------------ training runs
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
@pytest.mark.parametrize("problem", sorted(OPERATOR_TINY))
def test_operator_problem_trains(tmp_path: Path, problem: str, precision: str) -> None:
    cfg = operator_config(problem, tmp_path, f"precision={precision}")
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert summary["status"] == "ok", summary.get("error")
    assert summary["model"] == "DeepONet"
    assert math.isfinite(summary["l2"]["u"])
    assert summary["precision"]["matmul_dtype"] == (
        "float16" if precision == "mixed" else "float32"
    )
    expected_terms = {"data"} if problem != "diffusion_reaction" else {"pde"}  # hard ic/bc
    assert set(summary["final_losses"]) == expected_terms | {"total"}
    assert json.loads((out / "summary.json").read_text())["steps"] == 4
    assert (out / "plots" / "u.png").stat().st_size > 5000
    header = (out / "metrics.csv").read_text().splitlines()[0]
    assert "val/l2_u" in header and "train/loss" in header


def test_unaligned_antiderivative_trains_and_learns(tmp_path: Path) -> None:
    cfg = operator_config(
        "antiderivative", tmp_path, "problem.layout=unaligned", "trainer.max_steps=300"
    )
    summary = run(cfg)
    assert summary["status"] == "ok"
    assert summary["l2"]["u"] < 0.5  # starts near 1: it learns from scattered points


def test_supervised_diffusion_reaction_adds_a_data_term(tmp_path: Path) -> None:
    summary = run(operator_config("diffusion_reaction", tmp_path, "problem.supervised=true"))
    assert set(summary["final_losses"]) == {"data", "pde", "total"}
    soft = "problem.hard_constraints=false"
    summary = run(operator_config("diffusion_reaction", tmp_path / "soft", soft))
    assert set(summary["final_losses"]) == {"pde", "ic", "bc", "total"}


def test_hard_constraints_make_initial_and_wall_values_exactly_zero(tmp_path: Path) -> None:
    """With problem.hard_constraints the ic/bc terms go and every prediction, in training
    (indexed) and in evaluation (aligned), is zero at t = 0 and on both walls."""
    module = run_module("diffusion_reaction", tmp_path, "problem.hard_constraints=true")
    assert module.term_names == ["pde"]
    edge = torch.tensor([[0.3, 0.0], [0.0, 0.6], [1.0, 0.2], [0.5, 0.5]])
    branch = torch.randn(3, module.problem.n_sensors)
    aligned = module._predict_aligned(branch, edge)
    indexed = module._predict_indexed(branch, edge, torch.tensor([0, 1, 2, 0]))
    assert (aligned[:, :3] == 0).all() and (indexed[:3] == 0).all()
    assert (aligned[:, 3] != 0).all() and indexed[3] != 0
    summary = run(operator_config("diffusion_reaction", tmp_path, "problem.hard_constraints=true"))
    assert summary["status"] == "ok" and set(summary["final_losses"]) == {"pde", "total"}


def test_physics_points_per_function_draws_distinct_pool_points(tmp_path: Path) -> None:
    """Each function keeps its own points and their source values; conditions without known
    values (ic, bc) sample the same way; a run with the option trains."""
    _, datamodule = build_module_and_data(
        "diffusion_reaction",
        tmp_path,
        "problem.physics_points_per_function=5",
        "problem.hard_constraints=false",
    )
    functions = datamodule.step_dataset().functions(0)  # 4 of the 8 (functions_per_step)
    physics = next(iter(datamodule.train_dataloader()))["physics"]
    pool = datamodule.conditions["pde"]
    points, known = physics["points"]["pde"], physics["known"]["pde"]
    assert points.shape == (4, 5, 2) and known.shape == (4, 5, 1)
    for slot, f in enumerate(functions.tolist()):
        rows = (pool.points[f, None] == points[slot, :, None]).all(-1).nonzero()[:, 1]
        assert len(rows.unique()) == 5  # five distinct points of this function's pool
        torch.testing.assert_close(known[slot], pool.known[f, rows])
    torch.testing.assert_close(physics["branch"], datamodule.physics_branch[functions])
    assert physics["known"]["ic"].shape == (4, 5, 0)
    option = "problem.physics_points_per_function=5"
    summary = run(operator_config("diffusion_reaction", tmp_path / "b", option))
    assert summary["status"] == "ok"


def test_unknown_loss_weight_names_the_terms(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="terms: data"):
        run(operator_config("antiderivative", tmp_path, "loss_weights={physics: 1}"))


def test_operator_problem_with_a_pointwise_model_is_a_clear_error(tmp_path: Path) -> None:
    message = (
        r"problem=antiderivative needs an operator on sensors model .*; "
        r"model=mlp accepts: pointwise; models that fit: .*deeponet"
    )
    with pytest.raises(ConfigError, match=message):
        run(operator_config("antiderivative", tmp_path, "model=mlp"))


def test_pde_problem_with_a_deeponet_is_a_clear_error(tmp_path: Path) -> None:
    cfg = compose_config(["model=deeponet", *COMMON], tmp_path / "run")
    message = (
        r"problem=burgers needs a pointwise model \(u\(x\) at points\); "
        r"model=deeponet accepts: operator on sensors; models that fit: .*mlp"
    )
    with pytest.raises(ConfigError, match=message):
        run(cfg)


def test_recipes_pin_the_papers_networks(tmp_path: Path) -> None:
    advection = OmegaConf.to_container(compose_config(["problem=advection"], tmp_path))
    assert advection["model"]["branch_hidden"] == [512]
    assert advection["model"]["trunk_hidden"] == [512, 512]
    assert advection["problem"]["data_loss"] == "rel_l2"
    reaction = OmegaConf.to_container(compose_config(["problem=diffusion_reaction"], tmp_path))
    assert reaction["model"]["activation"] == "tanh"
    assert reaction["model"]["branch_hidden"] == [128, 128]
    assert reaction["problem"]["m"] == 50


def test_diffusion_reaction_schedule_ends_at_the_same_fraction_for_any_length(
    tmp_path: Path,
) -> None:
    """The recipe's gamma follows trainer.max_steps: lr ends at 0.05x the start either way;
    the paper's experiment keeps its own setting (soft ic/bc, all points, fixed gamma)."""
    for steps in (12000, 500):
        cfg = compose_config(["problem=diffusion_reaction", f"trainer.max_steps={steps}"], tmp_path)
        gamma = cfg.optimizer.scheduler.gamma
        assert gamma**steps == pytest.approx(0.05, rel=1e-9)
    paper = compose_config(["experiment=paper_pi_deeponet"], tmp_path).problem
    assert not paper.hard_constraints and paper.physics_points_per_function is None


def test_generate_data_builds_exactly_what_the_recipes_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After scripts/generate_data.py, the default problems find every file in the cache."""
    from mpsciml.problems.advection import Advection
    from mpsciml.problems.antiderivative import Antiderivative

    script = load_generate_data_script(monkeypatch)
    root = tmp_path / "data"  # MPSCIML_DATA_DIR (the autouse fixture)
    # the grid sets (darcy, ns_vorticity, burgers_operator: ~1 min of CPU at their default sizes)
    # are checked at tiny sizes in tests/test_darcy_solver.py
    only = ["--only", "antiderivative", "advection", "diffusion_reaction"]
    assert script.main(["--data-dir", str(root), *only]) == 0
    files = sorted(root.iterdir())
    for problem in (Antiderivative(), Antiderivative(layout="unaligned"), Advection()):
        problem.train_data(), problem.test_data()
    reaction = DiffusionReaction()
    reaction.test_data(), reaction.physics_conditions()
    assert sorted(root.iterdir()) == files


def test_pod_deeponet_trains_from_the_command_line_config(tmp_path: Path) -> None:
    summary = run(operator_config("antiderivative", tmp_path, "model.pod_modes=5"))
    assert summary["status"] == "ok" and math.isfinite(summary["l2"]["u"])


def test_pod_trunk_needs_aligned_data_without_physics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="POD trunk exists only"):
        run(operator_config("diffusion_reaction", tmp_path, "model.pod_modes=5"))


def test_sampled_data_term_compares_prediction_and_target_at_the_same_points(
    tmp_path: Path,
) -> None:
    module, datamodule = build_module_and_data(
        "diffusion_reaction",
        tmp_path,
        "problem.supervised=true",
        "problem.data_points_per_function=7",
        "precision=fp64",
    )
    module.model.double()
    train = datamodule.train
    functions = datamodule.step_dataset().functions(0)
    batch = next(iter(datamodule.train_dataloader()))["data"]
    assert batch["points"].shape == (4 * 7, 2)
    index = batch["index"]
    assert index.tolist() == [n for n in range(4) for _ in range(7)]
    columns = (batch["points"][:, None] == train.trunk[None]).all(-1).int().argmax(-1)
    target = train.outputs[functions]
    torch.testing.assert_close(batch["outputs"], target[index, columns])
    aligned = module._predict_aligned(train.branch[functions], train.trunk)  # constraints too
    expected = aligned[index, columns] - target[index, columns]
    torch.testing.assert_close(module._data_term(batch).mean(), expected.pow(2).mean())


def test_advection_plot_grid_is_the_data_grid() -> None:
    """test_grid is built from the sizes alone; it must list the data's points in their order."""
    from mpsciml.problems.advection import Advection

    problem = Advection(n_train=2, n_test=2, nx=8, nt=5)
    torch.testing.assert_close(problem.test_grid().points, problem.test_data().trunk)


def test_a_run_reads_each_operator_dataset_once(tmp_path, monkeypatch):
    """The module, its DataModule and the evaluation all ask the problem for data; each split is
    read from the cache once per run, not once per asker."""
    import mpsciml.problems.advection as advection
    from mpsciml.compose import build

    reads: list[int] = []
    original = advection.cached_advection_data

    def counting(n, *args, **kwargs):
        reads.append(n)
        return original(n, *args, **kwargs)

    monkeypatch.setattr(advection, "cached_advection_data", counting)
    cfg = operator_config("advection", tmp_path)
    module, trainer, parts = build(cfg)
    trainer.fit(module, datamodule=parts["datamodule"])
    assert sorted(reads) == [4, 12]  # test, train: once each
