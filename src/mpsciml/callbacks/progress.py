"""The training progress bar, at no per-step cost: the loss is read where the step left it.

Lightning's bars show what was logged with `self.log(..., prog_bar=True)`, so showing the loss
meant a `self.log` on every step: ~0.3 ms of Python in Lightning's result collection per step,
which made `python train.py` with its bar 1.3-1.9x slower than with it off on a small PINN
(issue 15). `LossProgressBar` instead reads `pl_module.last_terms["total"]`, the loss the step
kept anyway, with one `.item()` on the steps it redraws (every `refresh_rate` steps); between
them it does nothing. Values reach the loggers only on Lightning's log steps (the module's
`_log_losses`); the validation errors the module logs with `prog_bar=True` are shown as before.

Under DDP the loss the bar shows is the global one: every rank, not only the one that draws,
sums its part on the same refresh steps (`SciMLModule.global_terms`, one tiny all-reduce).
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

#: steps between redraws: a redraw costs ~0.2 ms (tqdm + Lightning's metric dictionary), so at
#: 20 it is ~1% of a 1 ms step and invisible at 10 ms, while the bar still moves several times a
#: second for any step under 50 ms
DEFAULT_REFRESH_RATE = 20


class LossProgressBar(TQDMProgressBar):
    """A TQDM bar showing `loss` (the last step's total loss) and the logged validation errors."""

    def __init__(self, refresh_rate: int = DEFAULT_REFRESH_RATE, **kwargs: Any) -> None:
        if int(refresh_rate) < 1:
            raise ValueError(
                f"progress bar refresh_rate={refresh_rate} must be an integer >= 1 "
                "(trainer.enable_progress_bar=false turns the bar off)"
            )
        super().__init__(refresh_rate=int(refresh_rate), **kwargs)
        self.loss: float | None = None
        self.loss_reads = 0  # `.item()` calls made, one per redraw (tested)

    def refreshes(self, batch_idx: int) -> bool:
        """Whether the bar redraws after this batch: the same answer on every rank (the drawing
        rank and the silent ones), so the all-reduce under DDP happens on all of them."""
        n = batch_idx + 1
        bar = self._train_progress_bar  # made on every rank, disabled on all but the first
        total = bar.total if bar is not None else None  # the epoch's length, set at its start
        return n % self.refresh_rate == 0 or n == total

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if not self.refreshes(batch_idx):
            return
        self.read_loss(pl_module)
        bar = self._train_progress_bar
        if bar is not None and self.is_enabled and not bar.disable:
            bar.n = batch_idx + 1
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def read_loss(self, pl_module: pl.LightningModule) -> None:
        """The last step's total loss as a float: one `.item()` (a host read; a sync on CUDA)."""
        terms = getattr(pl_module, "global_terms", None)
        last = terms() if callable(terms) else getattr(pl_module, "last_terms", {})
        total = last.get("total") if isinstance(last, dict) else None
        if total is not None:
            self.loss = float(total.item())
            self.loss_reads += 1

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """Lightning's items (the version, values logged with `prog_bar=True`) and `loss`."""
        items = super().get_metrics(trainer, pl_module)
        if self.loss is not None:
            items["loss"] = self.loss if math.isfinite(self.loss) else str(self.loss)
        return items
