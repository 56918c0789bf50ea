"""Composition: from a composed config to the objects of one run (module, its DataModule,
trainer, callbacks).

Kept apart from `train.py` (which runs, evaluates and writes the summary) so that anything
that needs the same objects as a real run, such as the side-by-side benchmark, can build them
without importing the run itself.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.loggers import CSVLogger

from mpsciml.callbacks.gradient_agreement import GradientAgreement
from mpsciml.callbacks.precision_monitor import PrecisionMonitor
from mpsciml.callbacks.precision_probe import PrecisionProbe
from mpsciml.callbacks.precision_schedule import PrecisionSchedule
from mpsciml.callbacks.progress import DEFAULT_REFRESH_RATE, LossProgressBar
from mpsciml.callbacks.step_timer import StepTimer
from mpsciml.config import ConfigError, resume_checkpoint, validate
from mpsciml.distributed.plan import (
    DistributedPlan,
    plan_distributed,
    trainer_arguments,
    without_our_keys,
)
from mpsciml.factory import build_datamodule, build_model, build_module, check_model_fits
from mpsciml.freed_memory import malloc_setting
from mpsciml.modules.base import SciMLModule
from mpsciml.precision.auto_probe import AutoChoice, AutoSettings, run_probe
from mpsciml.precision.plugin import build_precision_plugin
from mpsciml.precision.registry import AUTO, get_spec, resolve_device
from mpsciml.quiet_profiler import NoProfiler
from mpsciml.threads import choose_threads

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[SciMLModule, pl.Trainer, dict[str, Any]]:
    """Instantiate problem, model, module, loggers, callbacks and trainer from the config; the
    problem's DataModule is `parts["datamodule"]`: `trainer.fit(module, datamodule=...)`;
    `parts["distributed"]` is the processes it trains on (`distributed.plan`)."""
    validate(cfg)
    malloc = malloc_setting(cfg.get("malloc_hold", True))
    apply_precision_optimizer_floor(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    device = resolve_device(cfg.trainer.accelerator)
    requested = cfg.precision.name
    distributed = plan_for(cfg, device)  # before anything is built or started
    auto: AutoChoice | None = None
    try:
        problem = instantiate(cfg.problem)
        check_model_fits(cfg, problem)
        model = build_model(cfg.model, problem)
        for name in candidates_of(cfg):
            check_device(model, device, get_spec(name).compute_dtype)
        module = build_module(cfg, problem, model)
        datamodule = build_datamodule(cfg, problem, module)
        if requested == AUTO:  # from here on the run is the run of the chosen precision
            quiet_start_up_noise([])  # the probe's Trainers start first
            auto = choose_precision(cfg, problem, module, device, distributed)
    except InstantiationException as exc:
        raise ConfigError(str(exc.__cause__ or exc)) from exc
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    check_checkpoint_fits(resume_checkpoint(cfg.get("resume")), module)

    precision = cfg.precision
    plugin = build_precision_plugin(
        precision.name,
        device,
        allow_tf32=precision.allow_tf32,
        loss_scaling=precision.loss_scaling,
        init_scale=precision.init_scale,
        derivative_scaling=precision.derivative_scaling,
    )
    module.max_skips = precision.max_consecutive_skips
    probe, timer = PrecisionProbe(requested), StepTimer()
    compare_every = precision.get("compare_every")
    agreement = GradientAgreement(compare_every) if compare_every else None
    monitor = PrecisionMonitor(every_n_steps=precision.diagnostics_every, agreement=agreement)
    callbacks = [probe, timer, monitor, *([agreement] if agreement else [])]
    if precision.schedule:
        callbacks.append(PrecisionSchedule(precision.schedule))
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):  # last: a redraw is not in step_ms
        refresh = cfg.trainer.get("progress_bar_refresh_rate") or DEFAULT_REFRESH_RATE
        try:
            callbacks.append(LossProgressBar(refresh_rate=refresh))
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    quiet_start_up_noise(loggers)
    max_steps = cfg.trainer.max_steps
    strategy = trainer_arguments(distributed, model, device, cfg.trainer.get("devices"))
    try:
        trainer = instantiate(
            without_our_keys(cfg.trainer),
            callbacks=callbacks,
            logger=loggers or False,
            enable_checkpointing=bool(cfg.get("callbacks")),
            val_check_interval=min(cfg.val_every, max_steps),
            plugins=[plugin, *strategy.pop("plugins", [])],
            **strategy,
            **({} if cfg.trainer.get("profiler") else {"profiler": NoProfiler()}),
        )
    except InstantiationException as exc:  # `+trainer.typo=1`: a bad key, one line like others
        raise ConfigError(f"trainer: {exc.__cause__ or exc}") from exc
    parts = {"probe": probe, "timer": timer, "monitor": monitor, "loggers": loggers}
    parts["distributed"] = distributed
    parts["agreement"] = agreement
    parts["auto_precision"] = auto.as_dict() if auto is not None else None
    parts["malloc"] = malloc
    return module, trainer, parts | {"datamodule": datamodule}


def candidates_of(cfg: DictConfig) -> list[str]:
    """The precisions this run may train in: the one given, or auto's candidates."""
    precision = cfg.precision
    return list(precision.candidates) if precision.name == AUTO else [precision.name]


def plan_for(cfg: DictConfig, device: str) -> DistributedPlan:
    """`plan_distributed`, with precision=auto refused under DDP in one line: every process would
    measure on its own and might choose differently (the plan's weight-dtype check would
    otherwise meet "auto", which is no precision)."""
    refusal = (
        "precision=auto is invalid with several processes (each would measure and choose on its "
        "own): run precision=auto once in one process, then give the precision it chose"
    )
    if cfg.precision.name != AUTO:
        return plan_distributed(cfg, device)
    try:
        plan = plan_distributed(cfg, device)
    except ConfigError:
        raise
    except ValueError as exc:  # get_spec("auto") inside the DDP checks: DDP was planned
        raise ConfigError(refusal) from exc
    if plan.distributed:
        raise ConfigError(refusal)
    return plan


def choose_precision(
    cfg: DictConfig, problem: Any, module: SciMLModule, device: str, plan: DistributedPlan
) -> AutoChoice:
    """precision=auto: probe the candidates on copies of `module` (`precision.auto_probe`),
    log the one line that says why, and make the config the chosen precision's, so everything
    built after this (plugin, callbacks, loggers' names) is the run of that precision."""
    settings = AutoSettings.from_config(cfg.precision)
    threads, _ = choose_threads(
        cfg.get("threads"),
        module.model,
        device,
        processes=plan.processes_per_node,
        cores=plan.cpu_cores,
    )
    choice = run_probe(cfg, problem, module, device, settings, threads=threads)
    log.info("%s [probe %.1f s]", choice.line, choice.seconds)
    cfg.precision.name = choice.chosen
    return choice


def check_device(model: Any, device: str, compute_dtype: torch.dtype | None = None) -> None:
    """A model that can tell before training whether it runs as configured on the run's device
    (`contract.SpectralPrecisionControl.check_device`: a half FFT of a grid that is not a power
    of two on CUDA) is asked here; its ValueError becomes the run's one-line error, exit 2.
    compute_dtype: the run's activation dtype (`precision=`'s), so that a bf16 run, whose
    spectral half is bf16 and needs no fp16 FFT, is not refused for a grid only cuFFT fp16
    minds."""
    check = getattr(model, "check_device", None)
    if callable(check):
        check(device, compute_dtype)


class _DropLitLoggerTip(logging.Filter):
    """Lightning logs an advertisement for its cloud logger (litlogger) at every Trainer start."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_start_up_noise(loggers: list[Any]) -> None:
    """Silence, deliberately and narrowly, start-up messages that tell a user nothing about the
    run (each would otherwise be read past on every run); anything else still shows."""
    rank_zero = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLitLoggerTip) for f in rank_zero.filters):
        rank_zero.addFilter(_DropLitLoggerTip())
    # Lightning 2.6's own _pytree helper builds torch's LeafSpec, which torch 2.13 deprecates;
    # nothing of ours to change, and Lightning will follow.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    for logger in loggers:
        # The CSV logger writes metrics.csv into the run folder, which already holds Hydra's
        # .hydra/ and train.log, so it warns "exists and is not empty ... will be deleted" every
        # time; it only ever deletes an old metrics.csv, so the warning stays where there is one.
        if isinstance(logger, CSVLogger) and not (Path(logger.log_dir) / "metrics.csv").exists():
            warnings.filterwarnings(
                "ignore",
                message=f"Experiment logs directory {re.escape(logger.log_dir)} exists and is "
                "not empty",
            )


def check_checkpoint_fits(path: str | None, module: SciMLModule) -> None:
    """`resume=` must name a readable checkpoint of this very network, checked before training.

    Loaded with `weights_only=True` (tensors and plain containers, never arbitrary objects), so a
    wrong file is refused instead of torch advising the unsafe `weights_only=False`; a truncated
    file or one of another network size would otherwise fail mid-start with a long traceback.
    """
    if path is None:
        return
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # truncated, not a zip, not torch: torch's reasons vary by cause
        raise ConfigError(
            f"resume={path!r} is invalid: not a readable checkpoint ({type(exc).__name__}); "
            "give a checkpoints/*.ckpt written by train.py, or its run folder"
        ) from None
    saved = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(
            f"resume={path!r} is invalid: a torch file but not a Lightning checkpoint "
            "(no state_dict); give a checkpoints/*.ckpt written by train.py, or its run folder"
        )
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    found = {name: tuple(value.shape) for name, value in saved.items()}
    if found != expected:
        differences = [
            f"{name}: {found.get(name, 'absent')} in the checkpoint, "
            f"{expected.get(name, 'absent')} here"
            for name in sorted(expected.keys() | found.keys())
            if found.get(name) != expected.get(name)
        ]
        raise ConfigError(
            f"resume={path!r} is invalid: its network differs from this config's "
            f"({len(differences)} tensors, e.g. {differences[0]}); resume with the same model "
            "and problem overrides as the run that wrote it"
        )


def apply_precision_optimizer_floor(cfg: DictConfig) -> None:
    """Raise Adam's epsilon to the precision's floor (`precision.adam_eps`), saying so.

    In pure fp16 the default 1e-8 rounds to 0, and v = (1 - beta2) g^2 underflows for
    |g| < 2e-4, so m / (sqrt(v) + eps) is m / 0 and the first step writes inf into the weights.
    """
    floor = cfg.precision.get("adam_eps")
    adam = cfg.optimizer.get("adam")
    if floor is None or adam is None or adam.get("eps", 0.0) >= floor:
        return
    log.warning(
        "precision=%s: optimizer.adam.eps raised from %g to %g (smaller is 0 in this precision)",
        cfg.precision.name,
        adam.get("eps", 0.0),
        floor,
    )
    adam.eps = float(floor)
