"""Wall time of every training step, the basis of every speed claim a run makes.

On CUDA the clock is read after a synchronisation, otherwise it would time the kernel launches
rather than the work.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch

from mpsciml.log_steps import is_log_step


class StepTimer(pl.Callback):
    """Logs `perf/step_ms`; the summary takes the median after `warmup` steps."""

    def __init__(self, warmup: int = 5) -> None:
        self.warmup = warmup
        self.step_seconds: list[float] = []
        self._start = 0.0
        self._cuda: torch.device | None = None  # the device to synchronise, decided at start

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._cuda = pl_module.device if pl_module.device.type == "cuda" else None

    def _now(self, pl_module: pl.LightningModule) -> float:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return time.perf_counter()

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._start = self._now(pl_module)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        seconds = self._now(pl_module) - self._start
        self.step_seconds.append(seconds)
        if is_log_step(trainer):  # an unwritten self.log costs ~0.3 ms
            pl_module.log("perf/step_ms", 1000 * seconds, batch_size=1)

    def state_dict(self) -> dict[str, Any]:
        """Saved with the checkpoint, so a resumed run's median covers the whole run."""
        return {"step_seconds": list(self.step_seconds)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.step_seconds = list(state_dict.get("step_seconds", []))

    def median_ms(self) -> float | None:
        steady = self.step_seconds[self.warmup :] or self.step_seconds
        return 1000 * statistics.median(steady) if steady else None
