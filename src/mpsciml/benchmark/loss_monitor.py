"""The loss a race between optimisers is judged by: one fixed set of fields, the clock without it.

A data-free run trains on fresh parameter fields every step (and L-BFGS on one frozen batch), so
the training loss of two runs is a loss on different fields: the Ritz energy of a field depends
on the field, and a lower number may only mean an easier batch. `LossMonitor` evaluates the
training objective (the problem's weighted terms, batch-mean) on the SAME held-out fields for
every run, every `every` Adam steps and after every L-BFGS step, with the network in training
mode (BatchNorm on the batch's own statistics, as the objective is) and its running statistics
restored afterwards, so the measurement changes nothing of the run. Under DDP every rank
evaluates the same fields (our synchronised BatchNorm then sees the same statistics as one
process would), so every rank gets the same number and takes the same stop decision.

With `judged_on="training"` (the race on one fixed training set, `fixed_fields=true`) the loss
is instead the training objective on the run's own training fields, the fields of step 0 of
`seed`: what both optimisers minimise, and the only loss a finite-data comparison can share.

The clock starts at `on_train_start` and leaves out the evaluations themselves: `seconds` is the
training's own wall time. With a `target`, training stops at the first evaluation at or below it
(the race is over); with `time_cap_s`, once that much training time is spent.
"""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

#: the fields the judged loss is computed on: the problem's held-out test fields (fresh fields
#: every training step) or the run's own fixed training fields (`fixed_fields=true`)
JUDGED_ON = ("held_out", "training")


class LossMonitor(pl.Callback):
    """Records (step, seconds, loss, phase) on the held-out fields; may stop the run."""

    def __init__(
        self,
        every: int,
        fields: int,
        target: float | None = None,
        time_cap_s: float | None = None,
        judged_on: str = "held_out",
        seed: int = 0,
    ) -> None:
        if judged_on not in JUDGED_ON:
            raise ValueError(f"judged_on={judged_on!r}: one of {', '.join(JUDGED_ON)}")
        self.every, self.n_fields = max(1, int(every)), int(fields)
        self.target, self.time_cap_s = target, time_cap_s
        self.judged_on, self.seed = judged_on, int(seed)
        self._training_fields: torch.Tensor | None = None
        self.records: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self._t0 = 0.0
        self._eval_s = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: Any) -> None:
        self._t0 = time.perf_counter()

    def fields(self, pl_module: Any) -> torch.Tensor:
        """The judged fields: the first `fields` held-out ones, or the whole training set."""
        if self.judged_on == "held_out":
            return pl_module.test_set.inputs[: self.n_fields]
        if self._training_fields is None:
            slots = torch.arange(pl_module.problem.batch_size)
            self._training_fields = pl_module.problem.parameter_fields(self.seed, 0, slots)
        return self._training_fields

    @torch.no_grad()
    def evaluate(self, pl_module: Any) -> float:
        """The weighted mean loss on the judged fields, in training mode."""
        model = pl_module.model
        saved = {name: b.detach().clone() for name, b in model.named_buffers()}
        was_training = model.training
        model.train()
        try:
            fields = self.fields(pl_module).to(pl_module.device)
            with pl_module.forward_context():
                inputs = pl_module.batch_in_input_dtype({"inputs": fields})["inputs"]
                terms = pl_module.problem.residual_terms(inputs, pl_module(inputs))
                loss = pl_module.total_loss({k: v.mean() for k, v in terms.items()})
        finally:
            for name, buffer in model.named_buffers():
                buffer.copy_(saved[name])
            model.train(was_training)
        return float(loss)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        done = trainer.global_step
        switch = pl_module.first_phase_end()
        lbfgs = switch is not None and done > switch
        if not (lbfgs or done % self.every == 0 or done >= trainer.max_steps):
            return
        seconds = time.perf_counter() - self._t0 - self._eval_s
        started = time.perf_counter()
        loss = self.evaluate(pl_module)
        self._eval_s += time.perf_counter() - started
        phase = "lbfgs" if lbfgs else "adam"
        self.records.append({"step": done, "seconds": seconds, "loss": loss, "phase": phase})
        reached = self.target is not None and loss <= self.target
        over = self.time_cap_s is not None and seconds > self.time_cap_s
        flag = torch.tensor([2.0 if reached else 1.0 if over else 0.0])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = flag.to(pl_module.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # rank 0's clock may differ a little
        if flag.item() > 0:
            self.stopped = "target" if flag.item() == 2.0 else "time cap"
            trainer.should_stop = True

    def record(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "stopped": self.stopped,
            "target": self.target,
            "eval_seconds": self._eval_s,
            "fields": self.n_fields,
            "judged_on": self.judged_on,
        }


def first_reached(records: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first evaluation at or below `target` (None: never)."""
    return next((r for r in records if r["loss"] <= target), None)


def race_monitor(settings: dict[str, Any], adam: dict[str, Any]) -> dict[str, Any]:
    """The challenger's monitor settings from Adam's run: the target is Adam's final loss on the
    held-out fields, the time cap `cap_factor` x Adam's time to first reach it."""
    target = adam["records"][-1]["loss"]
    reached = first_reached(adam["records"], target)
    assert reached is not None  # the last record reaches its own loss
    cap = settings.get("cap_factor", 1.5) * reached["seconds"]
    kept = {k: v for k, v in settings.items() if k not in ("target", "cap_factor")}
    return {**kept, "target": target, "time_cap_s": cap}
