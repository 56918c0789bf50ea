"""Stop a run on SIGTERM, SIGUSR1 or SIGINT at the next step boundary, with a checkpoint.

SLURM sends SIGTERM before preemption or the time limit (SIGUSR1 with `--signal=USR1@<s>`);
Lightning's own SIGTERM handler ends `fit` with a bare `SystemExit`, so the run lost up to
`every_n_train_steps` steps and looked like a failure with exit code 0. Here the signal is only
noted while a step runs; at the end of that step `StopOnSignal` writes `checkpoints/last.ckpt`
(the same hook and contents as ModelCheckpoint's, so `resume=<run folder>` continues bitwise) and
raises `RunInterrupted`, a `SystemExit` with code 128 + signal number (143 for SIGTERM): the
shell, SLURM and a sweep all see a non-zero exit, and `run()` records `status: interrupted`.

Outside training (building, data generation, evaluation) a signal interrupts at once: there is
no step to finish. A second Ctrl+C interrupts at once too. Under submitit (hydra/launcher=
slurm_gpu) its preemption signal (USR2) is caught the same way, and once the checkpoint is
written submitit's own handler requeues the job, which then continues in the same folder.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from mpsciml.distributed.integrity import gather_ranks

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# submitit's preemption signal (USR2 unless SUBMITIT_PREEMPT_SIGNAL says otherwise); caught only
# when submitit installed a handler for it, which then runs after our checkpoint to requeue
SUBMITIT_SIGNAL = getattr(
    signal, f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}", signal.SIGUSR2
)


class RunInterrupted(SystemExit):
    """A run stopped by a signal: exits with 128 + the signal number, as a shell reports it."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: str | None = None):
        super().__init__(128 + int(signum))
        self.signal = signal.Signals(signum).name
        self.step = step
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        at = f" at step {self.step}" if self.step is not None else ""
        return f"{self.signal}{at}"


class SignalGuard:
    """Owns the stop signals for the length of one run (`with SignalGuard() as guard:`).

    While `deferring` (set by StopOnSignal during training) a signal is only remembered in
    `pending`; otherwise it raises RunInterrupted where the program is. `stopped` is the
    RunInterrupted that ended the run, if any, so `run()` can record it whatever exception
    finally reaches it (Lightning or submitit may wrap or replace ours).
    """

    active: SignalGuard | None = None

    def __init__(self) -> None:
        self.pending: int | None = None
        self.deferring = False
        self.stopped: RunInterrupted | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        return self.claim()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def claim(self) -> SignalGuard:
        """Take the stop signals over (only the main thread may set handlers)."""
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.getsignal(s) for s in self.signals()}
            self.install()
        SignalGuard.active = self
        return self

    def release(self) -> None:
        """Give the signals back to whoever had them before the run."""
        SignalGuard.active = None
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def signals(self) -> list[int]:
        chained = callable(signal.getsignal(SUBMITIT_SIGNAL))
        return [*STOP_SIGNALS, *([SUBMITIT_SIGNAL] if chained else [])]

    def install(self) -> None:
        """(Re)claim the signals: Lightning replaces the SIGTERM handler when `fit` starts."""
        if threading.current_thread() is threading.main_thread():
            for signum in self.previous:
                signal.signal(signum, self.handle)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.deferring and self.pending is None:
            self.pending = signum
            log.warning("%s received: stopping after this step with a checkpoint", name)
            return
        self.stopped = RunInterrupted(signum)
        if (handler := self.previous_handler(signum)) is not None:
            handler(signum, frame)  # submitit: requeue
        raise self.stopped

    def previous_handler(self, signum: int) -> Callable[..., Any] | None:
        """A Python handler that was there before us and must still run (submitit's requeue),
        not Python's default Ctrl+C one, which would only raise KeyboardInterrupt."""
        handler = self.previous.get(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            return handler
        return None


def agreed_signal(pending: int | None, world_size: int) -> int | None:
    """The signal every rank stops on. Under DDP the ranks notice a signal at different steps
    (SLURM signals each task on its own); one rank saving a checkpoint (a collective) or
    stopping while the others enter the next step's all-reduce would hang them all, so each
    step the ranks agree on the largest pending signal: one tiny exchange, under DDP only (an
    all-gather, `integrity.gather_ranks`: on gloo polled, and cheaper than a small all-reduce)."""
    if world_size <= 1 or not torch.distributed.is_initialized():
        return pending
    flag = torch.tensor([pending or 0], dtype=torch.int64)
    if torch.distributed.get_backend() == "nccl":
        flag = flag.cuda()
    return int(gather_ranks(flag).max().item()) or None


class StopOnSignal(Callback):
    """Turns a pending stop signal into a checkpoint at the step boundary and RunInterrupted."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = Path(checkpoint)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if (guard := SignalGuard.active) is not None:
            guard.install()
            guard.deferring = True

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.stop_if_signalled(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.stop_if_signalled(trainer)
        if (guard := SignalGuard.active) is not None:
            guard.deferring = False

    def on_exception(self, trainer: pl.Trainer, *args: Any) -> None:
        if (guard := SignalGuard.active) is not None:
            guard.deferring = False

    def stop_if_signalled(self, trainer: pl.Trainer) -> None:
        guard = SignalGuard.active
        if guard is None:
            return
        pending = agreed_signal(guard.pending, getattr(trainer, "world_size", 1))
        if pending is None:
            return
        signum, guard.deferring = pending, False
        saved = self.save(trainer)
        guard.stopped = RunInterrupted(signum, trainer.global_step, saved)
        log.warning(
            "interrupted by %s at step %d; %s",
            guard.stopped.signal,
            trainer.global_step,
            f"checkpoint {saved}" if saved else "no checkpoint (the weights are not finite)",
        )
        if (handler := guard.previous_handler(signum)) is not None:
            handler(signum, None)  # submitit: requeue this job, then it exits by itself
        raise guard.stopped

    def save(self, trainer: pl.Trainer) -> str | None:
        """Write the state after this step, unless its weights are not finite (then the last
        finite checkpoint stays, as with FiniteCheckpoint)."""
        if not all(torch.isfinite(p).all() for p in trainer.lightning_module.parameters()):
            return None
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(self.checkpoint, weights_only=False)  # the full training state
        return str(self.checkpoint)
