"""The factory's half of conditions met by construction: a periodic network and an output
transform, put together from the problem's declarations and the model options.

`model.periodic` names inputs by the problem's input names (or indices, or `problem`: what the
problem declares); the model class sees {index: period}. `problem.hard_constraints=true` wraps the
network in the problem's transform. Each records in the problem which conditions leave the loss
(`Problem.exact_conditions`), and the module reports it in summary.json under `constraints`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from typing import Any

from omegaconf import DictConfig, open_dict
from torch import nn

from mpsciml.models.constrained import ConstrainedModel
from mpsciml.models.periodic import resolve_periodic
from mpsciml.problems.base import Problem
from mpsciml.problems.transforms import constraint_facts, periodic_conditions

log = logging.getLogger(__name__)


def periodic_model_config(model_cfg: DictConfig, problem: Any) -> DictConfig:
    """`model_cfg` with `periodic` as {input index: period} (a copy; unchanged without the key).
    The problem's periodic condition leaves the loss when the network covers its periods."""
    spec = model_cfg.get("periodic")
    if spec is None:
        return model_cfg
    if not isinstance(problem, Problem):
        raise ValueError(
            "model.periodic: periodic inputs are for pointwise problems (PINNs) with named "
            "coordinates; set model.periodic=null"
        )
    resolved = resolve_periodic(spec, problem)
    dropped = periodic_conditions(problem, resolved or {})
    problem.exact_conditions |= dropped
    for name, why in dropped.items():
        log.info("condition %s leaves the loss (%s)", name, why)
    config = model_cfg.copy()
    with open_dict(config):
        config.periodic = resolved
    return config


def with_output_transform(model: nn.Module, problem: Any) -> nn.Module:
    """The network inside the problem's output transform when `problem.hard_constraints`."""
    if not (isinstance(problem, Problem) and problem.hard_constraints):
        return model
    transform = problem.output_transform()
    assert transform is not None  # the problem refused hard_constraints=true without one
    return ConstrainedModel(model, transform.formula)


def dropped_weights(loss_weights: Mapping[str, Any] | None, problem: Any) -> list[str]:
    """The loss weights that name a condition met by construction or one of its terms (a
    recipe's `ic_u: 10` for the wave): their terms are gone, so they are set aside (recorded)
    instead of refused as naming no term."""
    exact = getattr(problem, "exact_conditions", {})
    return [
        key
        for key in (loss_weights or {})
        if key in exact or any(key.startswith(f"{name}_") for name in exact)
    ]


def active_weights(loss_weights: Mapping[str, Any] | None, problem: Any) -> dict[str, Any]:
    """`loss_weights` without those of dropped conditions (`dropped_weights`)."""
    dropped = set(dropped_weights(loss_weights, problem))
    return {k: v for k, v in (loss_weights or {}).items() if k not in dropped}


def report_constraints(
    module: Any, problem: Any, model_cfg: DictConfig, loss_weights: Mapping[str, Any] | None
) -> None:
    """summary.json `constraints` for a pointwise run."""
    if not isinstance(problem, Problem):
        return
    spec = model_cfg.get("periodic")
    periodic = resolve_periodic(spec, problem) if spec is not None else None
    unused = dropped_weights(loss_weights, problem)
    # a partial of a module-level function, not a lambda: the module must pickle
    module.summary_parts["constraints"] = partial(constraint_facts, problem, periodic, unused)
