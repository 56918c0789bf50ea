"""From config to objects: the model a problem declares it needs, and the module that trains it and
the DataModule that feeds it.

A problem declares the `model_kind` it needs and a model class the kinds it `accepts`
(`mpsciml.contract`); they are compared before anything is instantiated, so a mismatch is one
line naming both (and the model options that would fit), never a keyword error from deep inside
Hydra's instantiation, and no class name is special here. The LightningModule follows from the
kind. A model class offering the `build_with_training_data` hook is built through it, with the
problem's training data at hand (POD-DeepONet takes its trunk from the training outputs).

A problem with the class attribute `data_free = True` (DiffNet's Poisson and Burgers on grids)
is trained on its PDE residual instead of on data: its kind keeps the model check (any model
of the kind fits, e.g. model=fno on poisson_grid, model=diffnet on darcy) and `DATA_FREE_SOLVERS`
gives the module and the DataModule.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mpsciml.callbacks.adaptive_sampling import attach_adaptive_sampling
from mpsciml.config import ConfigError
from mpsciml.constraints import (
    active_weights,
    periodic_model_config,
    report_constraints,
    with_output_transform,
)
from mpsciml.contract import AlignedTrainingData, ModelKind, SensorOperator, accepted_kinds
from mpsciml.data.adaptive_settings import adaptive_settings
from mpsciml.data.functions import FunctionBatches
from mpsciml.data.grid_batches import GridBatches
from mpsciml.data.parameter_batches import ParameterBatches
from mpsciml.data.points import CollocationPoints
from mpsciml.data.steps import StepDataModule
from mpsciml.derivatives.engine import taylor_blocker
from mpsciml.modules.base import SciMLModule
from mpsciml.modules.compiled_loss import check_compile_options, resolve_cpp_wrapper
from mpsciml.modules.data_free_grid import DataFreeGridModule
from mpsciml.modules.grid_operator import GridOperatorModule
from mpsciml.modules.lean_guards import check_guard_setting
from mpsciml.modules.operator import OperatorModule
from mpsciml.modules.pinn import PINNModule
from mpsciml.precision.registry import resolve_device
from mpsciml.weighting import attach_weighting

#: the optional model-class hook of `contract.TrainingDataBuilder`
TRAINING_DATA_HOOK = "build_with_training_data"


def _pointwise_module(cfg: DictConfig, problem: Any, model: nn.Module) -> SciMLModule:
    compile_step = bool(cfg.get("compile", False))
    backend = cfg.get("compile_backend", "inductor")
    if compile_step and (reason := taylor_blocker(model)) is not None:
        raise ConfigError(
            f"compile=true needs Taylor-mode derivatives, which cannot run through "
            f"model={_choice(cfg, 'model')} ({reason}); use compile=false"
        )
    module = PINNModule(
        problem,
        model,
        cfg.optimizer,
        loss_weights=active_weights(cfg.loss_weights, problem),
        seed=cfg.seed,
        derivatives=cfg.get("derivatives", "autograd"),
        compile=compile_step,
        compile_backend=backend,
        compile_mode=cfg.get("compile_mode"),
        compile_cpp_wrapper=compile_step
        and resolve_cpp_wrapper(
            cfg.get("compile_cpp_wrapper", "auto"), backend, resolve_device(cfg.trainer.accelerator)
        ),
        taylor_laplacian=cfg.get("taylor_laplacian", "summed"),
        compile_guards=cfg.get("compile_guards", "lean"),
    )
    report_constraints(module, problem, cfg.model, cfg.loss_weights)
    return module


def _sensor_operator_module(cfg: DictConfig, problem: Any, model: nn.Module) -> SciMLModule:
    if not isinstance(model, SensorOperator):
        raise ConfigError(
            f"model={_choice(cfg, 'model')} accepts {ModelKind.SENSOR_OPERATOR} but lacks "
            "forward_indexed/forward_aligned (see mpsciml.contract.SensorOperator)"
        )
    return OperatorModule(
        problem,
        model,
        cfg.optimizer,
        loss_weights=cfg.loss_weights,
        derivatives=cfg.get("derivatives", "autograd"),
    )


def _grid_operator_module(cfg: DictConfig, problem: Any, model: nn.Module) -> SciMLModule:
    return GridOperatorModule(problem, model, cfg.optimizer, loss_weights=cfg.loss_weights)


def _data_free_grid_module(cfg: DictConfig, problem: Any, model: nn.Module) -> SciMLModule:
    return DataFreeGridModule(problem, model, cfg.optimizer, loss_weights=cfg.loss_weights)


def _collocation_points(cfg: DictConfig, problem: Any, module: SciMLModule) -> StepDataModule:
    """Points fixed, or redrawn every `resample_every` steps until L-BFGS takes over; adaptive
    ones (`sampling.adaptive`) move inside the module's step (`callbacks.adaptive_sampling`)."""
    attach_adaptive_sampling(cfg, problem, module)
    return CollocationPoints(
        problem,
        cfg.seed,
        cfg.trainer.max_steps,
        resample_every=cfg.get("resample_every"),
        freeze_at=module.first_phase_end(),
    )


def _function_batches(cfg: DictConfig, problem: Any, module: SciMLModule) -> StepDataModule:
    return FunctionBatches(problem, cfg.seed, cfg.trainer.max_steps)


def _grid_batches(cfg: DictConfig, problem: Any, module: SciMLModule) -> StepDataModule:
    return GridBatches(problem, cfg.seed, cfg.trainer.max_steps)


def _parameter_batches(cfg: DictConfig, problem: Any, module: SciMLModule) -> StepDataModule:
    """Fresh parameter fields every step; one fixed batch from where L-BFGS takes over (from the
    start in an L-BFGS-only run), since its line searches need one objective; with
    `fixed_fields=true` the fields of step 0 throughout (a finite training set)."""
    lbfgs_only = cfg.optimizer.get("adam") is None and cfg.optimizer.get("lbfgs") is not None
    fixed = lbfgs_only or cfg.get("fixed_fields", False)
    freeze_at = 0 if fixed else module.first_phase_end()
    return ParameterBatches(problem, cfg.seed, cfg.trainer.max_steps, freeze_at=freeze_at)


@dataclass(frozen=True)
class Solver:
    """How problems of one kind are trained: the LightningModule and the DataModule feeding it."""

    module: Callable[[DictConfig, Any, nn.Module], SciMLModule]
    datamodule: Callable[[DictConfig, Any, SciMLModule], StepDataModule]


#: the solver of each kind of problem
SOLVERS: dict[ModelKind, Solver] = {
    ModelKind.POINTWISE: Solver(_pointwise_module, _collocation_points),
    ModelKind.SENSOR_OPERATOR: Solver(_sensor_operator_module, _function_batches),
    ModelKind.GRID_OPERATOR: Solver(_grid_operator_module, _grid_batches),
}

#: the solver of each kind of data-free problem (`data_free = True`: trained on its residual)
DATA_FREE_SOLVERS: dict[ModelKind, Solver] = {
    ModelKind.GRID_OPERATOR: Solver(_data_free_grid_module, _parameter_batches),
}


def check_model_fits(cfg: DictConfig, problem: Any) -> None:
    """The problem's declared kind against the model class's `accepts`, before instantiation."""
    problem_name = _choice(cfg, "problem", type(problem).__name__)
    needed = getattr(problem, "model_kind", None)
    if not isinstance(needed, ModelKind):
        raise ConfigError(
            f"problem={problem_name}: {type(problem).__name__} declares no model_kind "
            f"(one of {', '.join(repr(str(k)) for k in ModelKind)}; see mpsciml.contract)"
        )
    if needed not in (DATA_FREE_SOLVERS if is_data_free(problem) else SOLVERS):
        raise ConfigError(
            f"problem={problem_name} needs {_article(needed)} {needed} model: no solver for "
            f"{needed} problems yet (solved: {', '.join(SOLVERS)})"
        )
    check_compile_fits(cfg, problem_name, needed)
    model_class = resolve_model_class(cfg.model)
    model_name = _choice(cfg, "model", model_class.__name__)
    accepts = _accepts(model_class, model_name)
    if needed not in accepts:
        fitting = model_options_accepting(needed)
        hint = f"; models that fit: {', '.join(fitting)}" if fitting else ""
        raise ConfigError(
            f"problem={problem_name} needs {_article(needed)} {needed} model ({needed.what}); "
            f"model={model_name} accepts: {', '.join(accepts)}{hint}"
        )


def check_compile_fits(cfg: DictConfig, problem_name: str, kind: ModelKind) -> None:
    """`compile=true` compiles the PINN step (pointwise problems) with a backend and mode torch
    knows; anything else is one line before the model is built."""
    if not cfg.get("compile", False):
        return
    if kind is not ModelKind.POINTWISE:
        raise ConfigError(
            f"compile=true compiles the PINN step of pointwise problems only; "
            f"problem={problem_name} is {_article(kind)} {kind} problem: use compile=false"
        )
    try:
        check_compile_options(
            cfg.get("compile_backend", "inductor"),
            cfg.get("compile_mode"),
            cfg.get("compile_cpp_wrapper", "auto"),
        )
        check_guard_setting(cfg.get("compile_guards", "lean"))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def build_model(model_cfg: DictConfig, problem: Any) -> nn.Module:
    """The network, sized by the problem; through the class's training-data hook if it has one."""
    model_class = resolve_model_class(model_cfg)
    sizes = problem.model_sizes()
    if not hasattr(model_class, TRAINING_DATA_HOOK):
        # periodic inputs and hard constraints: conditions met by construction (`constraints`)
        model = instantiate(periodic_model_config(model_cfg, problem), **sizes)
        return with_output_transform(model, problem)
    hook = f"{model_cfg._target_}.{TRAINING_DATA_HOOK}"
    data = aligned_training_data(problem)
    return instantiate(model_cfg, _target_=hook, aligned_training_data=data, **sizes)


def build_module(cfg: DictConfig, problem: Any, model: nn.Module) -> SciMLModule:
    """The LightningModule for the problem's kind (`SOLVERS`), with its loss weighting
    (`weighting=`: a rule moving `loss_weights` as it trains, or fixed weights)."""
    module = _solver(problem).module(cfg, problem, model)
    attach_weighting(module, cfg.get("weighting"), cfg.seed)
    return module


def build_datamodule(cfg: DictConfig, problem: Any, module: SciMLModule) -> StepDataModule:
    """The DataModule of the problem's kind (`SOLVERS`), seeded by the run seed."""
    solver = _solver(problem)
    if solver.datamodule is not _collocation_points and adaptive_settings(cfg) is not None:
        raise ConfigError(
            f"sampling.adaptive={cfg.sampling.adaptive} moves a PINN's collocation points; "
            f"problem={_choice(cfg, 'problem')} has none: use sampling.adaptive=null"
        )
    if solver.datamodule is not _parameter_batches and cfg.get("fixed_fields", False):
        raise ConfigError(
            f"fixed_fields=true fixes a data-free grid problem's parameter fields; "
            f"problem={_choice(cfg, 'problem')} has none: use fixed_fields=false"
        )
    return solver.datamodule(cfg, problem, module)


def _solver(problem: Any) -> Solver:
    kind = problem.model_kind
    solvers, what = (DATA_FREE_SOLVERS, "data-free ") if is_data_free(problem) else (SOLVERS, "")
    if kind not in solvers:
        raise ConfigError(f"no solver for {what}{kind} problems yet")
    return solvers[kind]


def is_data_free(problem: Any) -> bool:
    """Whether the problem trains on its residual alone (class attribute `data_free`)."""
    return bool(getattr(problem, "data_free", False))


def aligned_training_data(problem: Any) -> AlignedTrainingData:
    """The problem's training data on one fixed grid without physics terms, loaded on demand
    (None if the problem has none): what a POD basis can be computed from."""

    def load() -> Any:
        train_data = getattr(problem, "train_data", None)
        data = train_data() if train_data is not None else None
        if data is None or not data.aligned or problem.physics_conditions():
            return None
        return data

    return load


def resolve_model_class(model_cfg: DictConfig) -> type:
    """The class `model._target_` names, imported; a bad target is one line."""
    target = model_cfg.get("_target_")
    if not target:
        raise ConfigError("model._target_ is missing: a model config names its class")
    try:
        model_class = get_class(target)
    except Exception as exc:  # ImportError, AttributeError, ValueError from Hydra's locate
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model._target_={target} cannot be imported: {reason}") from exc
    return model_class


def model_options_accepting(kind: ModelKind) -> list[str]:
    """The model options (conf/model/<name>.yaml anywhere on Hydra's search path) whose class
    accepts `kind`, for the hint of a mismatch; best effort, never an error of its own."""
    names: list[str] = []
    for directory in _model_config_dirs():
        for path in sorted(directory.glob("*.yaml")):
            if path.stem in names:
                continue  # an earlier search-path entry wins, as in Hydra
            try:
                target = OmegaConf.load(path).get("_target_")
                kinds = accepted_kinds(get_class(target)) if target else None
            except Exception:
                continue
            if kinds and kind in kinds:
                names.append(path.stem)
    return names


def _model_config_dirs() -> Iterator[Path]:
    if not HydraConfig.initialized():
        return
    for source in HydraConfig.get().runtime.config_sources:
        directory: Any = None
        if source.schema == "file":
            directory = Path(source.path) / "model"
        elif source.schema == "pkg":
            try:
                directory = importlib.resources.files(source.path.replace("/", ".")) / "model"
            except (ModuleNotFoundError, TypeError):
                continue
        if isinstance(directory, Path) and directory.is_dir():
            yield directory


def _accepts(model_class: type, model_name: str) -> tuple[ModelKind, ...]:
    try:
        accepts = accepted_kinds(model_class)
    except ValueError as exc:
        raise ConfigError(f"model={model_name}: {model_class.__name__}.accepts: {exc}") from exc
    if not accepts:
        raise ConfigError(
            f"model={model_name}: {model_class.__name__} declares no `accepts` (the kinds of "
            f"model it is: {', '.join(repr(str(k)) for k in ModelKind)}; see mpsciml.contract)"
        )
    return accepts


def _choice(cfg: DictConfig, group: str, fallback: str | None = None) -> str:
    """The option chosen for a config group (model=deeponet), else the given fallback."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    if choices.get(group):
        return str(choices[group])
    return fallback or str(cfg[group].get("_target_", "?")).rsplit(".", 1)[-1]


def _article(kind: ModelKind) -> str:
    return "an" if str(kind)[0] in "aeiou" else "a"
