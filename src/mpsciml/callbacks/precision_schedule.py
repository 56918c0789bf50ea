"""Change precision at given steps: low precision early, full precision late (Tu et al. 2024).

Early training tolerates the noise of fp16 and profits from its speed; the last digits of
accuracy need full precision. `precision.schedule=[{step: 3000, precision: fp32}]` does that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl

from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.registry import get_spec

log = logging.getLogger(__name__)


class PrecisionSchedule(pl.Callback):
    def __init__(self, schedule: Sequence[Mapping[str, Any]]) -> None:
        self.schedule = sorted(
            ((int(entry["step"]), str(entry["precision"])) for entry in schedule),
        )
        for _, name in self.schedule:
            get_spec(name)  # an unknown precision fails now, not thousands of steps later

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        plugin = trainer.precision_plugin
        if not isinstance(plugin, SciMLPrecision):
            return
        for step, name in self.schedule:
            if step == trainer.global_step and plugin.spec.name != name:
                log.warning("step %d: precision schedule %s -> %s", step, plugin.spec.name, name)
                plugin.switch_to(name, pl_module, trainer.optimizers, step)
                pl_module.log("precision/switch_step", float(step), batch_size=1)
