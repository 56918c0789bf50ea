"""Change precision at given steps: low precision early, full precision late (Tu et al. 2024).

Early training tolerates the noise of fp16 and profits from its speed; the last digits of
accuracy need full precision. `precision.schedule=[{step: 3000, precision: fp32}]` does that.

An entry may also switch a spectral model's own precision (`contract.SpectralPrecisionControl`:
our FNO, the neuraloperator wrapper), alone or together with the run's precision, as Tu et al.'s
experiments do (half + tanh, then mixed from 80% of the steps, full for the last 5%):

    precision.schedule=[{step: 800, spectral_precision: mixed},
                        {step: 950, spectral_precision: full, precision: fp32}]

Both kinds of switch are resume-safe. The run's precision is part of the plugin's checkpoint
state; the spectral precision lives on the model, outside the checkpoint, so at every batch
start the mode the schedule prescribes for that step is compared with the model's and restored
if they differ (a resumed run starts from the config's mode). Only a switch at its own step is
recorded (`switches`, in the summary under `spectral.switches`); the record itself is in this
callback's checkpoint state, so a resumed run's summary tells the whole run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from torch import nn

from mpsciml.contract import SPECTRAL_PRECISIONS, SpectralPrecisionControl
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.registry import get_spec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Switch:
    """One entry: at `step`, the run's precision and/or the spectral precision change."""

    step: int
    precision: str | None = None
    spectral_precision: str | None = None


def parse_schedule(schedule: Sequence[Mapping[str, Any]]) -> list[Switch]:
    """The entries sorted by step; an unknown name fails now, not thousands of steps later."""
    switches = []
    for index, entry in enumerate(schedule):
        precision = entry.get("precision")
        spectral = entry.get("spectral_precision")
        if precision is None and spectral is None:
            raise ValueError(
                f"precision.schedule[{index}]={dict(entry)!r} is invalid: give precision and/or "
                "spectral_precision"
            )
        if precision is not None:
            get_spec(str(precision))
        if spectral is not None and spectral not in SPECTRAL_PRECISIONS:
            raise ValueError(
                f"precision.schedule[{index}].spectral_precision={spectral!r} is invalid: "
                f"allowed: {', '.join(SPECTRAL_PRECISIONS)}"
            )
        switches.append(
            Switch(
                int(entry["step"]),
                None if precision is None else str(precision),
                None if spectral is None else str(spectral),
            )
        )
    return sorted(switches, key=lambda s: s.step)


def spectral_model(module: nn.Module) -> SpectralPrecisionControl | None:
    """The network of a LightningModule (or the module itself) if it has spectral layers."""
    model = getattr(module, "model", module)
    return model if isinstance(model, SpectralPrecisionControl) else None


def check_spectral_schedule(switches: Sequence[Switch], model: Any, device: str) -> None:
    """Before training: a spectral entry needs a spectral model, and every mode the schedule
    switches to must run on `device` (the model's `check_device`, asked for each mode); a
    ValueError with one line otherwise."""
    modes = [s.spectral_precision for s in switches if s.spectral_precision is not None]
    if not modes:
        return
    if not isinstance(model, SpectralPrecisionControl):
        raise ValueError(
            f"precision.schedule switches spectral_precision, but {type(model).__name__} has no "
            "spectral layers (model=fno or model=neuralop_fno have); drop spectral_precision "
            "from the schedule"
        )
    current = model.spectral_precision
    try:
        for mode in dict.fromkeys(modes):
            model.set_spectral_precision(mode)
            try:
                model.check_device(device)
            except ValueError as exc:
                raise ValueError(f"precision.schedule switches to {exc}") from None
    finally:
        model.set_spectral_precision(current)


class PrecisionSchedule(pl.Callback):
    def __init__(self, schedule: Sequence[Mapping[str, Any]]) -> None:
        self.switches_planned = parse_schedule(schedule)
        #: the spectral precision before the first switch (the config's), set at fit start
        self.initial_spectral: str | None = None
        #: the spectral switches made, {"step", "from", "to"}; the run's precision switches are
        #: the plugin's `switches`
        self.switches: list[dict[str, Any]] = []

    # ------------------------------------------------------------- the plan
    def spectral_at(self, step: int) -> str | None:
        """The spectral precision the schedule prescribes at `step` (None: never set by it)."""
        mode = self.initial_spectral
        for switch in self.switches_planned:
            if switch.step <= step and switch.spectral_precision is not None:
                mode = switch.spectral_precision
        return mode

    # ----------------------------------------------------------- the hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        model = spectral_model(pl_module)
        if model is None:
            check_spectral_schedule(self.switches_planned, getattr(pl_module, "model", None), "")
            return
        if self.initial_spectral is None:  # a resumed run loads it from its checkpoint later
            self.initial_spectral = model.spectral_precision

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        plugin = trainer.precision_plugin
        if isinstance(plugin, SciMLPrecision):
            for switch in self.switches_planned:
                name = switch.precision
                if name is not None and switch.step == step and plugin.spec.name != name:
                    log.warning(
                        "step %d: precision schedule %s -> %s", step, plugin.spec.name, name
                    )
                    plugin.switch_to(name, pl_module, trainer.optimizers, step)
                    pl_module.log("precision/switch_step", float(step), batch_size=1)
        model = spectral_model(pl_module)
        target = self.spectral_at(step)
        if model is None or target is None or model.spectral_precision == target:
            return
        previous = model.spectral_precision
        model.set_spectral_precision(target)
        planned = any(
            s.step == step and s.spectral_precision == target for s in self.switches_planned
        )
        if planned and not any(s["step"] == step for s in self.switches):  # once, also on resume
            log.warning("step %d: spectral precision %s -> %s", step, previous, target)
            self.switches.append({"step": step, "from": previous, "to": target})
            pl_module.log("precision/spectral_switch_step", float(step), batch_size=1)
        else:  # a resumed run: the model came back with the config's mode
            log.info("step %d: spectral precision %s restored (schedule)", step, target)

    # ------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"initial_spectral": self.initial_spectral, "switches": list(self.switches)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.initial_spectral = state_dict.get("initial_spectral", self.initial_spectral)
        self.switches = [dict(s) for s in state_dict.get("switches", [])]
