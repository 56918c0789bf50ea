"""From the `weighting` config node to a rule attached to a module (or to nothing: `fixed`).

`fixed` attaches no callback at all: the step is the step it always was (bitwise, at the same
speed), and the summary still says which weights ran. The other methods are checked here in one
line each (an unknown method, an unknown setting, update_every < 1, a bad value from the rule's
own constructor) before anything trains.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping
from typing import Any

from mpsciml.weighting.callback import LossWeighting
from mpsciml.weighting.lr_annealing import LearningRateAnnealing
from mpsciml.weighting.method import WeightingMethod
from mpsciml.weighting.ntk import NTKWeighting
from mpsciml.weighting.relobralo import ReLoBRaLo
from mpsciml.weighting.softadapt import SoftAdapt

FIXED = "fixed"
#: the adaptive rules by `weighting=` option
METHODS: dict[str, type[WeightingMethod]] = {
    rule.name: rule for rule in (LearningRateAnnealing, ReLoBRaLo, SoftAdapt, NTKWeighting)
}
#: every `weighting=` option
ALLOWED = (FIXED, *METHODS)
#: settings the registry reads itself or fills in, not the rule's constructor
OWN_KEYS = ("method", "update_every")
FILLED_IN = ("terms", "seed")


def check_weighting(node: Mapping[str, Any] | None) -> None:
    """The node's method and settings, without a module (config validation): one line each."""
    method, settings, _ = _parts(node)
    if method == FIXED:
        if settings:
            raise ValueError(
                f"weighting.{next(iter(settings))} is not a setting of weighting=fixed (it has "
                "none; its weights are `loss_weights`)"
            )
        return
    parameters = inspect.signature(METHODS[method].__init__).parameters
    known = [key for key in parameters if key not in ("self", *FILLED_IN)]
    for key in settings:
        if key not in known:
            raise ValueError(
                f"weighting.{key} is not a setting of weighting={method}; settings: "
                f"{', '.join((*OWN_KEYS, *known))}"
            )
    # the values, checked by the rule's constructor on stand-in terms (a reference term and
    # another), so that a bad value stops before the problem is built; the real terms are
    # checked again when the rule is attached
    stand_in = [str(settings.get("reference", "pde")), "__another_term__"]
    METHODS[method](stand_in, **settings)


def _parts(node: Mapping[str, Any] | None) -> tuple[str, dict[str, Any], int]:
    node = dict(node or {"method": FIXED})
    method = node.pop("method", FIXED)
    if method not in ALLOWED:
        raise ValueError(f"weighting.method={method!r} is invalid: allowed: {', '.join(ALLOWED)}")
    update_every = node.pop("update_every", 1)
    if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
        raise ValueError(
            f"weighting.update_every={update_every!r} is invalid: must be an integer >= 1 "
            "(steps between weight updates)"
        )
    return str(method), node, update_every


def fixed_report(module: Any) -> dict[str, Any]:
    """summary.json `weighting` of fixed weights (a module-level function: the module, summary
    parts included, must pickle, e.g. for the precision probe's copies)."""
    return {"method": FIXED, "settings": {}, "weights": dict(module.loss_weights), "updates": 0}


def attach_weighting(module: Any, node: Mapping[str, Any] | None, seed: int = 0) -> None:
    """Give `module` its rule (a callback moving `module.loss_weights`) and its summary part."""
    check_weighting(node)
    method, settings, update_every = _parts(node)
    if method == FIXED:
        module.summary_parts["weighting"] = functools.partial(fixed_report, module)
        return
    rule = METHODS[method]
    if rule.uses_gradients and getattr(module, "compiled", None) is not None:
        raise ValueError(
            f"weighting={method} takes per-term gradients outside the step, which the compiled "
            "step (compile=true) does not offer: use compile=false or a loss-based weighting "
            "(relobralo, softadapt)"
        )
    if "seed" in inspect.signature(rule.__init__).parameters:
        settings["seed"] = seed
    callback = LossWeighting(module, rule(module.term_names, **settings), update_every)
    module.strategy_callbacks.append(callback)
    module.summary_parts["weighting"] = callback.report
