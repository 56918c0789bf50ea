"""The command line as a user meets it: help, --cfg job, and one clear line for a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def train_py(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, "train.py", *args, f"hydra.run.dir={tmp_path}/run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_help_lists_groups_and_options(tmp_path):
    """Every group folder of conf/ (Hydra's own aside) with every yaml in it, as `--help` prints
    it: `group: a, b, c`; a new option needs no edit here."""
    result = train_py("--help", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.splitlines()
    groups = sorted(path for path in CONF_DIR.iterdir() if path.is_dir() and path.name != "hydra")
    assert {"precision", "problem", "model", "optimizer", "recipe"} <= {g.name for g in groups}
    for group in groups:
        names = ", ".join(sorted(path.stem for path in group.glob("*.yaml")))
        assert f"{group.name}: {names}" in listed


def test_cfg_job_shows_the_composed_config(tmp_path):
    result = train_py("--cfg", "job", "precision=mixed", "problem=navier_stokes", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mpsciml.problems.navier_stokes.NavierStokes" in result.stdout
    assert "name: mixed" in result.stdout
    assert "- 100" in result.stdout  # the recipe navier_stokes_mlp pins the paper's network


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("problem=unknown", "problem"),
        ("precision=fp8", "precision"),
        ("optimizer.adam.lr=-1", "optimizer.adam.lr"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("model.activation=swish", "model.activation"),
        ("loss_weights={typo: 2}", "loss_weights.typo"),
    ],
)
def test_bad_value_stops_with_one_clear_line(tmp_path, override, key):
    result = train_py(override, "logger=csv", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert key in output
    assert "Traceback" not in output
    if "=" in override and not override.startswith(("problem=", "precision=")):
        error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(error_lines) == 1 and key in error_lines[0], result.stderr
