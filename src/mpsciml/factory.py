"""From config to objects: the network that fits the problem, and the module that trains it.

A PDE problem is solved by a PINN (a pointwise network such as the MLP), an operator problem is
learned by a DeepONet; a mismatch is a one-line ConfigError, not a keyword error from deep inside
Hydra's instantiation. A DeepONet with `model.pod_modes=K` gets the POD basis of the training
outputs as its trunk (POD-DeepONet), which needs the problem's training data, so it is built here.
"""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from mpsciml.config import ConfigError
from mpsciml.models.deeponet import DeepONet
from mpsciml.modules.base import SciMLModule
from mpsciml.modules.operator import OperatorModule
from mpsciml.modules.pinn import PINNModule
from mpsciml.problems.base import Problem
from mpsciml.problems.operator import OperatorProblem


def check_model_fits(cfg: DictConfig, problem: Any) -> None:
    """An operator problem needs a DeepONet, a PDE problem a pointwise network: say so plainly
    instead of failing on a keyword argument deep inside instantiation."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    model_name = choices.get("model", cfg.model._target_.rsplit(".", 1)[-1])
    problem_name = choices.get("problem", type(problem).__name__)
    is_operator_model = cfg.model._target_.endswith(".DeepONet")
    if isinstance(problem, OperatorProblem) and not is_operator_model:
        raise ConfigError(
            f"problem={problem_name} learns an operator and needs model=deeponet "
            f"(got model={model_name})"
        )
    if isinstance(problem, Problem) and is_operator_model:
        raise ConfigError(
            f"problem={problem_name} is a PDE solved by a PINN and needs a pointwise model such "
            f"as model=mlp (got model={model_name}; DeepONet problems: antiderivative, "
            "advection, diffusion_reaction)"
        )


def build_model(model_cfg: DictConfig, problem: Any) -> nn.Module:
    """The network, sized by the problem; a POD trunk from the training outputs if asked."""
    model_cfg = model_cfg.copy()
    with open_dict(model_cfg):
        pod_modes = model_cfg.pop("pod_modes", None)
    if not pod_modes:
        return instantiate(model_cfg, **problem.model_sizes())
    data = problem.train_data()
    if data is None or not data.aligned or problem.physics_conditions():
        raise ConfigError(
            f"model.pod_modes={pod_modes}: a POD trunk exists only on the fixed grid of aligned "
            "training data, without physics terms (e.g. problem=antiderivative or advection)"
        )
    return DeepONet.with_pod_trunk(
        data.outputs,
        int(pod_modes),
        problem.n_sensors,
        branch_hidden=list(model_cfg.branch_hidden),
        activation=model_cfg.activation,
        init=model_cfg.init,
        grid=data.trunk,
    )


def build_module(cfg: DictConfig, problem: Any, model: Any) -> SciMLModule:
    """The LightningModule for the problem's kind: PINN for PDEs, operator learning otherwise."""
    if isinstance(problem, OperatorProblem):
        return OperatorModule(
            problem,
            model,
            cfg.optimizer,
            loss_weights=cfg.loss_weights,
        )
    return PINNModule(
        problem,
        model,
        cfg.optimizer,
        loss_weights=cfg.loss_weights,
        seed=cfg.seed,
        derivatives=cfg.get("derivatives", "autograd"),
    )
