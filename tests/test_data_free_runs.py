"""Data-free training on grids (issue 14): DiffNet on poisson_grid through the compose API, the
loss as each rank's part of the global mean, parameter batches as a function of (seed, step,
slot), Adam -> L-BFGS, resume, and the one-line error for a grid the network cannot halve."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, compose_config
from data_free_stub import TinyPoisson
from omegaconf import OmegaConf

from mpsciml.config import ConfigError, validate
from mpsciml.contract import ModelKind
from mpsciml.data.parameter_batches import FieldsPerStep, ParameterBatches
from mpsciml.data.steps import StepSampler
from mpsciml.factory import build_datamodule, build_module
from mpsciml.models.diffnet import DiffNet
from mpsciml.modules.data_free_grid import DataFreeGridModule
from mpsciml.train import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY_POISSON = [
    "problem=poisson_grid",
    "model=diffnet",
    "problem.grid=16",
    "problem.batch_size=4",
    "problem.n_test=2",
    "problem.modes=3",
    "model.width=4",
    "model.depth=2",
    "trainer.max_steps=8",
    "val_every=8",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "optimizer=adam",
    "optimizer.adam.lr=1e-2",
    "plots=false",
    "~callbacks",
]


@pytest.fixture(scope="module", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One cache for the file's held-out reference solutions."""
    path = tmp_path_factory.mktemp("data")
    before = os.environ.get("MPSCIML_DATA_DIR")
    os.environ["MPSCIML_DATA_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("MPSCIML_DATA_DIR", None)
    else:
        os.environ["MPSCIML_DATA_DIR"] = before


def losses(run_dir: Path) -> list[float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [float(r["train/loss"]) for r in rows if r.get("train/loss")]


def tiny_module(**options: object) -> DataFreeGridModule:
    cfg = OmegaConf.create({"adam": {"_target_": "torch.optim.Adam", "_partial_": True}})
    problem = TinyPoisson(grid=8, batch_size=5, n_test=2)
    model = DiffNet(1, 1, problem.grid, width=4, depth=1, **options)
    return DataFreeGridModule(problem, model, cfg)


# --------------------------------------------------------------- the loss
def test_rank_parts_of_an_uneven_split_add_up_to_the_full_batch_loss_and_gradient() -> None:
    """5 fields on 2 ranks (3 + 2): each part is sum / 5, so the parts add up to the full-batch
    mean, and so do their gradients (BatchNorm in eval mode here: with batch statistics the
    ranks' parts couple through the synchronised statistics, H4's sync_batchnorm tests)."""
    torch.manual_seed(0)
    module = tiny_module()
    module.model.eval()
    fields = module.problem.parameter_fields(0, 0, torch.arange(5)).float()

    def part(slots: list[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module.zero_grad()
        term = module.loss_terms({"inputs": fields[slots]})["energy"]
        term.backward()
        return term.detach(), [p.grad.clone() for p in module.parameters()]

    whole, whole_grads = part([0, 1, 2, 3, 4])
    (first, first_grads), (second, second_grads) = part([0, 2, 4]), part([1, 3])
    torch.testing.assert_close(first + second, whole, rtol=1e-6, atol=0)
    for a, b, full in zip(first_grads, second_grads, whole_grads, strict=True):
        torch.testing.assert_close(a + b, full, rtol=1e-5, atol=1e-7)


def test_loss_weights_default_to_the_problems_and_are_checked() -> None:
    cfg = OmegaConf.create({"adam": {"_target_": "torch.optim.Adam", "_partial_": True}})
    problem = TinyPoisson(grid=8, batch_size=2, n_test=1)
    problem.default_loss_weights = {"energy": 3.0}
    model = DiffNet(1, 1, problem.grid, width=2, depth=1)
    assert DataFreeGridModule(problem, model, cfg).loss_weights == {"energy": 3.0}
    assert DataFreeGridModule(problem, model, cfg, {"energy": 2}).loss_weights == {"energy": 2.0}
    with pytest.raises(ValueError, match=r"loss_weights\.pde names no loss term; terms: energy"):
        DataFreeGridModule(problem, model, cfg, {"pde": 1.0})


# ---------------------------------------------------------------- batches
def test_parameter_batches_are_a_function_of_seed_step_and_slot_on_any_split() -> None:
    problem = TinyPoisson(grid=8, batch_size=5)
    dataset = FieldsPerStep(problem, seed=3, steps=4)
    whole = [dataset[list(range(s * 5, s * 5 + 5))]["inputs"] for s in range(4)]
    assert not torch.equal(whole[0], whole[1])
    for ranks in (2, 3):
        for step in range(4):
            shares = []
            for rank in range(ranks):
                sampler = StepSampler(FieldsPerStep(problem, 3, 4), ranks, rank)
                shares.append(FieldsPerStep(problem, 3, 4)[list(sampler)[step]]["inputs"])
            dealt = torch.empty_like(whole[step])
            for rank, share in enumerate(shares):
                dealt[rank::ranks] = share
            torch.testing.assert_close(dealt, whole[step], rtol=0, atol=0)
    resumed = FieldsPerStep(problem, 3, 4)
    resumed.start_step = 2  # what a resumed loader sets
    torch.testing.assert_close(resumed[list(range(5))]["inputs"], whole[2], rtol=0, atol=0)


def test_an_lbfgs_phase_trains_on_one_frozen_batch() -> None:
    problem = TinyPoisson(grid=8, batch_size=2)
    dataset = FieldsPerStep(problem, seed=0, steps=6, freeze_at=3)
    batches = [dataset[[2 * s, 2 * s + 1]]["inputs"] for s in range(6)]
    assert not torch.equal(batches[2], batches[3])
    assert batches[3] is batches[4] is batches[5]  # the same tensors: cast and moved once


def test_the_factory_picks_the_data_free_solver_and_freezes_for_lbfgs(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_POISSON, "optimizer=adam_lbfgs"], tmp_path / "run")
    problem = TinyPoisson(grid=8, batch_size=2)
    model = DiffNet(1, 1, problem.grid, width=2, depth=1)
    module = build_module(cfg, problem, model)
    datamodule = build_datamodule(cfg, problem, module)
    assert isinstance(module, DataFreeGridModule) and isinstance(datamodule, ParameterBatches)
    assert datamodule.freeze_at == int(0.8 * 8)
    no_adam = [o for o in TINY_POISSON if not o.startswith("optimizer.adam")]
    lbfgs_only = compose_config([*no_adam, "optimizer=lbfgs"], tmp_path / "run")
    assert build_datamodule(lbfgs_only, problem, module).freeze_at == 0


def test_fixed_fields_train_every_step_on_the_fields_of_step_0(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_POISSON, "optimizer=adam", "fixed_fields=true"], tmp_path / "a")
    problem = TinyPoisson(grid=8, batch_size=2)
    module = build_module(cfg, problem, DiffNet(1, 1, problem.grid, width=2, depth=1))
    datamodule = build_datamodule(cfg, problem, module)
    assert datamodule.freeze_at == 0  # Adam too: one finite training set
    fresh = compose_config([*TINY_POISSON, "optimizer=adam"], tmp_path / "b")
    assert build_datamodule(fresh, problem, module).freeze_at is None
    dataset = datamodule.step_dataset()
    first, later = dataset[[0, 1]]["inputs"], dataset[[6, 7]]["inputs"]
    assert torch.equal(first, later)


def test_fixed_fields_on_a_problem_without_fields_is_one_line(tmp_path: Path) -> None:
    cfg = OmegaConf.create({"sampling": {"adaptive": None}, "fixed_fields": True})
    pinn = SimpleNamespace(model_kind=ModelKind.POINTWISE)
    with pytest.raises(ConfigError, match=r"^fixed_fields=true fixes a data-free grid problem"):
        build_datamodule(cfg, pinn, None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^fixed_fields='yes' is invalid: true"):
        validate(compose_config(["fixed_fields=yes"], tmp_path / "run"))


# ------------------------------------------------------------------- runs
def test_diffnet_trains_on_poisson_grid_and_reports_errors(tmp_path: Path) -> None:
    # nu = 1 in every field (log_nu_std 0): each step's batch poses the same problem, so the
    # loss curve shows training, not the spread between fresh random fields
    cfg = compose_config([*TINY_POISSON, "problem.log_nu_std=0"], tmp_path / "run")
    summary = run(cfg)
    assert summary["status"] == "ok", summary.get("error")
    assert summary["steps"] == 8
    assert set(summary["l2"]) == {"u", "h1_u"} and summary["fields"] == ["u"]
    assert 0 < summary["l2"]["u"] < 10
    curve = losses(tmp_path / "run")
    assert len(curve) == 8 and all(b < a for a, b in pairwise(curve))


def test_adam_then_lbfgs_runs_and_lbfgs_lowers_the_loss(tmp_path: Path) -> None:
    cfg = compose_config(
        [*TINY_POISSON, "optimizer=adam_lbfgs", "trainer.max_steps=5", "val_every=5",
         "optimizer.switch_step=3", "optimizer.lbfgs.max_iter=5"],
        tmp_path / "run",
    )  # fmt: skip
    summary = run(cfg)
    assert summary["status"] == "ok", summary.get("error")
    curve = losses(tmp_path / "run")
    assert curve[4] < curve[3]  # the two L-BFGS steps share one batch: the loss must fall


def test_a_resumed_run_continues_exactly(tmp_path: Path) -> None:
    """4 steps straight vs 2 steps + resume to 4: the same batches (seed, step) and the same
    optimiser state, so the same final loss to the last bit."""
    with_checkpoints = [o for o in TINY_POISSON if o != "~callbacks"]
    short = [*with_checkpoints, "val_every=2", "optimizer.scheduler=null"]  # T_max = max_steps
    straight = run(compose_config([*short, "trainer.max_steps=4"], tmp_path / "straight"))
    run(compose_config([*short, "trainer.max_steps=2"], tmp_path / "first"))
    resumed = run(
        compose_config(
            [*short, "trainer.max_steps=4", f"resume={tmp_path / 'first'}"], tmp_path / "resumed"
        )
    )
    assert resumed["status"] == "ok" and resumed["steps"] == 4
    assert resumed["final_losses"] == straight["final_losses"]
    assert resumed["l2"] == straight["l2"]


def test_model_fno_trains_data_free_too(tmp_path: Path) -> None:
    """The factory checks the kind only: any operator-on-grids model fits poisson_grid."""
    no_diffnet = [o for o in TINY_POISSON if not o.startswith("model.")]
    fno = ["model=fno", "model.hidden_channels=4", "model.n_modes=4", "model.n_layers=2"]
    cfg = compose_config([*no_diffnet, *fno, "trainer.max_steps=2", "val_every=2"], tmp_path / "r")
    summary = run(cfg)
    assert summary["status"] == "ok", summary.get("error")
    assert summary["model"] == "FNO" and set(summary["l2"]) == {"u", "h1_u"}


def test_diffnet_fits_darcy_on_data_too(tmp_path: Path) -> None:
    """...and DiffNet trains on a data-driven grid problem (Darcy's pairs) like the FNO."""
    darcy = [
        "problem=darcy", "model=diffnet", "model.width=4", "model.depth=2", "optimizer=adam",
        "trainer.max_steps=2", "val_every=2", "trainer.enable_progress_bar=false", "logger=none",
        "~callbacks", "plots=false", "problem.n_train=4", "problem.n_test=2",
        "problem.batch_size=2", "problem.resolution=8", "problem.zero_shot_resolution=16",
        "problem.n_zero_shot=2", "problem.generator.solve_grid=24", "problem.generator.modes=8",
    ]  # fmt: skip
    summary = run(compose_config(darcy, tmp_path / "r"))
    assert summary["status"] == "ok", summary.get("error")
    assert summary["model"] == "DiffNet" and "zero_shot_u" in summary["l2"]


def test_a_grid_the_network_cannot_halve_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    cfg = compose_config([*TINY_POISSON, "problem.grid=50", "model.depth=4"], tmp_path / "r")
    with pytest.raises(ValueError, match=r"model\.depth=4 .*grid \[50, 50\]") as info:
        run(cfg)
    assert "\n" not in str(info.value) and "model.depth<=1" in str(info.value)


@pytest.mark.slow  # a fresh interpreter: ~10 s quiet, 40 s on a busy 2-core machine
def test_a_grid_the_network_cannot_halve_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "problem=poisson_grid", "model=diffnet",
         "problem.grid=50", "model.depth=4", "logger=none", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "model.depth=4" in lines[0] and "[50, 50]" in lines[0]
    assert "Traceback" not in result.stderr
