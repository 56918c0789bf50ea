"""Preemption: SIGTERM (what SLURM sends) during a run and during a sweep, and Ctrl+C.

A signalled run finishes its step, writes checkpoints/last.ckpt, records `status: interrupted`
with the signal and exits 128 + signal (143); `resume=<run folder>` then ends exactly where an
uninterrupted run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import assert_same_final_weights, compose_config

from mpsciml.callbacks.interruption import (
    SUBMITIT_SIGNAL,
    RunInterrupted,
    SignalGuard,
    StopOnSignal,
)
from mpsciml.train import run

ROOT = Path(__file__).resolve().parents[1]

# Long enough that the signal lands mid-training, short enough for the in-process comparisons.
STEPS = 200
RUN = [
    f"trainer.max_steps={STEPS}",
    "val_every=1000",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "optimizer=adam",
    "problem.n_domain=64",
    "plots=false",
    "threads=1",
]


def signal_once_training(runs: dict[str, tuple[list[str], Path]], logs: Path) -> dict[str, Any]:
    """Start `train.py <args>` for each run at once (they overlap, which halves the wait on
    start-up), send each SIGTERM as soon as its metrics.csv appears, i.e. once it trains;
    returns each run's exit code and output."""
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    processes = {}
    for name, (args, _) in runs.items():
        with open(logs / f"{name}.log", "w") as log:
            command = [sys.executable, "train.py", *args]
            processes[name] = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 240
    waiting = dict(processes)
    while waiting and time.monotonic() < deadline:
        for name, process in list(waiting.items()):
            if runs[name][1].exists() or process.poll() is not None:
                process.send_signal(signal.SIGTERM)
                del waiting[name]
        time.sleep(0.05)
    return {
        name: (process.wait(timeout=240), (logs / f"{name}.log").read_text())
        for name, process in processes.items()
    }


@pytest.fixture(scope="module")
def signalled(tmp_path_factory) -> dict[str, Any]:
    """A single run and a two-job sweep, each sent SIGTERM once it trains."""
    root = tmp_path_factory.mktemp("signalled")
    single, sweep = root / "single", root / "sweep"
    results = signal_once_training(
        {
            "single": ([*RUN, f"hydra.run.dir={single}"], single / "metrics.csv"),
            "sweep": (
                ["-m", *RUN, "seed=0,1", f"hydra.sweep.dir={sweep}"],
                sweep / "0" / "metrics.csv",
            ),
        },
        root,
    )
    return {"single": (single, *results["single"]), "sweep": (sweep, *results["sweep"])}


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_sigterm_checkpoints_the_step_and_resume_ends_like_an_uninterrupted_run(
    signalled, tmp_path, restore_threads
):
    folder, code, output = signalled["single"]
    assert code == 128 + signal.SIGTERM, output[-3000:]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] is None
    step = summary["interrupted"]["step"]
    assert summary["interrupted"]["signal"] == "SIGTERM" and 0 < step < STEPS
    assert summary["checkpoint"] == "checkpoints/last.ckpt"
    saved = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == step

    straight = run(compose_config(RUN, tmp_path / "straight"))
    resumed = run(compose_config([*RUN, f"resume={folder}"], tmp_path / "resumed"))
    assert resumed["status"] == "ok" and resumed["steps"] == STEPS
    assert resumed["l2"] == straight["l2"]
    assert resumed["final_losses"] == straight["final_losses"]
    assert_same_final_weights(straight, resumed)

    # the same command into the same folder (a requeued SLURM job) continues it there
    again = run(compose_config(RUN, folder))
    assert again["resumed_from"] == str(folder / "checkpoints" / "last.ckpt")
    assert again["status"] == "ok" and again["l2"] == straight["l2"]
    assert (folder / f"metrics-until-step{step}.csv").is_file()


def test_sigterm_in_a_sweep_records_the_job_and_stops_the_sweep_non_zero(signalled):
    """The remaining jobs do not run in a process that was told to stop (a scheduler requeues
    them); the signalled one is recorded, with its checkpoint."""
    sweep, code, output = signalled["sweep"]
    assert code == 128 + signal.SIGTERM, output[-3000:]
    summary = json.loads((sweep / "0" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["interrupted"]["signal"] == "SIGTERM"
    assert (sweep / "0" / "checkpoints" / "last.ckpt").is_file()
    assert not (sweep / "1" / "summary.json").exists()


def test_a_signal_outside_training_interrupts_at_once_with_its_exit_code():
    """No step to finish: Ctrl+C while building or evaluating stops there, exit 130."""
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(RunInterrupted) as stopped, SignalGuard():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises long before this ends
    assert stopped.value.code == 128 + signal.SIGINT and stopped.value.signal == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is previous


def test_while_training_a_signal_waits_for_the_step_and_a_second_one_does_not():
    with SignalGuard() as guard:
        guard.deferring = True
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.01)
        assert guard.pending == signal.SIGUSR1
        with pytest.raises(RunInterrupted, match="SIGTERM"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)


def test_after_the_checkpoint_submitit_gets_its_signal_to_requeue(tmp_path):
    """submitit's handler for its preemption signal (USR2) requeues the job and exits; it must
    run after the checkpoint is written, and the run is still recorded as interrupted."""
    calls = []

    def submitit_handler(signum, frame):
        calls.append((signum, (tmp_path / "last.ckpt").exists()))
        raise SystemExit(-1)

    layer = torch.nn.Linear(2, 2)
    trainer = SimpleNamespace(
        lightning_module=layer,
        global_step=7,
        save_checkpoint=lambda path, weights_only: Path(path).write_text("state"),
    )
    previous = signal.signal(SUBMITIT_SIGNAL, submitit_handler)
    try:
        with pytest.raises(SystemExit) as exited, SignalGuard() as guard:
            guard.deferring = True
            os.kill(os.getpid(), SUBMITIT_SIGNAL)
            time.sleep(0.01)
            StopOnSignal(str(tmp_path / "last.ckpt")).on_train_batch_end(trainer)
    finally:
        signal.signal(SUBMITIT_SIGNAL, previous)
    assert exited.value.code == -1 and calls == [(SUBMITIT_SIGNAL, True)]
    assert guard.stopped.signal == SUBMITIT_SIGNAL.name and guard.stopped.step == 7


def _agree_on_signal(rank: int, world_size: int) -> int | None:
    """Rank 1 alone has seen SIGTERM; both must stop on it at this step."""
    from mpsciml.callbacks.interruption import agreed_signal

    return agreed_signal(signal.SIGTERM if rank == 1 else None, world_size)


def test_ranks_stop_together_on_a_signal_only_one_of_them_received():
    from distributed_harness import run_ranks

    assert run_ranks(_agree_on_signal, 2, timeout=180) == [signal.SIGTERM, signal.SIGTERM]
