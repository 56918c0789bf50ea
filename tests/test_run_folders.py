"""What a run leaves on shared storage: a folder of its own even when another run starts in the
same second, and a summary.json that anyone can read and any JSON parser accepts."""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, compose_config
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from mpsciml.config import unique_dir
from mpsciml.summary import write_summary

ROOT = Path(__file__).resolve().parents[1]


def test_run_and_sweep_folders_are_claimed_through_unique_dir(tmp_path):
    compose_config([], tmp_path)
    folders = OmegaConf.to_container(HydraConfig.get(), resolve=False)
    assert folders["run"]["dir"].startswith("${unique_dir:outputs/")
    assert folders["sweep"]["dir"].startswith("${unique_dir:${paths.sweep_root}/")


def test_a_config_file_replacing_the_sweep_folder_claims_no_folder(tmp_path, monkeypatch):
    # merging precision_study's own hydra.sweep.dir resolves the default it replaces
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["experiment=precision_study"], tmp_path / "run")
    OmegaConf.to_container(cfg, resolve=True)
    assert not (tmp_path / "outputs").exists()
    sweep_dir = OmegaConf.to_container(HydraConfig.get(), resolve=False)["sweep"]["dir"]
    assert sweep_dir.startswith("${unique_dir:${paths.sweep_root}/")
    assert cfg.paths.sweep_root == "outputs/multirun/precision_study"


def test_unique_dir_claims_the_next_free_suffix_and_keeps_it(tmp_path):
    base = tmp_path / "runs" / "12-00-00"
    base.mkdir(parents=True)  # another run already has it
    (tmp_path / "runs" / "12-00-00-1").mkdir()
    claimed = unique_dir(str(base))
    assert claimed == f"{base}-2" and Path(claimed).is_dir()
    assert unique_dir(str(base)) == claimed  # asked again in the same run: the same folder


# two train.py processes side by side, ~20 s idle: run with -m slow (unique_dir's claim
# logic itself is tested in-process above)
@pytest.mark.slow
def test_two_runs_started_in_the_same_second_get_two_folders(tmp_path):
    # both runs are given the same time stamp, as two SLURM array tasks starting together get
    base = tmp_path / "2026-01-01" / "12-00-00"
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "train.py",
                *TINY,
                f"seed={seed}",
                f"hydra.run.dir=${{unique_dir:{base}}}",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for seed in (1, 2)
    ]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    folders = sorted(p for p in base.parent.iterdir())
    assert [p.name for p in folders] == ["12-00-00", "12-00-00-1"]
    seeds = set()
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["status"] == "ok" and Path(summary["output_dir"]) == folder
        assert [p.name for p in (folder / "checkpoints").iterdir()] == ["last.ckpt"]
        seeds.add(summary["seed"])
        assert sum(str(folder) + "\n" in out for out in outputs) == 1  # each run names its own
    assert seeds == {1, 2}


def test_summary_is_readable_by_others_and_strict_json_when_a_run_diverged(tmp_path):
    summary = {
        "status": "diverged",
        "l2": {"u": math.nan, "v": 0.5},
        "final_losses": {"pde": math.inf, "ic": -math.inf},
        "switches": [{"step": 3, "scale": math.nan}],
    }
    old_umask = os.umask(0o022)
    try:
        write_summary(tmp_path / "summary.json", summary)
    finally:
        os.umask(old_umask)
    path = tmp_path / "summary.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temporary file left

    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    written = json.loads(path.read_text(), parse_constant=refuse)
    assert written["l2"] == {"u": None, "v": 0.5}
    assert written["final_losses"] == {"pde": None, "ic": None}
    assert written["switches"] == [{"step": 3, "scale": None}]
    assert written["non_finite"] == [
        "l2.u",
        "final_losses.pde",
        "final_losses.ic",
        "switches[0].scale",
    ]
    assert math.isnan(summary["l2"]["u"])  # the caller's summary is left as it was


@pytest.mark.parametrize("status", ["ok", "failed"])
def test_a_finite_summary_has_no_non_finite_flag(tmp_path, status):
    write_summary(tmp_path / "summary.json", {"status": status, "l2": {"u": 0.1}})
    assert "non_finite" not in json.loads((tmp_path / "summary.json").read_text())
