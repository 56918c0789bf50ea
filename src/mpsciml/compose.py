"""Composition: from a composed config to the objects of one run (module, its DataModule,
trainer, callbacks).

Kept apart from `train.py` (which runs, evaluates and writes the summary) so that anything
that needs the same objects as a real run, such as the side-by-side benchmark, can build them
without importing the run itself.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from mpsciml.callbacks.precision_monitor import PrecisionMonitor
from mpsciml.callbacks.precision_probe import PrecisionProbe
from mpsciml.callbacks.precision_schedule import PrecisionSchedule
from mpsciml.callbacks.step_timer import StepTimer
from mpsciml.config import ConfigError, validate
from mpsciml.factory import build_datamodule, build_model, build_module, check_model_fits
from mpsciml.modules.base import SciMLModule
from mpsciml.precision.plugin import build_precision_plugin
from mpsciml.precision.registry import resolve_device

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[SciMLModule, pl.Trainer, dict[str, Any]]:
    """Instantiate problem, model, module, loggers, callbacks and trainer from the config; the
    problem's DataModule is `parts["datamodule"]`: `trainer.fit(module, datamodule=...)`."""
    validate(cfg)
    apply_precision_optimizer_floor(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        problem = instantiate(cfg.problem)
        check_model_fits(cfg, problem)
        model = build_model(cfg.model, problem)
        module = build_module(cfg, problem, model)
        datamodule = build_datamodule(cfg, problem, module)
    except InstantiationException as exc:
        raise ConfigError(str(exc.__cause__ or exc)) from exc
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    device = resolve_device(cfg.trainer.accelerator)
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
    probe, timer = PrecisionProbe(precision.name), StepTimer()
    monitor = PrecisionMonitor(every_n_steps=precision.diagnostics_every)
    callbacks = [probe, timer, monitor]
    if precision.schedule:
        callbacks.append(PrecisionSchedule(precision.schedule))
    callbacks += [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    max_steps = cfg.trainer.max_steps
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        enable_checkpointing=bool(cfg.get("callbacks")),
        val_check_interval=min(cfg.val_every, max_steps),
        plugins=[plugin],
    )
    parts = {"probe": probe, "timer": timer, "monitor": monitor, "loggers": loggers}
    return module, trainer, parts | {"datamodule": datamodule}


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
