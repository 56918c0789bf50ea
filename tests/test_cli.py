"""The command line as a user meets it: help, --cfg job, and one clear line for a bad value."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config

from mpsciml.cli_errors import hydra_errors_in_one_line, remove_if_refused, users_hydra_full_error
from mpsciml.compose import build, check_checkpoint_fits
from mpsciml.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


def train_py(*args: str, tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **env_vars}
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


@pytest.mark.slow  # Hydra's own flag; the composition it prints is tested in-process
def test_cfg_job_shows_the_composed_config(tmp_path):
    result = train_py("--cfg", "job", "precision=mixed", "problem=navier_stokes", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mpsciml.problems.navier_stokes.NavierStokes" in result.stdout
    assert "name: mixed" in result.stdout
    assert "- 100" in result.stdout  # the recipe navier_stokes_mlp pins the paper's network


#: refused by `compose.build` (validate, the model's constructor, the checkpoint check, the
#: Trainer): the CLI path is the same, so these are checked in-process, their CLI twins in `slow`
REFUSED_BY_BUILD = [
    ("optimizer.adam.lr=-1", "optimizer.adam.lr"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("model.activation=swish", "model.activation"),
    ("loss_weights={typo: 2}", "loss_weights.typo"),
    ("resume=README.md", "resume"),  # a file, not a checkpoint: the check before training
    ("+trainer.nosuch=1", "nosuch"),  # a key Lightning's Trainer does not take
]


@pytest.mark.parametrize(("override", "key"), REFUSED_BY_BUILD)
def test_bad_value_is_one_line_naming_the_key_before_anything_runs(tmp_path, override, key):
    cfg = compose_config([*TINY, override], tmp_path / "run")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    message = str(refused.value)
    assert "\n" not in message and key in message, message


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("problem=unknown", "problem"),  # Hydra: unknown group option
        # the same Hydra path as problem=unknown (an unknown group option): slow
        pytest.param("precision=fp8", "precision", marks=pytest.mark.slow),
        ("model.hiden=3", "model.hiden"),  # Hydra: misspelt key
        *[pytest.param(*case, marks=pytest.mark.slow) for case in REFUSED_BY_BUILD],
    ],
)
def test_bad_value_stops_with_one_clear_line(tmp_path, override, key):
    """Exit 2, one `error:` line naming the key, no traceback, and no run folder left behind
    (report.py would count it as a failed run)."""
    result = train_py(override, "logger=csv", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and key in error_lines[0], result.stderr
    assert not (tmp_path / "run").exists(), sorted(p.name for p in (tmp_path / "run").iterdir())


def test_start_up_prints_no_noise(tmp_path):
    """The messages every run used to print and a user had to read past (issue 12): Lightning's
    litlogger tip, the CSV logger's 'directory exists and is not empty', W&B's 'anonymous setting
    has no effect' and torch's _pytree deprecation; the default loggers (W&B offline + CSV)."""
    result = train_py(
        "trainer.max_steps=2",
        "val_every=1",
        "optimizer=adam",
        "problem.n_domain=64",
        "plots=false",
        tmp_path=tmp_path,
        WANDB_SILENT="false",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert (tmp_path / "run" / "metrics.csv").is_file()
    for noise in ("litlogger", "exists and is not empty", "anonymous", "LeafSpec"):
        assert noise not in output


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Files that `resume=` may wrongly name: a checkpoint of another network size (hidden [8]
    where the config says the recipe's [32, 32, 32]), the same file truncated, and plain text."""
    folder = tmp_path_factory.mktemp("checkpoints")
    cfg = compose_config([*TINY, "model.hidden=[8]"], folder / "run")
    module, _, _ = build(cfg)
    other_size = folder / "other_size.ckpt"
    torch.save({"state_dict": module.state_dict(), "global_step": 3}, other_size)
    truncated = folder / "truncated.ckpt"
    truncated.write_bytes(other_size.read_bytes()[:2000])
    text = folder / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    return {"other_size": other_size, "truncated": truncated, "text": text}


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["seed=-1"], "seed"),
        (["seed=4294967296"], "seed"),
        (["problem.n_domain=0"], "problem.n_domain"),
        (["problem=navier_stokes", "problem.n_outlet=-1"], "problem.n_outlet"),
        (["precision.schedule=[{step: 1, precision: nosuch}]"], "precision.schedule[0].precision"),
        (["precision.schedule=[{step: abc, precision: fp32}]"], "precision.schedule[0].step"),
        (["precision.schedule=[{step: 10, precision: fp32}]"], "precision.schedule[0].step"),
        (["logger=wandb", "logger.wandb.project='a/b c?*#%'"], "logger.wandb.project"),
        (["model.hidden=abc"], "model.hidden"),
        (["model.hidden=[1.5,2.7]"], "model.hidden"),
        (["resample_every=0"], "resample_every"),
        (["resample_every=-1"], "resample_every"),
        (["optimizer.adam.lr=inf"], "optimizer.adam.lr"),
        (["loss_weights={pde: inf}"], "loss_weights.pde"),
        (["resume=<text>"], "resume"),
        (["resume=<truncated>"], "resume"),
        (["resume=<other_size>"], "resume"),
    ],
)
def test_bad_input_is_refused_before_training_in_one_line(tmp_path, checkpoints, overrides, key):
    """Each bad input of issue 12 stops in build(), before any step, with a ConfigError whose
    one line starts with the key (train.py prints it as `error:` and exits 2, tested above)."""
    overrides = [re.sub(r"<(\w+)>", lambda m: str(checkpoints[m[1]]), o) for o in overrides]
    cfg = compose_config([*TINY, *overrides], tmp_path / "run")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    message = str(refused.value)
    assert message.startswith(f"{key}=") and "\n" not in message, message
    assert "weights_only=False" not in message


def test_a_checkpoint_of_the_same_network_passes_the_check(tmp_path, checkpoints):
    cfg = compose_config([*TINY, "model.hidden=[8]"], tmp_path / "run")
    module, _, _ = build(cfg)
    check_checkpoint_fits(str(checkpoints["other_size"]), module)


def test_only_a_folder_with_nothing_but_a_refused_run_is_removed(tmp_path):
    refused, used = tmp_path / "refused", tmp_path / "used"
    for folder in (refused, used):
        (folder / ".hydra").mkdir(parents=True)
        (folder / ".hydra" / "config.yaml").write_text("seed: -1\n")
        (folder / "summary.json").write_text('{"status": "failed"}\n')
        (folder / "train.log").write_text("")
    (used / "metrics.csv").write_text("step\n")  # e.g. a folder the user pointed hydra.run.dir at
    assert remove_if_refused(refused, "train.log") and not refused.exists()
    assert not remove_if_refused(used, "train.log") and (used / "metrics.csv").is_file()


def test_a_folder_whose_summary_is_not_failed_stays(tmp_path):
    finished = tmp_path / "finished"  # e.g. an ok run whose checkpoints were moved elsewhere
    (finished / ".hydra").mkdir(parents=True)
    (finished / "summary.json").write_text('{"status": "ok"}\n')
    assert not remove_if_refused(finished, "train.log") and finished.is_dir()
    (finished / "summary.json").unlink()  # no summary at all: nothing says it was refused
    assert not remove_if_refused(finished, "train.log") and finished.is_dir()


@pytest.mark.parametrize("users", [None, "0"])
def test_hydra_full_error_is_ours_only_while_hydra_composes(monkeypatch, users):
    if users is None:
        monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    else:
        monkeypatch.setenv("HYDRA_FULL_ERROR", users)
    with hydra_errors_in_one_line():
        assert os.environ["HYDRA_FULL_ERROR"] == "1"  # composition errors raise, to be caught
        users_hydra_full_error()  # the task starts
        assert os.environ.get("HYDRA_FULL_ERROR") == users
    assert os.environ.get("HYDRA_FULL_ERROR") == users
    users_hydra_full_error()  # outside: changes nothing
    assert os.environ.get("HYDRA_FULL_ERROR") == users
