"""`precision.compare_every=N`: every N steps, the run's gradient against the fp32 gradient of
the same step (`precision.gradient_agreement`), logged, plotted and summarised.

Where the run's gradient is read: Lightning calls `on_before_optimizer_step` from the precision
plugin's `_after_closure`, i.e. after the backward and BEFORE `SciMLPrecision` unscales, so the
gradients there are multiplied by the loss scale (`plugin.loss_scale`; None without a scaler),
which is divided out here. The reference runs on the batch of the step as the loader gave it
(captured at batch start) at the weights the step's gradient was taken at (the optimizer has not
moved them yet), through `torch.autograd.grad`, so the step itself is unchanged.

`once=True` is the `precision=auto` probe's use: measure at the first step whose gradient is
usable (finite, derivatives finite): a GradScaler's first steps may overflow while it calibrates
its scale, and a skipped step leaves the weights where they were, so that step is still at the
initial weights.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.optim import Optimizer

from mpsciml.precision.gradient_agreement import BOUND_NOTE, agreement, reference_gradient
from mpsciml.precision.plugin import SciMLPrecision


class GradientAgreement(pl.Callback):
    def __init__(self, every_n_steps: int | None = None, once: bool = False, log: bool = True):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"precision.compare_every={every_n_steps!r} must be null or >= 1")
        self.every_n_steps = every_n_steps
        self.once = once
        self.log = log
        self.history: list[dict[str, Any]] = []
        self.measured_steps: set[int] = set()  # steps that paid for a reference gradient
        self._batch: Any = None
        self._step = -1
        self._pending: dict[str, Any] | None = None

    def _wanted(self, step: int) -> bool:
        if self.once:
            return not any(record["finite"] for record in self.history)
        return self.every_n_steps is not None and step % self.every_n_steps == 0

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._step = trainer.global_step
        self._batch = batch if self._wanted(self._step) else None
        self._pending = None

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        if self._batch is None:
            return
        batch, self._batch = self._batch, None  # an L-BFGS step's later closures: not again
        plugin = trainer.precision_plugin
        sci = plugin if isinstance(plugin, SciMLPrecision) else None
        params = [p for group in optimizer.param_groups for p in group["params"]]
        scale = sci.loss_scale if sci is not None else None
        gradient = [None if p.grad is None else p.grad.detach().double() for p in params]
        if scale:
            gradient = [None if g is None else g / scale for g in gradient]
        dtype = sci.spec.full_dtype if sci is not None else torch.float32
        reference = reference_gradient(pl_module, batch, params, dtype)
        record = {"step": self._step, **agreement(gradient, reference)}
        if sci is not None and sci.last_derivative_nonfinite > 0:
            record.update(finite=False, grad_cosine=None, grad_rel_error=None)
            record["note"] = "input derivatives non-finite"
        self.history.append(record)
        self.measured_steps.add(self._step)
        self._pending = record

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        record, self._pending = self._pending, None
        if not self.log or record is None:
            return
        values = {
            f"precision/{key}": float("nan") if record[key] is None else record[key]
            for key in ("grad_cosine", "grad_rel_error")
        }
        pl_module.log_dict(values, batch_size=1)

    def first_usable(self) -> dict[str, Any] | None:
        """The first record with a finite gradient (what the auto probe compares)."""
        return next((record for record in self.history if record["finite"]), None)

    def state_dict(self) -> dict[str, Any]:
        """Saved with the checkpoint, so a resumed run reports the whole run."""
        return {"history": [dict(record) for record in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(record) for record in state_dict.get("history", [])]

    def report(self) -> dict[str, Any]:
        """For summary.json: the extremes and means over the measurements, and every record."""
        cosines = [r["grad_cosine"] for r in self.history if r["grad_cosine"] is not None]
        errors = [r["grad_rel_error"] for r in self.history if r["grad_rel_error"] is not None]
        return {
            "compare_every": self.every_n_steps,
            "measurements": len(self.history),
            "nonfinite_measurements": sum(not r["finite"] for r in self.history),
            "grad_cosine_min": min(cosines) if cosines else None,
            "grad_cosine_mean": sum(cosines) / len(cosines) if cosines else None,
            "grad_rel_error_max": max(errors) if errors else None,
            "grad_rel_error_mean": sum(errors) / len(errors) if errors else None,
            "bound": None,
            "bound_note": BOUND_NOTE,
            "history": [dict(record) for record in self.history],
        }
