"""What every adaptive loss-weighting rule shares: its multipliers, its settings, its state.

A rule sees, at each update, the unweighted loss terms of the step just taken (global values,
floats) and, if it asks for them (`uses_gradients`), each term's gradient with respect to the
trainable parameters as one flat float32 (float64 in an fp64 run) vector, computed apart from
the step (`weighting.term_gradients`). It answers a multiplier per term. The multiplier is
applied on top of the user's `loss_weights` (the effective weight is their product), so
`loss_weights` stays a prior the user can still set, and every multiplier starts at 1.

The arithmetic of every rule is Python float (float64): the weights are a few numbers, and
doing them outside any tensor dtype keeps them out of the run's precision entirely.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from torch import Tensor


class WeightingMethod(ABC):
    """One loss-balancing rule: `update` turns observations into new multipliers."""

    #: the `weighting=` option (and `weighting.method`) naming this rule
    name: ClassVar[str]
    #: whether `update` needs the per-term parameter gradients (costs one backward per term)
    uses_gradients: ClassVar[bool]

    def __init__(self, terms: Sequence[str]) -> None:
        if len(terms) < 2:
            raise ValueError(
                f"weighting={self.name} balances loss terms against each other; this run has "
                f"{len(terms)} term ({', '.join(terms) or 'none'}): use weighting=fixed"
            )
        self.terms = list(terms)
        self.multipliers: dict[str, float] = dict.fromkeys(self.terms, 1.0)

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The rule's settings as the summary records them."""

    @abstractmethod
    def update(
        self, losses: Mapping[str, float], gradients: Mapping[str, Tensor] | None, step: int
    ) -> bool:
        """Move `self.multipliers` given the losses of the step just taken (and the terms'
        gradients if `uses_gradients`); `step` is the number of steps done. False if the
        observation was unusable (a non-finite loss or gradient) and nothing changed."""

    def state_dict(self) -> dict[str, Any]:
        """What `load_state_dict` needs to continue exactly (multipliers + the rule's memory)."""
        return {"multipliers": dict(self.multipliers)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.multipliers = {term: float(state["multipliers"][term]) for term in self.terms}


#: keeps a ratio or a normalisation finite when a loss is 0 or no term moved
EPS = 1e-12


def softmax_times_count(
    scores: Mapping[str, float], prefactors: Mapping[str, float] | None = None
) -> dict[str, float] | None:
    """Multipliers m * p_i exp(s_i) / sum_j p_j exp(s_j) over the m terms (p = 1 without
    prefactors), the form ReLoBRaLo and SoftAdapt share: they sum to m, so the total loss keeps
    its scale. Shifted by the largest score, so exp never overflows. None when the sum is 0
    (every prefactor 0): nothing to balance."""
    top = max(scores.values())
    weighted = {
        term: (1.0 if prefactors is None else prefactors[term]) * math.exp(score - top)
        for term, score in scores.items()
    }
    total = sum(weighted.values())
    if not total > 0.0:
        return None
    return {term: len(scores) * value / total for term, value in weighted.items()}


def finite(values: Mapping[str, float]) -> bool:
    """Every value a finite number (an overflowed step's losses are not an observation)."""
    return all(math.isfinite(value) for value in values.values())


def check_fraction(key: str, value: Any, low_open: bool = False) -> float:
    """A setting in [0, 1] ((0, 1] with `low_open`), as float, else one line naming it."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (0 < value <= 1 if low_open else 0 <= value <= 1):
        allowed = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"weighting.{key}={value!r} is invalid: must be a number in {allowed}")
    return float(value)


def check_positive(key: str, value: Any) -> float:
    """A finite setting > 0, as float, else one line naming it."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value <= 0:
        raise ValueError(f"weighting.{key}={value!r} is invalid: must be a finite number > 0")
    return float(value)
