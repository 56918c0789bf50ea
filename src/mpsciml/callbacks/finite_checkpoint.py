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
    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            log.warning("not saving %s: the weights are not finite", filepath)
            return
        super()._save_checkpoint(trainer, filepath)
