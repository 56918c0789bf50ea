"""What the Taylor streams carry for a residual: its `carry` keys turned into stream directions.

Why a module of its own: a key is a `wrt` tuple, ("x",) for u_x and ("x", "x") for u_xx, or
(LAPLACIAN, "x", "y") for u_xx + u_yy asked for as a whole (`Derivatives.laplacian`). Which
keys a residual needs is found once (`probe_derivatives`); how they become streams is decided
here, so the forward pass, the compile check and the probe agree on one reading of a key.

A Laplacian becomes one summed second stream ("forward Laplacian") when it is the only second
derivative the residual needs: then its terms are never wanted apart, and the sum costs one
stream instead of one per direction. Otherwise (a single u_xx asked for as well, two different
Laplacians) its directions are carried apart and summed by `Derivatives.laplacian`.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

#: first element of a `carry` key that stands for a Laplacian: (LAPLACIAN, "x", "y") is
#: u_xx + u_yy, carried as one summed stream where it can be (no input is named like this)
LAPLACIAN = "laplacian"


@dataclass(frozen=True)
class CarryPlan:
    """Input positions whose first derivatives (`first`) and unmixed second derivatives
    (`second`) the streams carry; `summed`: `second` travels as one Laplacian stream."""

    first: tuple[int, ...]
    second: tuple[int, ...]
    summed: bool


def is_laplacian(key: tuple[str, ...]) -> bool:
    """Whether a `carry` key is a Laplacian, (LAPLACIAN, *inputs)."""
    return bool(key) and key[0] == LAPLACIAN


def plan_carry(carry: Collection[tuple[str, ...]], input_names: Sequence[str]) -> CarryPlan:
    """The stream directions for `carry`; KeyError naming any unknown input."""
    index = {name: i for i, name in enumerate(input_names)}
    names = [n for key in carry for n in (key[1:] if is_laplacian(key) else key)]
    if unknown := sorted({n for n in names if n not in index}):
        raise KeyError(f"carry: unknown input(s) {unknown}; inputs are {list(index)}")
    plain = [key for key in carry if key and not is_laplacian(key)]
    first = [index[key[0]] for key in plain]
    second = [index[key[0]] for key in plain if len(key) > 1 and key[1] == key[0]]
    sums = {tuple(dict.fromkeys(index[n] for n in key[1:])) for key in carry if is_laplacian(key)}
    if len(sums) == 1 and not second and len(next(iter(sums))) > 1:
        (dirs,) = sums
        return CarryPlan(tuple(dict.fromkeys([*dirs, *first])), dirs, True)
    for dirs in sorted(sums):
        first.extend(dirs)
        second.extend(dirs)
    return CarryPlan(tuple(dict.fromkeys(first)), tuple(dict.fromkeys(second)), False)


def carry_order(
    keys: Collection[tuple[str, ...]], input_names: Sequence[str]
) -> tuple[tuple[str, ...], ...]:
    """`keys` in a fixed order: first derivatives, then second, then Laplacians, each by input
    position. Never a set's order: the order of the directions in the batched streams moves
    the matmul blocking and so the last bits of every derivative, and a set of strings iterates
    in a different order in every Python process (hash randomisation)."""
    position = {name: i for i, name in enumerate(input_names)}

    def rank(key: tuple[str, ...]) -> tuple[bool, int, list[int]]:
        names = key[1:] if is_laplacian(key) else key
        return is_laplacian(key), len(names), [position[n] for n in names]

    return tuple(sorted(keys, key=rank))


#: how a Laplacian a residual asks for travels (`taylor_laplacian=`): one summed stream, or one
#: stream per direction (as before the summed stream existed: to compare, or to debug)
LAPLACIAN_MODES = ("summed", "apart")


def laplacians_apart(
    keys: Collection[tuple[str, ...]], input_names: Sequence[str]
) -> tuple[tuple[str, ...], ...]:
    """`keys` with every Laplacian replaced by its terms' first and second derivatives, so the
    streams carry them apart and `Derivatives.laplacian` adds them up."""
    apart: list[tuple[str, ...]] = []
    for key in keys:
        if is_laplacian(key):
            apart += [(name,) for name in key[1:]] + [(name, name) for name in key[1:]]
        else:
            apart.append(key)
    return carry_order(dict.fromkeys(apart), input_names)


def laplacian_streams(
    carries: Collection[Collection[tuple[str, ...]]], input_names: Sequence[str]
) -> str | None:
    """How the Laplacians of these conditions' carries travel: "summed" where every one that
    asks for a Laplacian gets the summed stream, "apart" where any is carried per direction,
    None where none asks for one (Burgers: nothing to report)."""
    plans = [plan_carry(keys, input_names) for keys in carries if any(map(is_laplacian, keys))]
    if not plans:
        return None
    return "summed" if all(plan.summed for plan in plans) else "apart"
