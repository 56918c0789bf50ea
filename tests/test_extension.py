"""A user extends mpsciml without touching it: a new problem, a new pointwise model and a new
operator model, written as a package in a temporary directory with their yamls in a config
directory added through Hydra's search path, each trained for a few steps."""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import compose_config

from mpsciml.config import ConfigError
from mpsciml.train import run

ROOT = Path(__file__).resolve().parents[1]

PROBLEM = '''
"""-u'' = pi^2 sin(pi x) on [-1, 1], u(+-1) = 0: exact solution sin(pi x)."""

import math

import torch

from mpsciml.contract import ModelKind
from mpsciml.problems.base import Condition, Problem
from mpsciml.problems.sampling import Box


class Poisson1D(Problem):
    model_kind = ModelKind.POINTWISE
    input_names = ("x",)
    output_names = ("u",)
    domain = Box(low=(-1.0,), high=(1.0,))

    def __init__(self, n_domain=32, sampling="sobol", evaluation_grid=(101,)):
        super().__init__(sampling=sampling, evaluation_grid=evaluation_grid)
        self.n_domain = n_domain

    def pde(self, d):
        return d("u", "x", "x") + math.pi**2 * torch.sin(math.pi * d.coordinate("x"))

    def boundary(self, d):
        return d["u"]

    def conditions(self, seed):
        box, method = self.domain, self.sampling
        return {
            "pde": Condition(box.interior(self.n_domain, method, seed), self.pde),
            "bc": Condition(box.faces(2, method, seed), self.boundary),
        }

    def reference(self, points):
        return torch.sin(math.pi * points[:, :1].double().cpu())
'''

MODELS = '''
"""Two models of our own: a residual MLP (pointwise) and a low-rank operator on sensors."""

import torch
from torch import nn

from mpsciml.contract import ModelKind, SensorOperatorBase


class ResidualMLP(nn.Module):
    accepts = (ModelKind.POINTWISE,)

    def __init__(self, in_features, out_features, width=16, depth=2):
        super().__init__()
        self.lift = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.project = nn.Linear(width, out_features)

    def forward(self, x):
        h = torch.tanh(self.lift(x))
        for block in self.blocks:
            h = h + torch.tanh(block(h))
        return self.project(h)


class LowRankOperator(SensorOperatorBase):
    """G(v)(y)_o = sum_r (A v)_{r,o} phi_{r,o}(y): linear in v, a learned basis in y."""

    def __init__(self, n_sensors, coord_dim, out_features=1, rank=8, width=16):
        super().__init__()
        self.out_features, self.rank = out_features, rank
        self.coefficients = nn.Linear(n_sensors, rank * out_features, bias=False)
        self.basis = nn.Sequential(
            nn.Linear(coord_dim, width), nn.Tanh(), nn.Linear(width, rank * out_features)
        )

    def forward_indexed(self, branch, points, index):
        c = self.coefficients(branch)[index].unflatten(-1, (self.out_features, self.rank))
        phi = self.basis(points).unflatten(-1, (self.out_features, self.rank))
        return (c * phi).sum(-1)
'''

YAMLS = {
    "problem/poisson1d.yaml": """
        # @package _global_
        problem:
          _target_: mpext.poisson.Poisson1D
          n_domain: 32
    """,
    "model/resmlp.yaml": """
        _target_: mpext.models.ResidualMLP
        width: 16
        depth: 2
    """,
    "model/lowrank.yaml": """
        _target_: mpext.models.LowRankOperator
        rank: 8
        width: 16
    """,
}

TINY = [
    "trainer.max_steps=3",
    "val_every=3",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "optimizer=adam",
    "plots=false",
]


def write_extension(root: Path) -> Path:
    """The package mpext under root and its config directory; returns the config directory."""
    package = root / "mpext"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "poisson.py").write_text(PROBLEM)
    (package / "models.py").write_text(MODELS)
    conf = root / "conf"
    for name, text in YAMLS.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(textwrap.dedent(text).lstrip())
    return conf


@pytest.fixture
def extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The search-path override for the extension's configs, its package importable."""
    conf = write_extension(tmp_path / "ext")
    monkeypatch.syspath_prepend(str(tmp_path / "ext"))
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    yield f"hydra.searchpath=[file://{conf}]"
    for name in [name for name in sys.modules if name.split(".")[0] == "mpext"]:
        del sys.modules[name]  # the next test's package lives in another directory


def run_extension(search_path: str, out: Path, *overrides: str) -> dict:
    summary = run(compose_config([*TINY, search_path, *overrides], out))
    assert summary["status"] == "ok", summary.get("error")
    assert all(math.isfinite(error) for error in summary["l2"].values())
    return summary


def test_new_problem_trains_with_the_mlp(extension: str, tmp_path: Path) -> None:
    summary = run_extension(extension, tmp_path / "run", "problem=poisson1d", "model=mlp")
    assert summary["problem"] == "Poisson1D" and list(summary["l2"]) == ["u"]


def test_new_pointwise_model_trains_on_burgers_and_records_autograd(
    extension: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Taylor mode cannot run through a residual block: the run says so and uses autograd."""
    overrides = ["problem=burgers", "model=resmlp", "problem.n_domain=64", "derivatives=taylor"]
    with caplog.at_level(logging.WARNING, logger="mpsciml.derivatives.engine"):
        summary = run_extension(extension, tmp_path / "run", *overrides)
    assert summary["model"] == "ResidualMLP"
    engine = summary["derivatives"]
    assert (engine["requested"], engine["used"]) == ("taylor", "autograd")
    assert "ResidualMLP" in engine["reason"]
    assert any("ResidualMLP" in record.getMessage() for record in caplog.records)


def test_new_operator_model_learns_the_antiderivative(extension: str, tmp_path: Path) -> None:
    sizes = ["problem.n_train=12", "problem.n_test=6", "problem.n_points=20"]
    choice = ["problem=antiderivative", "model=lowrank", *sizes]
    summary = run_extension(extension, tmp_path / "run", *choice)
    assert summary["model"] == "LowRankOperator"
    # unaligned data: the indexed form alone, at random points per function
    run_extension(extension, tmp_path / "unaligned", *choice, "problem.layout=unaligned")


def test_mismatch_hint_lists_the_extension_models(extension: str, tmp_path: Path) -> None:
    cfg = compose_config([*TINY, extension, "problem=poisson1d", "model=lowrank"], tmp_path)
    with pytest.raises(ConfigError) as error:
        run(cfg)
    message = str(error.value)
    assert message.startswith("problem=poisson1d needs a pointwise model")
    assert "model=lowrank accepts: operator on sensors" in message
    fitting = message.split("; models that fit: ")[1].split(", ")
    assert "resmlp" in fitting and "mlp" in fitting and "lowrank" not in fitting


@pytest.mark.slow  # one CLI start; the same extension trains in-process in the tests above
def test_extension_runs_from_the_command_line(tmp_path: Path) -> None:
    conf = write_extension(tmp_path / "ext")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "ext"), os.environ.get("PYTHONPATH", "")]),
        "MPSCIML_DATA_DIR": str(tmp_path / "data"),
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "0",
    }
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "problem=poisson1d",
            "model=resmlp",
            *TINY,
            f"hydra.searchpath=[file://{conf}]",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok: relative L2 u "), result.stdout
