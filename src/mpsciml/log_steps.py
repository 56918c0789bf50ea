"""When Lightning writes logged values to the loggers, asked through the Trainer's public state.

Each `self.log` costs ~0.3 ms of Python, as much as a small PINN's backward pass, so values are
only logged on the steps that are written (`trainer.log_every_n_steps`). Lightning keeps its own
answer in a private connector; under our manual optimisation one batch is one optimizer step, so
the global step after the step gives the same answer from public attributes.
"""

from __future__ import annotations

import pytorch_lightning as pl


def is_log_step(trainer: pl.Trainer) -> bool:
    """True on the steps whose logged values reach the loggers; call after the optimizer step."""
    every = trainer.log_every_n_steps
    if every <= 0:
        return False
    return trainer.global_step % every == 0 or trainer.should_stop
