"""The contract between problems and models (`mpsciml.contract`), the factory that reads it, and
the derivative engine a run records: declarations are compared, never class names; a mismatch
is one line; a Taylor-mode request the model cannot honour is a logged, recorded fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import compose_config
from test_cli import train_py
from torch import nn

from mpsciml import factory
from mpsciml.config import ConfigError
from mpsciml.contract import SIZES, ModelKind, SensorOperator, SensorOperatorBase
from mpsciml.derivatives.engine import choose_operator_engine, choose_pointwise_engine
from mpsciml.factory import check_model_fits, model_options_accepting
from mpsciml.models.deeponet import DeepONet
from mpsciml.models.mlp import MLP
from mpsciml.problems.antiderivative import Antiderivative
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.diffusion_reaction import DiffusionReaction
from mpsciml.problems.navier_stokes import NavierStokes
from mpsciml.train import run

TINY = [
    "trainer.max_steps=2",
    "val_every=2",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "optimizer=adam",
    "plots=false",
]
TINY_ANTIDERIVATIVE = ["problem.n_train=12", "problem.n_test=6", "problem.n_points=20"]


@pytest.fixture(autouse=True)
def data_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))


# ------------------------------------------------------------------ declarations
@pytest.mark.parametrize(
    ("problem", "kind"),
    [
        (Burgers(), ModelKind.POINTWISE),
        (NavierStokes(), ModelKind.POINTWISE),
        (Antiderivative(), ModelKind.SENSOR_OPERATOR),
        (DiffusionReaction(), ModelKind.SENSOR_OPERATOR),
    ],
)
def test_problems_declare_their_kind_and_its_sizes(problem, kind) -> None:
    assert problem.model_kind is kind
    assert tuple(problem.model_sizes()) == SIZES[kind]


def test_models_declare_what_they_accept() -> None:
    assert MLP.accepts == (ModelKind.POINTWISE,)
    assert DeepONet.accepts == (ModelKind.SENSOR_OPERATOR,)
    net = DeepONet(4, 1, branch_hidden=[8], trunk_hidden=[8])
    assert isinstance(net, SensorOperator)
    assert not isinstance(MLP(1, 1), SensorOperator)


class _Outer(SensorOperatorBase):
    """G(v)(y) = (w . v) * y: the aligned form comes from the base class."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.arange(1.0, 4.0))

    def forward_indexed(self, branch, points, index):  # type: ignore[no-untyped-def]
        return (branch @ self.weight)[index, None] * points


def test_sensor_operator_base_gives_the_aligned_form_from_the_indexed_one() -> None:
    model = _Outer()
    branch, trunk = torch.randn(4, 3), torch.rand(5, 1)
    aligned = model.forward_aligned(branch, trunk)
    assert aligned.shape == (4, 5, 1)
    expected = (branch @ model.weight)[:, None, None] * trunk[None]
    torch.testing.assert_close(aligned, expected)
    index = torch.tensor([3, 0])
    torch.testing.assert_close(
        model.forward_indexed(branch, trunk[:2], index), aligned[index, [0, 1]]
    )
    assert isinstance(model, SensorOperator) and model.accepts == (ModelKind.SENSOR_OPERATOR,)


# ----------------------------------------------------------------------- factory
def test_model_options_are_discovered_from_the_config_search_path(tmp_path: Path) -> None:
    compose_config(["logger=csv"], tmp_path / "run")  # sets the HydraConfig of a job
    pointwise = model_options_accepting(ModelKind.POINTWISE)
    assert "mlp" in pointwise and "deeponet" not in pointwise
    assert "deeponet" in model_options_accepting(ModelKind.SENSOR_OPERATOR)
    assert "mlp" not in model_options_accepting(ModelKind.SENSOR_OPERATOR)
    assert model_options_accepting(ModelKind.GRID_OPERATOR) == ["diffnet", "fno", "neuralop_fno"]


def test_a_model_class_without_accepts_is_one_line(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model._target_=torch.nn.Identity"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model=mlp: Identity declares no `accepts`") as error:
        check_model_fits(cfg, Burgers())
    assert "\n" not in str(error.value)


def test_an_unimportable_model_class_is_one_line(tmp_path: Path) -> None:
    cfg = compose_config([*TINY, "model._target_=nowhere.Model"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model._target_=nowhere.Model cannot be imp") as error:
        check_model_fits(cfg, Burgers())
    assert "\n" not in str(error.value)


def test_a_kind_without_a_solver_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every kind has a solver today; a kind added to the contract before its solver must still
    # stop with one line, not a KeyError
    monkeypatch.delitem(factory.SOLVERS, ModelKind.GRID_OPERATOR)

    class GridProblem:
        model_kind = ModelKind.GRID_OPERATOR

    cfg = compose_config(TINY, tmp_path / "run")
    with pytest.raises(ConfigError, match="no solver for operator on grids problems yet"):
        check_model_fits(cfg, GridProblem())


@pytest.mark.parametrize(
    ("args", "line", "fits", "does_not_fit"),
    [
        pytest.param(
            ["problem=navier_stokes", "model=deeponet"],
            "error: problem=navier_stokes needs a pointwise model (u(x) at points); "
            "model=deeponet accepts: operator on sensors",
            "mlp",
            "deeponet",
            # one CLI start (~10 s); the message is checked in-process, and a ConfigError's CLI
            # path (one line, exit 2) stays in the fast suite through test_ddp_cli's refusal
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ["problem=antiderivative", "model=mlp"],
            "error: problem=antiderivative needs an operator on sensors model (G(v)(y) from v "
            "at sensors); model=mlp accepts: pointwise",
            "deeponet",
            "mlp",
            marks=pytest.mark.slow,  # the same CLI path as above; the message is checked in-process
        ),
    ],
)
def test_mismatch_on_the_command_line_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], line: str, fits: str, does_not_fit: str
) -> None:
    result = train_py(*args, "logger=csv", tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1, result.stderr
    message, hint = errors[0].split("; models that fit: ")
    assert message == line
    assert fits in hint.split(", ") and does_not_fit not in hint.split(", ")


# ------------------------------------------------------------ derivative engine
def test_taylor_on_an_mlp_runs_taylor(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        engine = choose_pointwise_engine("taylor", MLP(2, 1, [8]))
    assert engine.as_dict() == {"requested": "taylor", "used": "taylor", "reason": None}
    assert not caplog.records


def test_taylor_on_a_model_it_refuses_falls_back_with_a_logged_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8), nn.Tanh(), nn.Linear(8, 1))
    with caplog.at_level(logging.WARNING, logger="mpsciml.derivatives.engine"):
        engine = choose_pointwise_engine("taylor", model)
    assert (engine.requested, engine.used) == ("taylor", "autograd")
    assert engine.reason is not None and "LayerNorm" in engine.reason
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "LayerNorm" in warnings[0] and "autograd" in warnings[0]
    assert choose_operator_engine("autograd").reason is None
    with pytest.raises(ValueError, match="derivatives='forward' is unknown"):
        choose_pointwise_engine("forward", model)


def test_summary_records_the_engine_that_ran(tmp_path: Path) -> None:
    taylor = run(compose_config([*TINY, "problem.n_domain=64", "derivatives=taylor"], tmp_path))
    assert taylor["status"] == "ok"
    assert taylor["derivatives"] == {"requested": "taylor", "used": "taylor", "reason": None}
    overrides = [*TINY, "problem=antiderivative", *TINY_ANTIDERIVATIVE, "derivatives=taylor"]
    operator = run(compose_config(overrides, tmp_path / "operator"))
    assert operator["status"] == "ok"
    recorded = operator["derivatives"]
    assert (recorded["requested"], recorded["used"]) == ("taylor", "autograd")
    assert "query points" in recorded["reason"]


def test_wandb_config_gets_the_engine_that_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An offline run keeps its config in a binary log, so the update itself is watched."""
    from wandb.sdk.wandb_config import Config

    updates: list[dict] = []
    original = Config.update

    def watched(self: Config, d: dict, allow_val_change: bool | None = None) -> None:
        updates.append(dict(d))
        original(self, d, allow_val_change=allow_val_change)

    monkeypatch.setattr(Config, "update", watched)
    cfg = compose_config([*TINY, "problem.n_domain=64", "logger=wandb"], tmp_path)
    summary = run(cfg)
    used = [update for update in updates if "derivatives_used" in update]
    assert len(used) == 1 and "precision_used" in used[0]
    assert used[0]["derivatives_used"] == summary["derivatives"]
    assert summary["derivatives"] == {"requested": "autograd", "used": "autograd", "reason": None}
