"""Runners: one training loop per row of the benchmark, each in its own thread under a `Baton`.

A Lightning runner is the run `python train.py` makes: `mpsciml.compose.build(cfg)` gives module
and trainer (our precision plugin, the precision probe, step timer and diagnostics monitor), and
`trainer.fit` runs unchanged; a callback placed first ticks the runner's `StepClock` at the start
of every batch. Driving `training_step` by hand would skip Lightning's loop, hooks and logging,
which are part of what a training step costs; `trainer.fit` in chunks would reset the optimizer.
Threads do neither: each fit simply waits at a step boundary until its turn comes back.

After its timed steps every runner does two more steps while still holding the baton: one with
the memory peaks reset and read around it, one under a `SavedTensorMeter` (kept apart because the
meter holds storages alive and would raise the peak).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from torch import nn

from mpsciml.benchmark.bare_loop import BareLoop
from mpsciml.benchmark.malloc_arena import share_one_malloc_arena
from mpsciml.benchmark.memory import PeakMemory
from mpsciml.benchmark.saved_bytes import SavedTensorMeter
from mpsciml.benchmark.timing import Baton, StepClock
from mpsciml.compose import build
from mpsciml.freed_memory import hold_freed_memory
from mpsciml.precision.registry import resolve_device

EXTRA_STEPS = 2  # the memory step and the saved-bytes step after the timed ones


@dataclass
class Runner:
    """One row: its clock, its thread body, and what its measurement steps found."""

    name: str
    kind: str  # "lightning" | "bare" | "peer"
    clock: StepClock
    body: Callable[[], None] = lambda: None
    memory: dict[str, Any] = field(default_factory=dict)
    saved_bytes: int | None = None
    saved_by_dtype: dict[str, int] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    _peak: PeakMemory = field(default_factory=PeakMemory)
    _meter: SavedTensorMeter | None = None

    @property
    def total_steps(self) -> int:
        return self.clock.steps + EXTRA_STEPS

    def step_started(self) -> None:
        step = self.clock.ticks
        self.clock.tick()
        if step == self.clock.steps:
            self._peak.start()
        elif step == self.clock.steps + 1:
            self._meter = SavedTensorMeter().__enter__()

    def step_ended(self) -> None:
        step = self.clock.ticks - 1
        if step == self.clock.steps:
            self.memory = self._peak.stop()
        elif step == self.clock.steps + 1:
            self._close_meter()

    def _close_meter(self) -> None:
        if self._meter is not None:
            self._meter.__exit__(None, None, None)
            self.saved_bytes = self._meter.total_bytes
            self.saved_by_dtype = dict(self._meter.bytes_by_dtype)
            self._meter = None

    def run(self) -> None:
        """The thread body: run, record a failure as one line, always leave the rotation."""
        try:
            self.body()
        except Exception as exc:  # a failing row must not hang the others
            self.error = f"{type(exc).__name__}: {exc}"
            self.facts["traceback"] = traceback.format_exc()
        finally:
            if self._meter is not None:
                self._meter.__exit__(None, None, None)
                self._meter = None
            self.clock.finish()


class _Ticker(pl.Callback):
    """First callback of the trainer: ticks the runner's clock at every batch start."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.runner.step_started()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, *args: Any) -> None:
        self.runner.step_ended()
        step = self.runner.clock.ticks - 1
        if self.runner.kind == "loop":  # an idle step has no loss
            return
        if step == 0 or step >= self.runner.clock.steps:  # no host sync inside the timed steps
            # the global loss under DDP (a collective: every rank's ticker asks on these steps)
            self.runner.losses.append(float(pl_module.global_terms()["total"]))


def lightning_runner(
    cfg: DictConfig, steps: int, turn: int, name: str | None = None, idle: bool = False
) -> Runner:
    """A runner for `cfg` (its `trainer.max_steps` must be `steps + EXTRA_STEPS`), named `name`
    (default: the precision). `idle`: its training step does nothing (`idle_training_step`);
    kind "loop", so no ratio takes it for one of our training rows."""
    module, trainer, parts = build(cfg)
    kind = "loop" if idle else "lightning"
    runner = Runner(name or cfg.precision.name, kind, StepClock(None, 0, steps, turn))
    trainer.callbacks.insert(0, _Ticker(runner))
    datamodule = parts["datamodule"]

    def body() -> None:
        if idle:  # in the body: a Lightning without the loop's step counter fails this row only
            idle_training_step(module, trainer)
        trainer.fit(module, datamodule=datamodule)
        plugin = trainer.precision_plugin
        runner.facts.update(
            {
                "steps_run": trainer.global_step,
                "skipped_steps": getattr(plugin, "skipped_steps", None),
                "param_dtype": str(next(module.parameters()).dtype).removeprefix("torch."),
                "optimizer_impl": getattr(module, "optimizer_impl", None),
            }
        )
        compile_facts = getattr(module, "compile_facts", None)
        if callable(compile_facts):  # compile=true: backend, compile seconds, graph breaks
            runner.facts["compile"] = compile_facts()
        report = getattr(module.model, "spectral_report", None)
        if callable(report):  # what the spectral layers really ran (FNO rows)
            runner.facts["spectral"] = report()

    runner.body = body
    runner.facts["module"] = module  # for the bare loop and tests; dropped from the JSON
    if not idle:  # an idle row's weights never move: no loss at its end to compare
        runner.facts["_linears"] = lambda: linear_layers(module.model)
    bar = trainer.progress_bar_callback
    runner.facts["progress_bar"] = None if bar is None else type(bar).__name__
    runner.facts["parameters"] = sum(p.numel() for p in module.model.parameters())
    if getattr(module, "derivatives", None) == "taylor":  # summed | apart | None (no Laplacian)
        runner.facts["laplacian"] = getattr(module, "laplacian_streams", None)
    batch_size = getattr(getattr(module, "problem", None), "batch_size", None)
    if isinstance(batch_size, int):  # samples per step: a throughput for grid operators
        runner.facts["batch_size"] = batch_size
    return runner


def idle_training_step(module: Any, trainer: pl.Trainer) -> None:
    """Replace `module`'s training step by one that only counts an optimizer step (as
    `LightningOptimizer.step` counts it under manual optimisation: `global_step`, `max_steps`,
    the log and checkpoint intervals follow it) and hands back a constant loss. Everything else
    of `trainer.fit` runs as in a real run: the data, the batch transfer, the module's and the
    callbacks' hooks, the progress bar, the checkpoint checks. So this row's step is the loop's
    own cost, which no step run by `trainer.fit` can go below."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    zero = torch.zeros(())
    module.last_terms = {"total": zero}  # what the progress bar and the runner read
    module._terms_are_global = True

    def training_step(batch: Any, batch_idx: int) -> torch.Tensor:
        progress.increment_ready()
        progress.increment_completed()
        return zero

    module.training_step = training_step


def bare_runner(module: Any, device: str, steps: int, turn: int) -> Runner:
    """The plain-PyTorch fp32 row, built from a Lightning row's module before it trains."""
    loop = BareLoop.like(module, device)
    runner = loop_runner("bare_fp32", loop, steps, turn)
    runner.facts["_linears"] = lambda: linear_layers(loop.model)
    return runner


def loop_runner(name: str, loop: Any, steps: int, turn: int) -> Runner:
    """A row driven by a plain loop's `step()` (the bare rows), timed like the Lightning rows;
    its loss is read only on untimed steps (no host sync inside the timed ones)."""
    runner = Runner(name, "bare", StepClock(None, 0, steps, turn))
    runner.facts["_step"] = loop.step  # for `matmul_share.profile_rows` after the timed steps

    def body() -> None:
        for step in range(runner.total_steps):
            runner.step_started()
            loss = loop.step()
            runner.step_ended()
            if step == 0 or step >= steps:
                runner.losses.append(float(loss))

    runner.body = body
    return runner


def run_interleaved(runners: list[Runner], progress: Callable[[int], None] | None = None) -> None:
    """Pass one baton among the runners, start their threads and wait for all;
    `progress(steps_done)` is called ~5 times a second. The threads allocate from the main
    thread's malloc arena, as a training process does (`malloc_arena`), and every row, the
    peers' too, keeps the memory its steps free as train.py does (`freed_memory`)."""
    share_one_malloc_arena()
    hold_freed_memory()
    baton = Baton(len(runners))
    for index, runner in enumerate(runners):
        runner.clock.baton, runner.clock.index = baton, index
    threads = [threading.Thread(target=r.run, name=r.name, daemon=True) for r in runners]
    for thread in threads:
        thread.start()
    while alive := [t for t in threads if t.is_alive()]:
        alive[0].join(0.2)
        if progress is not None:
            progress(sum(min(r.clock.ticks, r.total_steps) for r in runners))


def linear_layers(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of an MLP in the order they apply (our `MLP`, DeepXDE's `FNN` and
    PINA's `FeedForward` register them in that order): how one network's weights are compared
    with or copied into another's."""
    return [m for m in model.modules() if isinstance(m, nn.Linear)]


def device_of(cfg: DictConfig) -> str:
    return resolve_device(cfg.trainer.accelerator)
