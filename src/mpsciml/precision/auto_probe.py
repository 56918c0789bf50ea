"""`precision=auto`: measure each candidate precision on this run and pick the fastest one whose
gradients agree with fp32.

Nobody can guess which precision pays on a machine: on a CPU without bf16 instructions bf16
autocast is slower than fp32, on one with AMX it halves a wide network's step, and fp16 matmuls
run at fp32 speed on most CPUs. So the run measures. Each candidate trains `probe_steps` steps
from a deep copy of the freshly built module (the same initial weights) on the same points (its
own DataModule from the run's seed), with a lean Lightning Trainer (no logger, checkpoint,
progress bar or validation) and our `SciMLPrecision` plugin for the candidate, and gives:

- `step_ms`: the median step time, without the warm-up steps and the step that paid for the
  agreement measurement; a candidate whose fastest step is already `STOP_RATIO` x the fastest
  agreeing candidate's median after a few steps stops there (`stopped_early`): the probe's cost
  is mostly the slow candidates' steps;
- `grad_cosine`, `grad_rel_error`: its gradient at the initial weights on the first batch
  against the fp32 gradient there (`precision.gradient_agreement`, Hayford et al.'s Theorem 1
  quantity); at the first step whose gradient is usable, since a GradScaler's first steps may
  overflow while it calibrates, and a skipped step leaves the weights where they were;
- when the two fastest agreeing candidates are within `CLOSE_CALL` (1.15x) of each other, both
  are timed once more, the other way round, keeping each one's faster median (load on a shared
  machine comes in bursts, and candidates are timed one after another);
- `skipped_steps`, `late_skips` (skips in the second half of the probe: a precision still
  skipping there has not settled), `derivative_overflow_steps`.

A candidate agrees when it produced a finite gradient, cosine >= `min_cosine`, relative error
<= `max_rel_error` and no late skips. The fastest agreeing candidate wins (fp32, the reference,
always agrees with itself; if no candidate agrees, fp32 runs). `choose` is a pure function of the
table, so it is tested on synthetic tables; `run_probe(..., timings=...)` replaces measured times
for a test that must make a wrong candidate the fastest without touching the code under test.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import statistics
import time
from collections.abc import Generator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from mpsciml.callbacks.gradient_agreement import GradientAgreement
from mpsciml.precision.plugin import SciMLPrecision, build_precision_plugin
from mpsciml.precision.registry import AUTO, PRECISIONS

REFERENCE = "fp32"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AutoSettings:
    """conf/precision/auto.yaml's keys (validated by `config.validate_auto`)."""

    candidates: tuple[str, ...] = ("fp32", "bf16_mixed", "mixed")
    probe_steps: int = 30
    min_cosine: float = 0.99
    max_rel_error: float = 0.05

    @classmethod
    def from_config(cls, precision: DictConfig | Mapping[str, Any]) -> AutoSettings:
        return cls(
            candidates=tuple(str(c) for c in precision.get("candidates", cls.candidates)),
            probe_steps=int(precision.get("probe_steps", cls.probe_steps)),
            min_cosine=float(precision.get("min_cosine", cls.min_cosine)),
            max_rel_error=float(precision.get("max_rel_error", cls.max_rel_error)),
        )


@dataclass
class ProbeRow:
    """One candidate's line of the probe table (summary.json `precision.probe`)."""

    precision: str
    steps: int = 0
    step_ms: float | None = None
    timing: str = "measured"  # or "given" (run_probe's `timings`)
    grad_cosine: float | None = None
    grad_rel_error: float | None = None
    measured_at_step: int | None = None
    skipped_steps: int = 0
    late_skips: int = 0
    derivative_overflow_steps: int = 0
    agrees: bool = False
    why: str = ""  # why it does not agree; empty when it does
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


def judge(row: ProbeRow, settings: AutoSettings) -> ProbeRow:
    """Set `agrees` and `why` from the row's measurements (the first failed test is the why)."""
    if row.grad_cosine is None or row.grad_rel_error is None:
        row.agrees, row.why = False, f"no finite gradient in {row.steps} steps"
    elif row.grad_cosine < settings.min_cosine:
        row.agrees = False
        row.why = f"gradient cosine {row.grad_cosine:.4f} < {settings.min_cosine}"
    elif row.grad_rel_error > settings.max_rel_error:
        row.agrees = False
        row.why = f"gradient error {row.grad_rel_error:.3g} > {settings.max_rel_error}"
    elif row.late_skips > 0:
        row.agrees = False
        row.why = f"still skipping steps late in the probe ({row.late_skips})"
    elif row.step_ms is None:
        row.agrees, row.why = False, "no step time measured"
    else:
        row.agrees, row.why = True, ""
    return row


def choose(rows: list[ProbeRow]) -> tuple[str, str]:
    """(chosen precision, the one line that says why), from judged rows: the fastest agreeing
    row; fp32 (the reference) when none agrees."""
    agreeing = [row for row in rows if row.agrees and row.step_ms is not None]
    if not agreeing:
        reasons = "; ".join(f"{row.precision}: {row.why}" for row in rows)
        return REFERENCE, f"precision=auto: {REFERENCE} (no candidate agreed with fp32: {reasons})"
    best = min(agreeing, key=lambda row: row.step_ms)
    others = []
    for row in rows:
        if row is best:
            continue
        if row.step_ms is None:
            others.append(f"{row.precision}: {row.why}")
            continue
        ratio = row.step_ms / best.step_ms
        if row.agrees:
            others.append(f"{row.precision} {ratio:.3g}x slower")
        else:
            others.append(f"{row.precision} {ratio:.3g}x the time but {row.why}")
    said = f" ({'; '.join(others)})" if others else ""
    return best.precision, f"precision=auto: {best.precision} at {best.step_ms:.2f} ms/step{said}"


@dataclass
class AutoChoice:
    """What the probe found: summary.json's `precision.chosen`, `probe`, `probe_seconds`."""

    chosen: str
    line: str
    rows: list[ProbeRow]
    seconds: float
    settings: AutoSettings

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": AUTO,
            "chosen": self.chosen,
            "why": self.line,
            "probe": [row.as_dict() for row in self.rows],
            "probe_seconds": round(self.seconds, 3),
            "probe_settings": asdict(self.settings),
        }


#: a candidate whose FASTEST step (after its first, and its gradient measured) over `MIN_SEEN`
#: steps is this many times the fastest agreeing candidate's median so far stops probing: it
#: cannot win (load only ever makes a step slower, so its fastest step is an upper bound on
#: how fast it can be), and the slow candidates are where the probe's time goes (bf16 autocast
#: at 5-7x fp32 on a CPU without bf16: on a width-256 network 24 s per step under load)
STOP_RATIO = 1.5
MIN_SEEN = 3
#: ... and one whose first such step alone is this many times that median stops after it: no
#: burst of load makes a step 5x slower, and waiting for MIN_SEEN such steps was most of the
#: probe (fp16 autocast on a width-256 Burgers network on a CPU without fp16 arithmetic: 6.5 s
#: per step, 47x bf16_mixed's, 26 of the probe's 47 s in its 4 steps)
HOPELESS_RATIO = 5.0
WARMUP = 5


def warmup_steps(steps: int) -> int:
    """Untimed first steps (allocations, autocast caches, a GradScaler's calibration)."""
    return min(WARMUP, steps // 3)


class _StepClock(pl.Callback):
    """Start-to-end wall time of each probe step, and the plugin's skip count after it; stops
    the candidate once it is clearly slower than `best_ms`, the fastest agreeing candidate's
    median so far (see STOP_RATIO, HOPELESS_RATIO)."""

    def __init__(self, agreement: GradientAgreement, best_ms: float | None) -> None:
        self.seconds: list[float] = []
        self.skipped_after: list[int] = []
        self.agreement = agreement
        self.best_ms = best_ms
        self.stopped_early = False
        self._start = 0.0

    def timed_seconds(self, planned_steps: int) -> list[float]:
        """The steps that count: after the warm-up, without the agreement measurement's step;
        for a candidate stopped early, its steps after the first."""
        measured = self.agreement.measured_steps
        for warmup in (warmup_steps(planned_steps), 1, 0):
            timed = [s for i, s in enumerate(self.seconds) if i >= warmup and i not in measured]
            if timed:
                return timed
        return self.seconds

    def _now(self, pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self._start = self._now(pl_module)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, idx: int
    ) -> None:
        self.seconds.append(self._now(pl_module) - self._start)
        plugin = trainer.precision_plugin
        self.skipped_after.append(plugin.skipped_steps if isinstance(plugin, SciMLPrecision) else 0)
        if self.best_ms is None or self.agreement.first_usable() is None:
            return
        measured = self.agreement.measured_steps
        seen = [1000 * s for i, s in enumerate(self.seconds) if i >= 1 and i not in measured]
        if not seen or min(seen) <= STOP_RATIO * self.best_ms:
            return
        if len(seen) >= MIN_SEEN or min(seen) > HOPELESS_RATIO * self.best_ms:
            self.stopped_early = True
            trainer.should_stop = True


def probe_step_count(cfg: DictConfig, settings: AutoSettings) -> int:
    """probe_steps, but never into an L-BFGS phase (which runs in fp32 whatever the choice)."""
    optimizer = cfg.optimizer
    switch = optimizer.get("switch_step") if optimizer.get("lbfgs") is not None else None
    steps = min(settings.probe_steps, int(cfg.trainer.max_steps))
    return max(1, min(steps, int(switch))) if switch is not None else steps


def probe_one(
    name: str,
    cfg: DictConfig,
    problem: Any,
    module: pl.LightningModule,
    device: str,
    steps: int,
    best_ms: float | None = None,
) -> ProbeRow:
    """Train a copy of `module` for `steps` steps in precision `name` and measure it (fewer
    steps once it is clearly slower than `best_ms`, the fastest agreeing median so far)."""
    from mpsciml.factory import build_datamodule  # factory imports modules, which import us

    candidate = copy.deepcopy(module, memo={id(problem): problem})
    datamodule = build_datamodule(cfg, problem, candidate)
    precision = cfg.precision
    plugin = build_precision_plugin(
        name,
        device,
        allow_tf32=precision.allow_tf32,
        loss_scaling=precision.loss_scaling,
        init_scale=precision.init_scale,
        derivative_scaling=precision.derivative_scaling,
    )
    agreement = GradientAgreement(once=True, log=False)
    clock = _StepClock(agreement, best_ms)
    trainer = pl.Trainer(
        accelerator=device,
        devices=1,
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        plugins=[plugin],
        callbacks=[clock, agreement],
    )
    trainer.fit(candidate, datamodule=datamodule)
    timed = clock.timed_seconds(steps)
    half = len(clock.skipped_after) // 2
    skipped = clock.skipped_after[-1] if clock.skipped_after else 0
    first = agreement.first_usable()
    return ProbeRow(
        precision=name,
        steps=len(clock.seconds),
        step_ms=1000 * statistics.median(timed) if timed else None,
        grad_cosine=None if first is None else first["grad_cosine"],
        grad_rel_error=None if first is None else first["grad_rel_error"],
        measured_at_step=None if first is None else first["step"],
        skipped_steps=skipped,
        late_skips=skipped - (clock.skipped_after[half - 1] if half > 0 else 0),
        derivative_overflow_steps=plugin.derivative_nonfinite_total,
        extra={"skip_reasons": dict(plugin.skip_reasons), "stopped_early": clock.stopped_early},
    )


@contextlib.contextmanager
def _isolated(threads: int | None) -> Generator[None, None, None]:
    """The probe must leave the run as if it had not happened: random streams restored (the
    run's own training must be the run the user would have had with the chosen precision),
    Lightning's start-up lines silenced (three Trainers would print them three times), and the
    run's thread count used for timing, then the previous one restored."""
    quiet = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning.pytorch")]
    levels = [logger.level for logger in quiet]
    python_state, numpy_state = random.getstate(), np.random.get_state()
    previous_threads = torch.get_num_threads()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        for logger in quiet:
            logger.setLevel(logging.WARNING)
        if threads:
            torch.set_num_threads(threads)
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        torch.set_num_threads(previous_threads)


def run_probe(
    cfg: DictConfig,
    problem: Any,
    module: pl.LightningModule,
    device: str,
    settings: AutoSettings,
    threads: int | None = None,
    timings: Mapping[str, float] | None = None,
) -> AutoChoice:
    """Probe every candidate (in the order given), judge and choose. `timings` (ms per step by
    precision) replaces measured times, for tests; the rows say `timing: given` there."""
    started = time.perf_counter()
    steps = probe_step_count(cfg, settings)
    rows: list[ProbeRow] = []
    with _isolated(threads):
        for name in settings.candidates:
            fastest = [r.step_ms for r in rows if r.agrees and r.step_ms is not None]
            best_ms = min(fastest) if fastest else None
            row = probe_one(name, cfg, problem, module, device, steps, best_ms)
            if timings and row.precision in timings:
                row.step_ms, row.timing = float(timings[row.precision]), "given"
            rows.append(judge(row, settings))
        for row in reversed(close_call(rows)):  # the runner-up first this time
            again = probe_one(row.precision, cfg, problem, module, device, steps)
            row.extra["step_ms_runs"] = [row.step_ms, again.step_ms]
            row.step_ms = min(ms for ms in row.extra["step_ms_runs"] if ms is not None)
    chosen, line = choose(rows)
    return AutoChoice(chosen, line, rows, time.perf_counter() - started, settings)


#: two agreeing candidates whose measured medians are closer than this ratio are timed once
#: more, the other way round, each keeping the faster of its two medians: candidates are timed
#: one after another, so a burst of load on a shared machine could otherwise pick the slower
CLOSE_CALL = 1.15


def close_call(rows: list[ProbeRow]) -> list[ProbeRow]:
    """The fastest two measured, agreeing rows when they are a close call, else none."""
    measured = [r for r in rows if r.agrees and r.timing == "measured" and r.step_ms is not None]
    fastest = sorted(measured, key=lambda r: r.step_ms)[:2]
    if len(fastest) < 2 or fastest[1].step_ms >= CLOSE_CALL * fastest[0].step_ms:
        return []
    return fastest


#: the keys of summary.json `precision` the probe writes (`AutoChoice.as_dict`)
AUTO_RECORD = ("requested", "chosen", "why", "probe", "probe_seconds", "probe_settings")


def continue_auto_choice(cfg: DictConfig, earlier: Mapping[str, Any]) -> dict[str, Any] | None:
    """A precision=auto run continued in place (a requeued SLURM job: `earlier` is the
    interrupted run's summary) trains on in the precision that run's probe chose, as its
    checkpoint does, without probing again (a new probe could choose another precision than the
    one the checkpoint continues in). Makes the config that precision's and returns the earlier
    auto record; None when there is nothing to continue."""
    if cfg.precision.get("name") != AUTO:
        return None
    record = earlier.get("precision") if isinstance(earlier.get("precision"), dict) else {}
    if record.get("chosen") not in PRECISIONS:
        return None
    cfg.precision.name = record["chosen"]
    log.warning("precision=auto: continuing in %s, chosen by the interrupted run", record["chosen"])
    return {key: record[key] for key in AUTO_RECORD if key in record} | {"requested": AUTO}
