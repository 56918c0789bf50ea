"""One measured case inside one rank: the run `python train.py <overrides>` would make, timed.

A case is a composed config (made by the parent, so every rank trains on the very same one)
plus what to record. `run_cases` is the rank's worker (`ddp_processes.spawn`): for each case a
new process group, then `mpsciml.compose.build(cfg)`, the module, DataModule and Trainer
of a real run (our SciMLDDPStrategy, the CPU all-reduce BatchNorm plugin, the comm hook of
`trainer.comm_precision`, the precision plugin and callbacks), and `trainer.fit` unchanged.
Added to it, and nothing else changed:

- `StepTimes`, the first callback: the wall clock at each batch start (and the last batch end):
  step i takes start(i+1) - start(i), one whole loop cycle (data, forward, backward and the
  gradient all-reduce, optimizer step, hooks), after `torch.cuda.synchronize()` on CUDA;
- a `BytesCounter` on the gradient all-reduce: the strategy's hook is replaced by the same
  torch hook wrapped in `comm_hooks.counting_hook` (for fp32, DDP's all-reduce as a hook);
- an `ExchangeClock` on our CPU synchronised BatchNorm: the wall time each step spends in its
  exchanges (two per layer), waiting for the other ranks included. Each exchange is a point
  where every rank waits for the slowest, so this is the part of the step that the layers'
  synchronisation costs beyond their arithmetic;
- for the optimiser race, `LossMonitor` (loss_monitor.py).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig
from pytorch_lightning.strategies import DDPStrategy
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mpsciml.benchmark.ddp_processes import alone, process_group
from mpsciml.distributed import sync_batchnorm
from mpsciml.distributed.collective_wait import collective_wait
from mpsciml.distributed.comm_hooks import BytesCounter, comm_hook
from mpsciml.precision.registry import resolve_device


class ExchangeClock:
    """Wall seconds spent in the synchronised BatchNorm's exchanges, per step."""

    def __init__(self) -> None:
        self.running = 0.0
        self.per_step: list[float] = []

    def timed(self, exchange: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
        def run(local: Tensor) -> Tensor:
            started = time.perf_counter()
            try:
                return exchange(local)
            finally:
                self.running += time.perf_counter() - started

        return run

    def start_step(self) -> None:
        self.running = 0.0  # an exchange before the first batch (sanity checks) is no step's

    def end_step(self) -> None:
        self.per_step.append(self.running)
        self.running = 0.0

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Our CPU layer's two exchanges (`sync_batchnorm`: statistics forward, gradient sums
        backward) timed while the block runs, restored after it."""
        names = ("gather_ranks", "sum_over_ranks")
        originals = {name: getattr(sync_batchnorm, name) for name in names}
        for name, exchange in originals.items():
            setattr(sync_batchnorm, name, self.timed(exchange))
        try:
            yield
        finally:
            for name, exchange in originals.items():
                setattr(sync_batchnorm, name, exchange)


class StepTimes(pl.Callback):
    """Batch-start times of every step (and the last batch end), the bytes per step and the
    seconds in BatchNorm exchanges per step."""

    def __init__(self, counter: BytesCounter, device: str) -> None:
        self.counter, self.device = counter, device
        self.exchanges = ExchangeClock()
        self.starts: list[float] = []
        self.last_end: float | None = None
        self.collective_wait: str | None = None

    def on_train_start(self, trainer: pl.Trainer, *args: Any) -> None:
        # what this process's strategy set (trainer.collective_wait); None without DDP
        distributed = isinstance(trainer.strategy, DDPStrategy)
        self.collective_wait = collective_wait() if distributed else None

    def _now(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.starts.append(self._now())
        self.exchanges.start_step()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.last_end = self._now()
        self.counter.end_step()
        self.exchanges.end_step()

    def samples_s(self) -> list[float]:
        """Step i: start(i+1) - start(i); the last step: its start to its batch end."""
        stamps = [*self.starts[1:], *([self.last_end] if self.last_end is not None else [])]
        return [b - a for a, b in zip(self.starts, stamps, strict=False)]


def attach_counter(trainer: pl.Trainer, comm_precision: str | None, counter: BytesCounter) -> bool:
    """Count the gradient all-reduce's bytes: the strategy registers the same torch hook as it
    would (`comm_hooks.comm_hook`), wrapped to count. False without DDP (nothing is reduced)."""
    strategy = trainer.strategy
    if not isinstance(strategy, DDPStrategy):
        return False
    hook = comm_hook(comm_precision, counter)
    assert hook is not None
    strategy._ddp_comm_state = hook["ddp_comm_state"]
    strategy._ddp_comm_hook = hook["ddp_comm_hook"]
    return True


def batchnorm_sync_bytes(model: nn.Module) -> int:
    """Bytes our CPU synchronised BatchNorm all-reduces per step (`sync_batchnorm`: per layer,
    the sums of x and x^2 per channel and the count, float64, in the forward and again in the
    backward). Not part of the gradient all-reduce the counter sees."""
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    return sum(2 * (2 * m.num_features + 1) * 8 for m in layers)


def quiet_lightning() -> None:
    """Lightning's per-fit banners and hints would bury the per-case lines."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for message in ("num_workers", "does not have many workers", "log_every_n_steps", "treespec"):
        warnings.filterwarnings("ignore", message=f".*{message}.*")


def run_case(case: dict[str, Any], rank: int, world_size: int) -> dict[str, Any]:
    """Build and fit `case["cfg"]` in the current process group; what this rank measured."""
    from mpsciml.benchmark.loss_monitor import LossMonitor
    from mpsciml.compose import build

    cfg: DictConfig = case["cfg"]
    module, trainer, parts = build(cfg)
    device = resolve_device(cfg.trainer.accelerator)
    counter = BytesCounter()
    counted = attach_counter(trainer, cfg.trainer.get("comm_precision"), counter)
    timer = StepTimes(counter, device)
    trainer.callbacks.insert(0, timer)
    monitor = None
    if case.get("monitor"):
        monitor = LossMonitor(**case["monitor"])
        trainer.callbacks.append(monitor)
    plan = parts["distributed"]  # our all-reduce BatchNorm (CPU) swaps the layers during fit only
    synced = plan.world_size > 1 and "CPUSyncBatchNorm" in str(plan.sync_batchnorm_layer)
    sync_bytes = batchnorm_sync_bytes(module.model) if synced else None
    with timer.exchanges.attached():
        trainer.fit(module, datamodule=parts["datamodule"])
    result: dict[str, Any] = {
        "rank": rank,
        "world_size": world_size,
        "samples_s": timer.samples_s(),
        "bytes_per_step": counter.per_step if counted else [],
        "buckets": counter.buckets,
        "batchnorm_sync_bytes": sync_bytes,  # None: not synchronised, or torch's (CUDA)
        "batchnorm_exchange_s": timer.exchanges.per_step if synced else None,
        "collective_wait": timer.collective_wait,
        "steps_run": trainer.global_step,
        "last_loss": float(module.last_terms["total"]),  # global after fit (on_train_end)
        "parameters": sum(p.numel() for p in module.model.parameters()),
    }
    if monitor is not None:
        result["monitor"] = monitor.record()
        errors = module.evaluation_errors(module.predict_evaluation())
        result["rel_l2"] = {k: float(v) for k, v in errors.items()}
    return result


def run_cases(rank: int, world_size: int, folder: str, cases: list[dict[str, Any]]) -> list[Any]:
    """The rank's worker: every case in order, each in a fresh process group; rank 0 prints a
    line per case as it ends (the long work's progress)."""
    from mpsciml.benchmark.loss_monitor import race_monitor
    from mpsciml.config import register_resolvers

    register_resolvers()
    quiet_lightning()
    results: list[dict[str, Any]] = []
    for index, case in enumerate(cases):
        if case.get("monitor", {}).get("target") == "previous":  # the race: Adam's run before
            case = {**case, "monitor": race_monitor(case["monitor"], results[-1]["monitor"])}
        device = resolve_device(case["cfg"].trainer.accelerator)
        started = time.perf_counter()
        if case.get("independent"):  # no group, no exchange: P separate runs at once
            with alone():
                result = run_case(case, rank, world_size)
        else:
            with process_group(folder, index, rank, world_size, device):
                result = run_case(case, rank, world_size)
        results.append(result)
        if rank == 0:
            steps = sorted(result["samples_s"][case.get("warmup", 0) :])
            median = 1e3 * steps[len(steps) // 2] if steps else float("nan")
            print(
                f"  [{world_size} process(es)] {case['label']}: {median:.0f} ms/step "
                f"(rank 0), {time.perf_counter() - started:.0f} s",
                flush=True,
            )
    return results
