"""A ModelCheckpoint that never overwrites a good checkpoint with non-finite weights.

When a low-precision run blows up, the most useful file it can leave is its last finite state.
"""

from __future__ import annotations

import logging
import warnings

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)

# Lightning warns (with a code sample) on every run that, under manual optimisation, a checkpoint
# holds the weights after the step. That is what we want: the state the next step starts from.
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")


class FiniteCheckpoint(ModelCheckpoint):
    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key, computed once: Lightning reads it at every callback hook of
        every step (to name a profiler section, even with no profiler) and ModelCheckpoint
        builds it as a repr of its settings each time (~10 us, x5 hooks per step). The
        settings it names are fixed at construction, so the cached key is the same string."""
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self.__dict__["_cached_state_key"] = super().state_key
        return key

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            log.warning("not saving %s: the weights are not finite", filepath)
            return
        super()._save_checkpoint(trainer, filepath)
