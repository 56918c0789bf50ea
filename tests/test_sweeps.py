"""`train.py -m`: one W&B run per job, failures recorded without stopping the sweep, launchers
(joblib, SLURM) and the Optuna sweeper; each sweep is a real subprocess on tiny runs."""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONF_DIR, TINY
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

import mpsciml.sweep
from mpsciml.config import ConfigError, validate
from mpsciml.sweep import (
    SweepReport,
    check_objective,
    failed_objective,
    objective_value,
    sweep_exit_code,
)
from mpsciml.train import run

ROOT = Path(__file__).resolve().parents[1]
QUICK = [o for o in TINY if not o.startswith("logger=")]  # these tests choose their logger


def sweep(*args: str, sweep_dir: Path, unset: tuple[str, ...] = (), returncode: int = 0) -> str:
    """Run `train.py -m <args>` into `sweep_dir`; returns its output, asserting the exit code
    (1 when a job failed)."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, "train.py", "-m", *args, f"hydra.sweep.dir={sweep_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k not in unset},
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == returncode, output[-3000:]
    return output


def summaries(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/summary.json")}


def wandb_records(run_file: Path) -> list[Any]:
    """The protobuf records of an offline run's `run-<id>.wandb` file (a LevelDB-style log:
    7-byte file header, 32 KiB blocks, records of crc32, uint16 length, uint8 type, payload)."""
    from wandb.proto.wandb_internal_pb2 import Record

    data, position, pending, records = run_file.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # the rest of a block is padding
            position += 32768 - position % 32768
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        if position + 7 + length > len(data):  # a record still being written
            break
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run(job_dir: Path, wait_seconds: float = 60.0) -> dict[str, Any]:
    """What the job's one offline W&B run holds: id, group, tags, exit code, artifacts.

    `finish()` returns once wandb's service has the exit record, but the service writes the
    run file through a buffer that it flushes when it closes the run's stream, a moment later
    (CI caught a file with no record in it yet). A finished run ends with its exit record, so
    this waits for that record, up to `wait_seconds`, before reading the run."""
    (run_file,) = job_dir.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.monotonic() + wait_seconds
    records = wandb_records(run_file)
    while not any(r.WhichOneof("record_type") == "exit" for r in records):
        if time.monotonic() > deadline:
            break  # the assertions on the run's facts say what is missing
        time.sleep(0.2)
        records = wandb_records(run_file)
    facts: dict[str, Any] = {"artifacts": []}
    for record in records:
        kind = record.WhichOneof("record_type")
        if kind == "run":
            facts.update(id=record.run.run_id, group=record.run.run_group, tags=record.run.tags)
        elif kind == "exit":
            facts["exit_code"] = record.exit.exit_code
        elif kind == "artifact":
            facts["artifacts"].append(record.artifact.name)
    return facts


def test_grid_gives_one_finished_wandb_run_per_job_in_one_group(tmp_path):
    sweep_dir = tmp_path / "grid"
    sweep("precision=fp32,mixed", *QUICK, "logger=wandb", sweep_dir=sweep_dir)
    found = summaries(sweep_dir)
    assert sorted(found) == ["0", "1"]
    assert all(s["status"] == "ok" for s in found.values())
    runs = {job: wandb_run(sweep_dir / job) for job in found}
    assert len({r["id"] for r in runs.values()}) == 2
    assert {r["group"] for r in runs.values()} == {"grid"}  # the sweep folder's name
    assert all(r["exit_code"] == 0 for r in runs.values())
    for job, summary in found.items():
        assert summary["wandb"]["id"] == runs[job]["id"]
        expected = f"precision:{summary['precision']['requested']}"
        assert {expected, f"seed:{summary['seed']}", "problem:burgers"} <= set(runs[job]["tags"])


def test_failing_jobs_are_recorded_and_the_sweep_goes_on(tmp_path):
    # an unknown activation fails while building (ConfigError, before W&B starts); eps=-1 is
    # refused by torch.optim.Adam inside fit, after the job's W&B run began
    sweep_dir = tmp_path / "planted"
    output = sweep(
        "model.activation=tanh,nonexistent",
        "optimizer.adam.eps=1e-8,-1.0",
        *QUICK,
        "logger=wandb",
        sweep_dir=sweep_dir,
        returncode=1,  # all jobs ran; the exit code says that some failed
    )
    found = summaries(sweep_dir)
    assert sorted(found) == ["0", "1", "2", "3"]
    ok = [job for job, s in found.items() if s["status"] == "ok"]
    assert len(ok) == 1
    invalid_eps = [job for job, s in found.items() if "Invalid epsilon" in s.get("error", "")]
    assert len(invalid_eps) == 1 and found[invalid_eps[0]]["status"] == "failed"
    assert "Traceback" in found[invalid_eps[0]]["traceback"]
    config_errors = [job for job, s in found.items() if "nonexistent" in s.get("error", "")]
    assert len(config_errors) == 2
    assert all(found[job]["status"] == "failed" for job in config_errors)
    # the failed job's W&B run was finished with a failure code; the next job got its own
    failed_run, ok_run = wandb_run(sweep_dir / invalid_eps[0]), wandb_run(sweep_dir / ok[0])
    assert failed_run["exit_code"] == 1 and ok_run["exit_code"] == 0
    assert failed_run["id"] != ok_run["id"]
    assert not list((sweep_dir / config_errors[0]).glob("wandb/offline-run-*"))
    assert output.count("job failed, the sweep goes on") == 3
    assert "1 ok" in output and "3 failed" in output  # the end-of-sweep line names them
    failed = sorted(job for job in found if job not in ok)
    assert f"failed jobs: {', '.join(failed)}" in output
    # the report reads the sweep, failures included
    report = subprocess.run(
        [sys.executable, "scripts/report.py", str(sweep_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    table = (sweep_dir / "report.md").read_text()
    assert "Invalid epsilon" in table and "nonexistent" in table
    assert (sweep_dir / "report_l2.png").stat().st_size > 5000


def test_a_sweep_run_again_into_its_folder_skips_the_jobs_that_ended_ok(tmp_path):
    sweep_dir = tmp_path / "resumed"
    jobs = ("model.activation=tanh,nonexistent", *QUICK)
    first = sweep(*jobs, sweep_dir=sweep_dir, returncode=1)
    assert "1 failed, 1 ok; failed jobs: 1" in first
    finished = (sweep_dir / "0" / "summary.json").stat().st_mtime_ns
    again = sweep(*jobs, sweep_dir=sweep_dir, returncode=1)  # job 1 fails again
    assert f"skipped: already ok in an earlier run of this sweep | {sweep_dir / '0'}" in again
    assert "1 failed, 1 skipped; failed jobs: 1" in again
    assert (sweep_dir / "0" / "summary.json").stat().st_mtime_ns == finished  # not run again
    overrides = summaries(sweep_dir)["0"]["overrides"]  # what tells a job from another
    assert overrides[0] == "model.activation=tanh" and len(overrides) == 1 + len(QUICK)


def fake_job(sweep_dir: Path, job: str, status: str | None) -> None:
    (sweep_dir / job / ".hydra").mkdir(parents=True)
    if status is not None:
        summary = {"status": status, "error": "boom" if status == "failed" else None}
        (sweep_dir / job / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize(
    ("statuses", "failed"),
    [
        (["failed", "failed"], ["0", "1"]),  # all failed
        (["ok", None, "diverged"], ["1"]),  # a job killed before writing its summary
        (["ok", "diverged"], []),  # diverged runs are results, not failures
    ],
)
def test_the_sweep_exit_code_says_whether_a_job_failed(tmp_path, statuses, failed):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    report = SweepReport()
    report.on_multirun_start(config)
    for job, status in enumerate(statuses):  # the jobs of this sweep
        fake_job(tmp_path, str(job), status)
    report.on_multirun_end(config)
    named = [line.split(":")[0] for line in mpsciml.sweep.last_sweep_failures or []]
    assert named == failed
    assert sweep_exit_code() == (1 if failed else 0)


def test_a_failed_job_left_by_an_earlier_larger_sweep_is_not_this_sweeps_failure(tmp_path):
    fake_job(tmp_path, "0", "ok")
    fake_job(tmp_path, "1", "failed")  # seed=0,1 before; now seed=0 only
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    report = SweepReport()
    report.on_multirun_start(config)
    report.on_multirun_end(config)  # job 0 skipped as ok, job 1 not part of this sweep
    assert mpsciml.sweep.last_sweep_failures == [] and sweep_exit_code() == 0


# ~50 s idle (two loky workers, each importing Lightning): run with -m slow
@pytest.mark.slow
def test_optuna_trials_run_in_parallel_on_joblib_and_the_best_value_is_written(tmp_path):
    # one sweep for both recipes (each subprocess costs ~15 s of imports on this machine):
    # the Optuna sweeper asks for 2 trials at once, the joblib launcher runs them side by side
    sweep_dir = tmp_path / "optuna"
    output = sweep(
        "hparams_search=optuna_burgers",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *QUICK,
        "logger=wandb",  # its interpolations need our resolvers in the loky workers
        sweep_dir=sweep_dir,
        unset=("OMP_NUM_THREADS",),  # let the launcher choose, as it would for a user
    )
    assert "Joblib.Parallel(n_jobs=2" in output
    found = summaries(sweep_dir)
    assert sorted(found) == ["0", "1"] and all(s["status"] == "ok" for s in found.values())
    # loky gives each worker cores // n_jobs threads; our resolvers work in its workers
    assert {s["cpu_threads"] for s in found.values()} == {max(1, (os.cpu_count() or 1) // 2)}
    assert {s["wandb"]["group"] for s in found.values()} == {"optuna"}
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    mean_l2 = [sum(s["l2"].values()) / len(s["l2"]) for s in found.values()]
    assert best["best_value"] == min(mean_l2)
    assert set(best["best_params"]) == {"optimizer.adam.lr", "hidden_width"}
    configs = [
        yaml.safe_load((sweep_dir / j / ".hydra" / "config.yaml").read_text()) for j in found
    ]
    assert {c["hidden_width"] for c in configs} <= {16, 32, 48, 64}


def test_slurm_launcher_recipe_composes():
    cfg = compose_with_hydra(
        "hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu", "experiment=precision_study"
    )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min > 0 and launcher.cpus_per_task > 0 and launcher.mem_gb > 0
    assert cfg.hydra.sweeper.params.precision == "fp32,mixed,bf16_mixed,fp16"


def test_log_model_stores_the_final_checkpoint_as_an_offline_artifact(tiny_config):
    cfg = tiny_config("logger=wandb", "logger.wandb.log_model=true")
    summary = run(cfg)
    facts = wandb_run(Path(cfg.paths.output_dir))
    assert summary["status"] == "ok" and summary["checkpoint"] == "checkpoints/last.ckpt"
    assert facts["artifacts"] == [f"model-{facts['id']}"]
    assert facts["exit_code"] == 0  # logged before the run was finished
    assert summary["wandb"]["group"] is None and facts["group"] == ""  # no group in a single run


def compose_with_hydra(*overrides: str) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(
    ("experiment", "expected"),
    [
        # Adam only: the experiment's optimizer wins over the burgers_mlp recipe's L-BFGS
        ("paper_burgers", {"trainer.max_steps": 20000, "optimizer.lbfgs": None}),
        ("paper_burgers_cpu", {"trainer.max_steps": 2000, "optimizer.switch_step": None}),
        ("paper_kovasznay", {"optimizer.switch_step": 10000, "derivatives": "taylor"}),
        ("precision_study", {"trainer.max_steps": 4000, "optimizer.lbfgs": None}),
    ],
)
def test_experiment_values_win_over_the_problem_recipe(experiment, expected):
    cfg = compose_with_hydra(f"experiment={experiment}")
    for key, value in expected.items():
        assert OmegaConf.select(cfg, key) == value, key
    assert experiment.split("_cpu")[0] in cfg.tags
    validate(cfg)


def test_problem_recipe_top_level_keys_win_over_config_defaults():
    # config.yaml's own keys are defaults (_self_ before problem), so a recipe can pin them
    assert compose_with_hydra("problem=navier_stokes").derivatives == "taylor"
    assert compose_with_hydra("problem=navier_stokes", "derivatives=autograd").derivatives == (
        "autograd"
    )


def test_objective_values_and_what_a_failure_returns():
    summary = {"l2": {"u": 0.1, "v": 0.3}, "step_ms": 12.5}
    assert objective_value(summary, "l2") == pytest.approx(0.2)
    assert objective_value(summary, ["l2_v", "step_ms"]) == [0.3, 12.5]
    # a grid run's H1 and zero-shot errors sit next to the fields' L2 but are not averaged in
    grid = {"l2": {"w": 0.1, "h1_w": 0.5, "zero_shot_w": 0.3}, "fields": ["w"]}
    assert objective_value(grid, "l2") == pytest.approx(0.1)
    # nan would abort an Optuna study inside study.tell; +inf is a complete, bad trial
    assert objective_value({"l2": {"u": math.nan}}, "l2") == math.inf
    assert objective_value({"status": "failed"}, "l2") == math.inf
    assert failed_objective(["l2", "step_ms"]) == [math.inf, math.inf]
    with pytest.raises(ConfigError, match="l2_w"):
        check_objective("l2_w", ("u", "v", "p"))
    cfg = compose_with_hydra("objective=loss")
    with pytest.raises(ConfigError, match="objective"):
        validate(cfg)
