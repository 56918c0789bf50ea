"""`weighting=<method>`: the Lightning callback that moves the loss weights during training.

When: after every `update_every`-th step (in `on_train_batch_end`, once the optimizer has
stepped), so the new weights apply from the next step on and the step itself (its loss, its
backward, the GradScaler) is exactly the step of fixed weights. Only while Adam trains: L-BFGS's
line search needs one objective, so the weights freeze where its phase starts.

What: the rule's multipliers times the user's `loss_weights` become `module.loss_weights`,
which `SciMLModule.total_loss` reads every step. The losses a rule sees are the step's global
terms (`global_terms()`: one all-reduce under DDP, on the same steps on every rank); the
gradients are the terms' full-precision gradients on the step's batch at the weights the next
step starts from (`term_gradients`). Logged as `train/weight_<term>` on the log steps; the
multipliers and the rule's memory go into the checkpoint (`state_dict`), so a resumed run
continues exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl

from mpsciml.log_steps import is_log_step
from mpsciml.weighting.method import WeightingMethod
from mpsciml.weighting.term_gradients import full_dtype, term_gradients

log = logging.getLogger(__name__)


class LossWeighting(pl.Callback):
    def __init__(self, module: Any, method: WeightingMethod, update_every: int) -> None:
        self.module = module
        self.method = method
        self.update_every = update_every
        #: the user's `loss_weights`, which the multipliers scale
        self.base = dict(module.loss_weights)
        self.updates = 0
        self.unusable = 0  # observations with a non-finite loss or gradient: weights kept
        self.frozen_at: int | None = None  # the step the L-BFGS phase froze the weights at

    def weights(self) -> dict[str, float]:
        """The effective weights: the user's times the rule's."""
        return {t: self.base[t] * m for t, m in self.method.multipliers.items()}

    def _adam_trains_next(self, module: Any, steps_done: int) -> bool:
        if module.optimizer_cfg.get("adam") is None:
            return False
        switch = module.first_phase_end()
        return switch is None or steps_done < switch

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        steps_done = trainer.global_step
        if steps_done % self.update_every == 0:
            if self._adam_trains_next(pl_module, steps_done):
                self._update(pl_module, batch, steps_done)
            elif self.frozen_at is None:
                self.frozen_at = steps_done
        if is_log_step(trainer):
            for term, weight in self.weights().items():
                pl_module.log(f"train/weight_{term}", weight, batch_size=1)

    def _update(self, module: Any, batch: Any, steps_done: int) -> None:
        gradients = None
        if self.method.uses_gradients:  # the terms' values at the same weights, in fp32 too
            losses, gradients = term_gradients(module, batch)
        else:
            losses = {t: float(v) for t, v in module.global_terms().items() if t != "total"}
        if self.method.update(losses, gradients, steps_done):
            self.updates += 1
        else:
            self.unusable += 1
            log.warning("step %d: loss weights kept (non-finite loss or gradient)", steps_done)
        module.loss_weights = self.weights()

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.state_dict(),
            "updates": self.updates,
            "unusable": self.unusable,
            "frozen_at": self.frozen_at,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.method.load_state_dict(state_dict["method"])
        self.updates = int(state_dict["updates"])
        self.unusable = int(state_dict["unusable"])
        self.frozen_at = state_dict["frozen_at"]
        self.module.loss_weights = self.weights()

    def report(self) -> dict[str, Any]:
        """summary.json `weighting`."""
        return {
            "method": self.method.name,
            "settings": {"update_every": self.update_every, **self.method.settings()},
            "weights": self.weights(),
            "multipliers": dict(self.method.multipliers),
            "base_weights": dict(self.base),
            "updates": self.updates,
            "unusable_updates": self.unusable,
            "frozen_at_step": self.frozen_at,
            "gradients_dtype": str(full_dtype(self.module)) if self.method.uses_gradients else None,
        }
