"""Config checks and resolvers: a bad value stops the run with one line naming key and remedy.

Validation runs on the composed config before anything is built, so a typo costs a second, not a
half-trained run. Constructors validate their own arguments too; `ConfigError` carries either.
"""

from __future__ import annotations

import os
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mpsciml.precision.registry import PRECISIONS


class ConfigError(ValueError):
    """A user-facing configuration mistake; its message is the whole story."""


def wandb_offline() -> bool:
    """W&B stays offline unless the user asked for online with WANDB_MODE=online."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


def int_fraction(total: int, fraction: float) -> int:
    """`${int_fraction:${trainer.max_steps},0.8}`: a phase length that follows the run length."""
    return int(int(total) * float(fraction))


def register_resolvers() -> None:
    for name, resolver in (("wandb_offline", wandb_offline), ("int_fraction", int_fraction)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)


def _require(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _positive_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def validate(cfg: DictConfig) -> None:
    """Check the values a user is most likely to get wrong, before anything is built."""
    steps = cfg.trainer.get("max_steps")
    _require(
        isinstance(steps, int) and steps > 0, "trainer.max_steps", steps, "must be an integer > 0"
    )
    val_every = cfg.get("val_every")
    _require(
        isinstance(val_every, int) and val_every > 0,
        "val_every",
        val_every,
        "must be an integer > 0",
    )
    _require(isinstance(cfg.get("seed"), int), "seed", cfg.get("seed"), "must be an integer")
    name = cfg.precision.get("name")
    _require(name in PRECISIONS, "precision.name", name, f"allowed: {', '.join(PRECISIONS)}")
    optimizer = cfg.optimizer
    phases = [phase for phase in ("adam", "lbfgs") if optimizer.get(phase) is not None]
    _require(bool(phases), "optimizer", "{}", "needs an 'adam' or an 'lbfgs' section")
    for phase in phases:
        lr = optimizer[phase].get("lr")
        _require(_positive_number(lr), f"optimizer.{phase}.lr", lr, "must be a number > 0")
    if len(phases) == 2:
        switch = optimizer.get("switch_step")
        _require(
            isinstance(switch, int) and 0 <= switch <= steps,
            "optimizer.switch_step",
            switch,
            f"must be an integer step in [0, trainer.max_steps={steps}]",
        )
    for key, weight in (cfg.get("loss_weights") or {}).items():
        _require(
            isinstance(weight, int | float) and weight >= 0,
            f"loss_weights.{key}",
            weight,
            "must be a number >= 0",
        )
