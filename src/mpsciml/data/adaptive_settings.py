"""The `sampling:` block of the config: which adaptive collocation method runs, and with what.

Kept apart from the sampler itself (`data.adaptive_points`) and free of torch, so the config
check (`mpsciml.config.validate`) can read it before anything is built: a typo in a method name
costs a second, not a run. Every refusal is one line naming the key, the value and what is
allowed (a ValueError, which the config check turns into `ConfigError`, exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: `sampling.adaptive` values besides null (fixed or resampled points)
ADAPTIVE_METHODS = ("rar", "rad")


@dataclass(frozen=True)
class AdaptiveSettings:
    """What the adaptive sampler does.

    RAR (residual-based adaptive refinement, Lu et al. 2021, DeepXDE): every `every` steps the
    `n_add` candidates of largest residual join the condition's points, so the set grows by
    `n_add` per update. RAD (residual-based adaptive distribution, Wu et al. 2023): every `every`
    steps the condition's points are redrawn, as many as it has, from the candidates with
    probability p(x) ~ |r|^k / mean(|r|^k) + c (c keeps a uniform share; k sharpens).
    """

    method: str
    every: int = 500
    n_candidates: int = 10000
    n_add: int = 100
    k: float = 1.0
    c: float = 1.0
    conditions: tuple[str, ...] = ("pde",)

    def as_dict(self) -> dict[str, Any]:
        """The settings that matter for the method (summary.json `sampling`)."""
        common = {"method": self.method, "every": self.every, "n_candidates": self.n_candidates}
        own = {"n_add": self.n_add} if self.method == "rar" else {"k": self.k, "c": self.c}
        return {**common, **own, "conditions": list(self.conditions)}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _finite_non_negative(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def adaptive_settings(cfg: Mapping[str, Any]) -> AdaptiveSettings | None:
    """The run's adaptive settings from the whole config (None: `sampling.adaptive=null`), or a
    ValueError naming the bad key. Also refuses the combinations that make no sense:
    RAD with `resample_every` (both redraw the same points: the redraw would undo RAD's choice)
    and RAR with `compile=true` (the compiled step is specialised to fixed point counts, and
    RAR changes the count at every update: a recompile per update)."""
    block = cfg.get("sampling")
    if block is None:
        return None
    if not isinstance(block, Mapping):
        raise ValueError(f"sampling={block!r} must be a mapping with the key `adaptive`")
    method = block.get("adaptive")
    if method is None:
        return None
    if method not in ADAPTIVE_METHODS:
        raise ValueError(
            f"sampling.adaptive={method!r} is not an adaptive method; allowed: null, "
            f"{', '.join(ADAPTIVE_METHODS)}"
        )
    known = {"adaptive", "every", "n_candidates", "n_add", "k", "c", "conditions"}
    if unknown := sorted(set(block) - known):
        raise ValueError(
            f"sampling.{unknown[0]} is not a setting; allowed: {', '.join(sorted(known))}"
        )
    defaults = AdaptiveSettings(method)
    values = {key: block.get(key, getattr(defaults, key)) for key in known - {"adaptive"}}
    for key in ("every", "n_candidates", "n_add"):
        if not _positive_int(values[key]):
            raise ValueError(f"sampling.{key}={values[key]!r} is invalid: must be an integer > 0")
    for key in ("k", "c"):
        if not _finite_non_negative(values[key]):
            raise ValueError(f"sampling.{key}={values[key]!r} is invalid: must be a number >= 0")
    conditions = values["conditions"]
    if (
        isinstance(conditions, str)
        or not isinstance(conditions, Sequence)
        or not conditions
        or not all(isinstance(name, str) for name in conditions)
    ):
        raise ValueError(
            f"sampling.conditions={conditions!r} must be a non-empty list of condition names"
        )
    if method == "rad" and cfg.get("resample_every"):
        raise ValueError(
            "sampling.adaptive=rad redraws the points itself; resample_every would undo its "
            "choice: use one of them (resample_every=null)"
        )
    if method == "rar" and cfg.get("compile"):
        raise ValueError(
            "sampling.adaptive=rar changes the point count at every update, and compile=true "
            "recompiles for every new count: use sampling.adaptive=rad (same count) or "
            "compile=false"
        )
    values["conditions"] = tuple(conditions)
    values["k"], values["c"] = float(values["k"]), float(values["c"])
    return AdaptiveSettings(method=method, **values)
