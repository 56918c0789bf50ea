"""Conditions a PINN satisfies by construction instead of by loss: output transforms (hard
constraints) and periodic inputs.

A problem may declare an `OutputTransform` (`Problem.output_transform`): a formula
u = transform(x, N(x)) of the coordinates and the network's outputs that meets some conditions
exactly whatever N is, and the names of those conditions. With `problem.hard_constraints=true`
the factory wraps the network in it (`models.constrained.ConstrainedModel`), and the conditions it
makes exact leave the loss (`Problem.training_conditions`). A problem may also declare the inputs
its solution is periodic in and the condition that stands for the periodicity; with a periodic
network (`model.periodic`) that condition leaves the loss too. Either way summary.json's
`constraints` says what was dropped and why, so no term disappears silently.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any

from mpsciml.derivatives.jets import ColumnFormula


@dataclass(frozen=True)
class OutputTransform:
    """The formula (one for tensors and Taylor jets: arithmetic and .sin()/.cos()/.exp() only),
    the conditions it makes exact, and the formula in words for the summary."""

    formula: ColumnFormula
    exact: tuple[str, ...]
    description: str


def problems_with_transforms() -> list[str]:
    """The problem modules (config option names) whose problem declares an output transform."""
    import mpsciml.problems as package
    from mpsciml.problems.base import Problem

    names = []
    for info in pkgutil.iter_modules(package.__path__):
        try:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
        except Exception:  # a module that cannot import is not an option anyone can run
            continue
        for value in vars(module).values():
            declares = (
                isinstance(value, type)
                and issubclass(value, Problem)
                and value.__module__ == module.__name__
                and value.output_transform is not Problem.output_transform
            )
            if declares:
                names.append(info.name)
    return sorted(set(names))


def hard_constraint_conditions(problem: Any) -> dict[str, str]:
    """The conditions `problem.hard_constraints=true` makes exact, name -> why; a problem that
    declares no transform is a ValueError naming the ones that do."""
    transform = problem.output_transform()
    if transform is None:
        raise ValueError(
            f"problem.hard_constraints=true: problem {problem.name} declares no output transform; "
            f"problems that do: {', '.join(problems_with_transforms())} (and the operator "
            "problem diffusion_reaction)"
        )
    return {name: f"hard constraint: {transform.description}" for name in transform.exact}


def periodic_conditions(problem: Any, periodic: dict[int, float]) -> dict[str, str]:
    """The condition a periodic network makes exact, name -> why: the problem's
    `periodic_condition`, when the network is periodic in every declared periodic input with its
    declared period; else nothing (the condition stays a loss term)."""
    condition = getattr(problem, "periodic_condition", None)
    declared = dict(getattr(problem, "periodic_inputs", {}) or {})
    if not condition or not declared:
        return {}
    names = list(problem.input_names)
    covered = all(
        periodic.get(names.index(name)) == float(period) for name, period in declared.items()
    )
    if not covered:
        return {}
    inputs = ", ".join(f"{name} (period {period})" for name, period in declared.items())
    return {condition: f"periodic inputs: the network is periodic in {inputs}"}


def constraint_facts(
    problem: Any, periodic: dict[int, float] | None, unused_weights: list[str] | None = None
) -> dict[str, Any]:
    """summary.json `constraints`: the transform, the periodic inputs, the dropped conditions and
    the loss weights set aside with them."""
    transform = problem.output_transform() if problem.hard_constraints else None
    names = list(problem.input_names)
    return {
        "hard_constraints": bool(problem.hard_constraints),
        "output_transform": None if transform is None else transform.description,
        "periodic_inputs": {names[j]: p for j, p in (periodic or {}).items()},
        "dropped_conditions": dict(problem.exact_conditions),
        "unused_loss_weights": list(unused_weights or []),
    }
