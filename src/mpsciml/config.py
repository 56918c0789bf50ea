"""Config checks and resolvers: a bad value stops the run with one line naming key and remedy.

Validation runs on the composed config before anything is built, so a typo costs a second, not a
half-trained run. Constructors validate their own arguments too; `ConfigError` carries either.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from mpsciml.contract import SPECTRAL_PRECISIONS
from mpsciml.data.adaptive_settings import adaptive_settings
from mpsciml.precision.registry import AUTO, PRECISIONS
from mpsciml.weighting.registry import check_weighting


class ConfigError(ValueError):
    """A user-facing configuration mistake; its message is the whole story."""


def wandb_offline() -> bool:
    """W&B stays offline unless the user asked for online with WANDB_MODE=online."""
    return os.environ.get("WANDB_MODE", "offline") != "online"


def int_fraction(total: int, fraction: float) -> int:
    """`${int_fraction:${trainer.max_steps},0.8}`: a phase length that follows the run length."""
    return int(int(total) * float(fraction))


def decay_per_step(total: int, final_factor: float) -> float:
    """`${decay_per_step:${trainer.max_steps},0.05}`: the ExponentialLR gamma that ends a run at
    final_factor x the initial learning rate, so changing max_steps keeps the schedule's shape."""
    return float(final_factor) ** (1.0 / max(int(total), 1))


def is_multirun() -> bool:
    """True inside a job of `train.py -m ...` (any sweeper, any launcher)."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group() -> str | None:
    """`${sweep_group:}`: the W&B group of a run, so that the jobs of one sweep sit together.

    The sweep folder's path below `multirun/` (`2026-11-22_08-30-00` for the default
    `outputs/multirun/2026-11-22/08-30-00`), else the folder's own name; null in a single run.
    """
    if not is_multirun():
        return None
    parts = Path(str(HydraConfig.get().sweep.dir)).parts
    below = parts[len(parts) - parts[::-1].index("multirun") :] if "multirun" in parts else ()
    return "_".join(below) or parts[-1]


def run_tags(user_tags: ListConfig | list[str] | None, facts: DictConfig | dict) -> ListConfig:
    """`${run_tags:${tags},{problem: ..., precision: ...}}`: `key:value` tags that let W&B filter
    runs by what they ran, followed by the user's own `tags`. (A ListConfig, not a list, so that
    `--cfg job --resolve` can resolve it in place.)"""
    tags = [f"{key}:{value}" for key, value in facts.items()] + [str(t) for t in user_tags or []]
    return ListConfig(tags)


# One folder per base path and process: Hydra resolves `hydra.run.dir` more than once per run.
_UNIQUE_DIRS: dict[str, str] = {}


def unique_dir(base: str) -> str:
    """`${unique_dir:outputs/${now:...}/${now:...}}`: a run or sweep folder no other run shares.

    Two runs started in the same second (a SLURM array, two terminals) would otherwise write into
    one folder. The folder is claimed with an exclusive mkdir, so of two racing processes one gets
    `base`, the other `base-1` (then `-2`, ...). Cached per process, and by OmegaConf in the config
    (Hydra copies that cache into every sweep job's config, also in joblib and SLURM workers), so
    one run resolves to one folder however often it is asked.

    A config file must not replace `hydra.run.dir` or `hydra.sweep.dir` (OmegaConf's merge
    resolves the value it replaces, which would claim a folder no run uses): an experiment sets
    `paths.sweep_root` instead, as experiment/precision_study.yaml does.

    The processes of one DDP run started by srun or torchrun each compose the config: they must
    share the folder, not claim one each, so there it is taken as it is (give them
    `hydra.run.dir=...`, the README's commands do, since they may not start in the same second).
    """
    from mpsciml.distributed.environment import external_world

    if base not in _UNIQUE_DIRS and external_world() is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
        _UNIQUE_DIRS[base] = base
    if base not in _UNIQUE_DIRS:
        Path(base).parent.mkdir(parents=True, exist_ok=True)
        for attempt in itertools.count():
            candidate = base if attempt == 0 else f"{base}-{attempt}"
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            _UNIQUE_DIRS[base] = candidate
            break
    return _UNIQUE_DIRS[base]


def register_resolvers() -> None:
    """Idempotent; called at import of train.py. Launchers that run jobs in other processes
    (joblib, submitit) restore Hydra's state there, which includes OmegaConf's resolvers."""
    for name, resolver in (
        ("wandb_offline", wandb_offline),
        ("int_fraction", int_fraction),
        ("decay_per_step", decay_per_step),
        ("sweep_group", sweep_group),
        ("run_tags", run_tags),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)


# What `objective` may name: numbers of summary.json that a sweeper can minimise.
OBJECTIVE = re.compile(r"l2|l2_\w+|step_ms|train_seconds|wall_seconds")
OBJECTIVE_HELP = (
    "l2 (mean relative L2 over the fields), l2_<field>, step_ms, train_seconds or wall_seconds, "
    "or a list of these (multi-objective)"
)


def _require(condition: bool, key: str, value: Any, allowed: str) -> None:
    if not condition:
        raise ConfigError(f"{key}={value!r} is invalid: {allowed}")


def _finite_number(value: Any) -> bool:
    """A real number that is not inf or nan: `lr=inf` would train one step and then diverge."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(value: Any) -> bool:
    return _finite_number(value) and value > 0


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# numpy's seeds (and so Lightning's seed_everything) are unsigned 32-bit integers.
SEED_RANGE = range(0, 2**32)
# Characters W&B refuses in a project name (wandb.sdk.wandb_settings), and its length limit.
WANDB_PROJECT_FORBIDDEN = "/\\#?%:"
WANDB_PROJECT_MAX_LENGTH = 128


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
    hold = cfg.get("malloc_hold", True)
    _require(isinstance(hold, bool), "malloc_hold", hold, "true or false")
    seed = cfg.get("seed")
    _require(
        _integer(seed) and seed in SEED_RANGE, "seed", seed, "must be an integer in [0, 2**32 - 1]"
    )
    name = cfg.precision.get("name")
    _require(
        name in PRECISIONS or name == AUTO,
        "precision.name",
        name,
        f"allowed: {', '.join(PRECISIONS)}, {AUTO}",
    )
    compare_every = cfg.precision.get("compare_every")
    _require(
        compare_every is None or (_integer(compare_every) and compare_every > 0),
        "precision.compare_every",
        compare_every,
        "null (off) or an integer > 0 (an fp32 reference gradient every that many steps)",
    )
    optimizer = cfg.optimizer
    phases = [phase for phase in ("adam", "lbfgs") if optimizer.get(phase) is not None]
    _require(bool(phases), "optimizer", "{}", "needs an 'adam' or an 'lbfgs' section")
    for phase in phases:
        lr = optimizer[phase].get("lr")
        _require(_positive_number(lr), f"optimizer.{phase}.lr", lr, "must be a finite number > 0")
    if len(phases) == 2:
        switch = optimizer.get("switch_step")
        _require(
            isinstance(switch, int) and 0 <= switch <= steps,
            "optimizer.switch_step",
            switch,
            f"must be an integer step in [0, trainer.max_steps={steps}]",
        )
    objective = cfg.get("objective", "l2")
    names = [objective] if isinstance(objective, str) else list(objective or [])
    _require(
        bool(names) and all(isinstance(n, str) and OBJECTIVE.fullmatch(n) for n in names),
        "objective",
        objective,
        OBJECTIVE_HELP,
    )
    threads = cfg.get("threads")
    _require(
        threads in (None, "auto") or (isinstance(threads, int) and threads > 0),
        "threads",
        threads,
        "auto (1 thread for small networks on the CPU), null (torch's default) or an integer > 0",
    )
    for key, weight in (cfg.get("loss_weights") or {}).items():
        _require(
            _finite_number(weight) and weight >= 0,
            f"loss_weights.{key}",
            weight,
            "must be a finite number >= 0",
        )
    resample_every = cfg.get("resample_every")
    _require(
        resample_every is None or (_integer(resample_every) and resample_every > 0),
        "resample_every",
        resample_every,
        "null (fixed points) or an integer > 0 (fresh points every that many steps)",
    )
    fixed_fields = cfg.get("fixed_fields", False)
    _require(
        isinstance(fixed_fields, bool),
        "fixed_fields",
        fixed_fields,
        "true (one fixed set of parameter fields) or false (fresh fields every step)",
    )
    try:  # sampling.adaptive and its settings (`data.adaptive_settings`)
        adaptive_settings(cfg)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    try:  # weighting=: the method and its settings (`weighting.registry`)
        check_weighting(cfg.get("weighting"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    validate_precision_schedule(cfg.precision.get("schedule"), steps)
    if name == AUTO:
        validate_auto(cfg)
    validate_wandb_project(cfg.get("logger"))
    resume_checkpoint(cfg.get("resume"))


def validate_precision_schedule(schedule: Any, max_steps: int) -> None:
    """`precision.schedule=[{step: 3000, precision: fp32}, ...]`: each switch must name a known
    precision and happen within the run (a step at or past max_steps would silently never come).
    An entry may switch the spectral layers' precision too, or only that
    (`{step: 800, spectral_precision: mixed}`); whether the model has spectral layers is checked
    once it is built (`callbacks.precision_schedule.check_spectral_schedule`)."""
    if not schedule:
        return
    shape = "{step: <int>, precision: <name>} and/or spectral_precision: <full|mixed|half>"
    _require(
        isinstance(schedule, ListConfig | list),
        "precision.schedule",
        schedule,
        f"must be a list of {shape}",
    )
    for index, entry in enumerate(schedule):
        key = f"precision.schedule[{index}]"
        _require(
            isinstance(entry, DictConfig | dict)
            and "step" in entry
            and len(set(entry) & {"precision", "spectral_precision"}) >= 1
            and set(entry) <= {"step", "precision", "spectral_precision"},
            key,
            entry,
            f"must be {shape}",
        )
        step = entry["step"]
        _require(
            _integer(step) and 0 <= step < max_steps,
            f"{key}.step",
            step,
            f"must be an integer step in [0, trainer.max_steps={max_steps})",
        )
        if "precision" in entry:
            name = entry["precision"]
            _require(
                name in PRECISIONS, f"{key}.precision", name, f"allowed: {', '.join(PRECISIONS)}"
            )
        if "spectral_precision" in entry:
            mode = entry["spectral_precision"]
            _require(
                mode in SPECTRAL_PRECISIONS,
                f"{key}.spectral_precision",
                mode,
                f"allowed: {', '.join(SPECTRAL_PRECISIONS)}",
            )


#: what precision=auto may probe: every registry precision but fp16, whose Adam needs its own
#: epsilon floor (conf/precision/fp16.yaml's adam_eps), which one run's optimizer cannot have
#: for one candidate only
AUTO_CANDIDATES = tuple(name for name in PRECISIONS if name != "fp16")


def validate_auto(cfg: DictConfig) -> None:
    """precision=auto's own keys, and the runs where measuring makes no sense: said in one line
    before anything is built (each of these would otherwise train in a precision auto did not
    choose, or measure something the run never runs)."""
    precision = cfg.precision
    candidates = precision.get("candidates")
    _require(
        isinstance(candidates, ListConfig | list)
        and len(candidates) > 0
        and all(c in AUTO_CANDIDATES for c in candidates)
        and len(set(candidates)) == len(candidates),
        "precision.candidates",
        OmegaConf.to_container(candidates) if isinstance(candidates, ListConfig) else candidates,
        f"a non-empty list of distinct precisions from {', '.join(AUTO_CANDIDATES)}",
    )
    probe_steps = precision.get("probe_steps")
    _require(
        _integer(probe_steps) and probe_steps >= 1,
        "precision.probe_steps",
        probe_steps,
        "must be an integer >= 1 (steps each candidate trains in the probe; 30 by default)",
    )
    min_cosine = precision.get("min_cosine")
    _require(
        _finite_number(min_cosine) and -1 <= min_cosine <= 1,
        "precision.min_cosine",
        min_cosine,
        "must be a number in [-1, 1]",
    )
    max_rel_error = precision.get("max_rel_error")
    _require(
        _finite_number(max_rel_error) and max_rel_error >= 0,
        "precision.max_rel_error",
        max_rel_error,
        "must be a finite number >= 0",
    )
    _require(
        not precision.get("schedule"),
        "precision.schedule",
        OmegaConf.to_container(precision.schedule)
        if isinstance(precision.schedule, ListConfig)
        else precision.schedule,
        "cannot be given with precision=auto (a schedule names its precisions; auto picks one): "
        "choose precision=<name> with the schedule, or drop the schedule",
    )
    optimizer = cfg.optimizer
    adam_steps = 0 if optimizer.get("adam") is None else cfg.trainer.max_steps
    if optimizer.get("adam") is not None and optimizer.get("lbfgs") is not None:
        adam_steps = optimizer.get("switch_step")
    _require(
        adam_steps != 0,
        "precision",
        AUTO,
        "has nothing to choose in an L-BFGS-only run (L-BFGS runs in fp32 whatever precision= "
        "says): use precision=fp32",
    )
    _require(
        cfg.get("resume") is None,
        "precision",
        AUTO,
        "cannot resume (the run continues in the precision it trained in): give "
        "precision=<summary.json's precision.chosen> with resume=",
    )
    _require(
        not cfg.get("compile", False),
        "precision",
        AUTO,
        "is not available with compile=true yet (each candidate would compile its own step): "
        "run precision=auto once without compile, then give the precision it chose",
    )


def validate_wandb_project(loggers: Any) -> None:
    """W&B rejects some project names only when the run starts, with a traceback; say it now."""
    wandb = (loggers or {}).get("wandb")
    if wandb is None:
        return
    project = wandb.get("project")
    _require(
        project is None
        or (
            isinstance(project, str)
            and 0 < len(project) <= WANDB_PROJECT_MAX_LENGTH
            and not any(char in WANDB_PROJECT_FORBIDDEN for char in project)
        ),
        "logger.wandb.project",
        project,
        f"must be 1-{WANDB_PROJECT_MAX_LENGTH} characters without any of "
        f"{' '.join(WANDB_PROJECT_FORBIDDEN)}",
    )


def resume_checkpoint(resume: Any) -> str | None:
    """The checkpoint `resume=` names: a .ckpt file, or a run folder (its checkpoints/last.ckpt).

    A relative path is taken from where the user launched train.py, not the run folder Hydra
    changed into, so `resume=outputs/<date>/<time>` works as typed.
    """
    if resume is None:
        return None
    path = Path(str(resume)).expanduser()
    if not path.is_absolute() and HydraConfig.initialized():
        path = Path(HydraConfig.get().runtime.cwd) / path
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    _require(
        path.is_file(),
        "resume",
        str(resume),
        f"no checkpoint at {path}; give a .ckpt file or a run folder with checkpoints/last.ckpt",
    )
    return str(path)
