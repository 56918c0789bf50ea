"""trainer=ddp from the command line: real processes (gloo on the CPU), one summary per job, a
sweep that is never re-run by the children, and bad input refused before any process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config

from mpsciml.compose import build
from mpsciml.config import ConfigError
from mpsciml.distributed.environment import external_world
from mpsciml.distributed.launch import ChildObserver, job_command
from mpsciml.threads import choose_threads, usable_cores

ROOT = Path(__file__).resolve().parents[1]
DDP = ["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", *TINY]


def train_py(*args: str, tmp_path: Path, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0", **env_vars}
    return subprocess.run(
        [sys.executable, "train.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
    )


def processes_naming(marker: Path) -> list[int]:
    """Live processes whose command line names `marker` (a test's own folder): a DDP child that
    outlived its job would show up here."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(marker).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:  # ended while we looked
            continue
    return [pid for pid in found if pid != os.getpid()]


def no_process_left(marker: Path, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while processes_naming(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not processes_naming(marker)


def result_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(("ok:", "diverged:"))]


def test_two_processes_train_and_rank_zero_alone_writes(tmp_path):
    """~10 s idle: two processes start, train 3 steps on their shares, and only rank 0 reports:
    one result line, one summary.json recording the world; the child logs to a file of its own
    and is gone when the command returns."""
    run_dir = tmp_path / "run"
    result = train_py(*DDP, f"hydra.run.dir={run_dir}", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert len(result_lines(result.stdout)) == 1, result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 3
    distributed = summary["distributed"]
    assert (distributed["world_size"], distributed["strategy"]) == (2, "ddp")
    assert (distributed["backend"], distributed["launcher"]) == ("gloo", "ours")
    assert distributed["comm_precision"] is None and "sync_batchnorm" in distributed
    assert distributed["collective_wait"] == "poll"
    assert summary["cpu_threads"] == 1
    assert (run_dir / "train_rank1.log").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    assert no_process_left(run_dir)


# ~40 s idle: two jobs, each starting a DDP child
@pytest.mark.slow
def test_a_sweep_with_ddp_runs_each_job_once(tmp_path):
    """`-m seed=0,1 trainer=ddp`: exactly two jobs, each on two processes, the children being
    single runs of their job (Lightning's launcher would have re-run the sweep in each)."""
    sweep_dir = tmp_path / "sweep"
    result = train_py("-m", *DDP, "seed=0,1", f"hydra.sweep.dir={sweep_dir}", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert output.count("Launching 2 jobs") == 1, output
    assert len(result_lines(result.stdout)) == 2, result.stdout
    jobs = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir())
    assert jobs == ["0", "1"], jobs
    for job in jobs:
        summary = json.loads((sweep_dir / job / "summary.json").read_text())
        assert summary["seed"] == int(job) and summary["distributed"]["world_size"] == 2
        assert not (sweep_dir / job / "multirun.yaml").exists()  # no child ran a sweep
    assert no_process_left(sweep_dir)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ([f"trainer.devices={usable_cores() + 1}"], "trainer.devices"),
        pytest.param(["trainer.num_nodes=2"], "trainer.num_nodes", marks=pytest.mark.slow),
    ],
)
def test_ddp_that_cannot_run_here_is_one_line_and_no_process(tmp_path, overrides, key):
    """Refused before the problem is built and before any process starts: exit 2, one line
    naming the key, nothing left running, no run folder."""
    run_dir = tmp_path / "run"
    result = train_py(*DDP, *overrides, f"hydra.run.dir={run_dir}", tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {key}="), result.stderr
    assert "Traceback" not in output
    assert not run_dir.exists() and no_process_left(run_dir, within=1.0)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["trainer.strategy=ddp_spawn"], "trainer.strategy"),
        (["trainer.comm_precision=fp8"], "trainer.comm_precision"),
        (["trainer.sync_batchnorm=maybe"], "trainer.sync_batchnorm"),
        (["trainer.collective_wait=spin"], "trainer.collective_wait"),
        (["trainer.devices=0"], "trainer.devices"),
        (["trainer.devices=abc"], "trainer.devices"),
        (["trainer.num_nodes=2"], "trainer.num_nodes"),  # nothing starts the other node
        ([f"trainer.devices={usable_cores() + 1}"], "trainer.devices"),
    ],
)
def test_bad_ddp_values_are_one_line_before_anything_is_built(tmp_path, overrides, key):
    cfg = compose_config([*DDP, *overrides], tmp_path / "run")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    message = str(refused.value)
    assert message.startswith(f"{key}=") and "\n" not in message, message


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu_is_refused_before_anything_is_built(tmp_path):
    cfg = compose_config([*TINY, "trainer=gpu"], tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^trainer.accelerator='gpu' is invalid: no CUDA GPU"):
        build(cfg)


@pytest.fixture
def own_hydra_config():
    """The tests that edit Hydra's job config give the singleton back as they found it."""
    from hydra.core.hydra_config import HydraConfig

    saved = HydraConfig.instance().cfg
    yield
    HydraConfig.instance().cfg = saved


def test_joblib_cannot_host_ddp_jobs(tmp_path, own_hydra_config):
    """hydra/launcher=joblib runs jobs side by side: each DDP job is refused in its worker
    (one line in the sweep's log, the sweep goes on), no process is started."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    cfg = compose_config([*DDP, "hydra/launcher=joblib"], tmp_path / "run")
    hydra = HydraConfig.get()
    with read_write(hydra), open_dict(hydra):
        hydra.mode = RunMode.MULTIRUN
    with pytest.raises(ConfigError, match=r"^hydra/launcher=joblib is invalid with 2 DDP"):
        build(cfg)


def test_the_child_command_is_one_run_of_the_job_never_the_sweep(tmp_path, own_hydra_config):
    """What a DDP child runs, from inside the second job of `-m seed=0,1`: the job's overrides
    (seed=1, not seed=0,1), its folder, no -m, the user's Hydra options kept, the sweep's not."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    compose_config([*DDP, "seed=1"], tmp_path / "run")
    hydra = HydraConfig.get()
    with read_write(hydra), open_dict(hydra):
        hydra.runtime.output_dir = str(tmp_path / "sweep" / "1")
        hydra.overrides.hydra = ["hydra.mode=MULTIRUN", "hydra.sweep.dir=x", "hydra.verbose=true"]
    command, cwd = job_command(local_rank=1)
    assert "-m" not in command and "--multirun" not in command
    assert "seed=1" in command and "hydra.verbose=true" in command
    assert not any(arg.startswith(("hydra.mode", "hydra.sweep")) for arg in command)
    assert f"hydra.run.dir='{tmp_path / 'sweep' / '1'}'" in command
    assert "hydra.output_subdir=null" in command and cwd == hydra.runtime.cwd


FAIL_ON_RANK = """
import os
if os.environ.get("LOCAL_RANK", "0") == os.environ.get("MPSCIML_TEST_FAIL_RANK"):
    import torch

    def fail(self, *args, **kwargs):
        raise RuntimeError("injected failure")

    torch.optim.Adam.step = fail  # this process fails at its first optimiser step
"""


@pytest.mark.parametrize(
    "rank",
    [1, pytest.param(0, marks=pytest.mark.slow)],  # ~10 s idle each
)
def test_a_failure_in_any_rank_ends_every_process(tmp_path, rank):
    """A rank that raises mid-training (injected through sitecustomize) ends the job: exit
    non-zero, rank 0's summary says failed (naming the child that failed), and no process is
    left waiting in a collective for the one that is gone."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(FAIL_ON_RANK)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = train_py(
        *DDP,
        f"hydra.run.dir={run_dir}",
        tmp_path=tmp_path,
        PYTHONPATH=str(tmp_path / "inject"),
        MPSCIML_TEST_FAIL_RANK=str(rank),
    )
    assert result.returncode not in (0, 2), result.stdout + result.stderr
    assert time.monotonic() - started < 300  # no 30-minute collective timeout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    expected = "DDP: rank 1" if rank == 1 else "injected failure"
    assert expected in summary["error"], summary["error"]
    assert no_process_left(run_dir)


def test_a_failed_child_stops_the_others_and_the_first_process(tmp_path):
    """The observer sees a child's non-zero exit, kills the other children and, when the first
    process does not end by itself (blocked in a collective), calls its abort."""
    import mpsciml.distributed.launch as launch

    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    aborted: list[str] = []
    launch.GRACE_SECONDS, grace = 0.5, launch.GRACE_SECONDS
    try:
        observer = ChildObserver([failing, hanging], aborted.append)
        observer.start()
        observer.join(timeout=20)
    finally:
        launch.GRACE_SECONDS = grace
    assert hanging.poll() is not None  # killed
    assert aborted and "rank 1" in aborted[0] and "code 3" in aborted[0]


def test_threads_are_split_over_the_processes_of_a_node():
    small, large = torch.nn.Linear(2, 2), torch.nn.Linear(1000, 1001)
    assert choose_threads("auto", small, "cpu", processes=2, cores=8)[0] == 1
    used, why = choose_threads(None, large, "cpu", processes=2, cores=2)
    assert used == 1 and "2 processes on 2 cores" in why
    assert choose_threads(3, small, "cpu", processes=2, cores=2) == (
        3,
        "threads set (2 processes on 2 cores: oversubscribed)",
    )


def test_srun_and_torchrun_worlds_are_read_from_the_environment(monkeypatch):
    for name in ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert external_world() is None
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_NNODES", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_PROCID", "5")
    world = external_world()
    assert world is not None and (world.launcher, world.nodes, world.processes_per_node) == (
        "srun",
        4,
        2,
    )
    assert world.global_rank == 5
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: our launcher starts the node's others
    assert external_world() is None
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "abc")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    world = external_world()
    assert world is not None and (world.launcher, world.nodes, world.world_size) == (
        "torchrun",
        2,
        4,
    )


def test_an_srun_world_sets_nodes_and_processes_whatever_the_trainer_says(tmp_path, monkeypatch):
    """hydra/launcher=slurm_ddp hydra.launcher.nodes=2 tasks_per_node=2, no trainer=ddp: every
    task trains under DDP with the allocation's numbers, and the plan says where they came from.
    """
    from mpsciml.distributed.plan import plan_distributed

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    monkeypatch.delenv("SLURM_JOB_NAME", raising=False)
    for name, value in [("NTASKS", 4), ("NNODES", 2), ("NTASKS_PER_NODE", 2), ("PROCID", 3)]:
        monkeypatch.setenv(f"SLURM_{name}", str(value))
    cfg = compose_config([*TINY, "trainer=cpu"], tmp_path / "run")
    plan = plan_distributed(cfg, "cpu")
    assert (plan.strategy, plan.backend, plan.launcher) == ("ddp", "gloo", "srun")
    assert (plan.world_size, plan.nodes, plan.processes_per_node) == (4, 2, 2)
    assert "trainer.num_nodes=2 trainer.devices=2" in plan.notes[0]


def test_a_weight_dtype_change_under_ddp_is_refused(tmp_path):
    """bf16 weights -> fp32 for L-BFGS: DDP's gradient buckets keep bf16 (measured: L-BFGS failed
    on 2 processes, ran on 1); bf16_mixed keeps fp32 weights and is accepted."""
    from mpsciml.distributed.plan import plan_distributed

    refused = compose_config([*DDP, "precision=bf16", "optimizer=adam_lbfgs"], tmp_path / "a")
    with pytest.raises(ConfigError, match=r"^precision=bf16 is invalid with DDP and an L-BFGS"):
        plan_distributed(refused, "cpu")
    fine = compose_config([*DDP, "precision=bf16_mixed", "optimizer=adam_lbfgs"], tmp_path / "b")
    assert plan_distributed(fine, "cpu").world_size == 2


# ~25 s idle: two DDP runs
@pytest.mark.slow
def test_resume_under_ddp_continues_from_rank_zeros_checkpoint(tmp_path):
    """Rank 0 writes the checkpoint; `resume=` loads it on every process and trains on."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert train_py(*DDP, f"hydra.run.dir={first}", tmp_path=tmp_path).returncode == 0
    result = train_py(
        *DDP, "trainer.max_steps=5", f"resume={first}", f"hydra.run.dir={second}", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((second / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 5
    assert summary["resumed_from"] == str(first / "checkpoints" / "last.ckpt")
    assert no_process_left(tmp_path)


def test_a_joblib_sweep_of_ddp_jobs_is_refused_before_its_first_job(tmp_path, capsys):
    """The sweep-start check: one line, exit 2 (a swept trainer is still checked per job)."""
    from omegaconf import OmegaConf

    from mpsciml.distributed.sweep_check import DDPSweepCheck, processes_per_job

    joblib = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
    config = OmegaConf.create(
        {
            "hydra": {"launcher": {"_target_": joblib}, "sweep": {"dir": str(tmp_path / "s")}},
            "trainer": {"strategy": "ddp", "devices": 2},
        }
    )
    with pytest.raises(SystemExit) as stopped:
        DDPSweepCheck().on_multirun_start(config)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.startswith("error: hydra/launcher=joblib is invalid with 2 DDP")
    config.trainer = {"devices": 1}
    DDPSweepCheck().on_multirun_start(config)  # one process per job: joblib is fine
    nodes = OmegaConf.create({"strategy": "ddp", "devices": 2, "num_nodes": 3})
    assert processes_per_job(nodes) == 6
