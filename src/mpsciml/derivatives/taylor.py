"""Forward-mode ("Taylor-mode") input derivatives of an MLP, a faster `Derivatives`.

Why: in reverse mode a residual with second derivatives costs one backward pass per output plus
one per first derivative, each with ``create_graph``, and the weight backward then runs through
all of those graphs (Kovasznay flow: 3 + 4 nested passes). In forward mode we push through the
network, for N points with D inputs, the value h, its first derivatives dh/dx_i and its unmixed
second derivatives d2h/dx_i^2 -- up to 1 + 2D "streams" -- in one pass. A Linear layer maps every
stream with the same weight, the bias on the value only; an activation s = sigma(z) maps

    z_i  -> sigma'(z) z_i,         z_ii -> sigma''(z) z_i^2 + sigma'(z) z_ii.

A residual that needs only the Laplacian sum_i u_ii (Navier-Stokes, Poisson, heat) carries one
summed second stream instead of one per direction ("forward Laplacian"): the rules are linear in
the second streams, so the sum obeys z_L -> sigma''(z) sum_i z_i^2 + sigma'(z) z_L. On Kovasznay
flow that is 4 streams instead of 5 through every matmul. `TaylorDerivatives` uses it when the
residual asks for the Laplacian (`Derivatives.laplacian`) and for no single u_ii.

All of it is plain differentiable torch, so ``loss.backward()`` gives the weight gradients, and
the streams are functions of the inputs, so mixed or third-order partials (which the streams do
not carry) fall back to `torch.autograd.grad` of a stream, exactly as `Derivatives` would do.

Value, first and second streams go through a Linear as three matmuls, not one on their
concatenation: the copy into the stacked tensor and the slicing of its gradient cost more than the
larger matmul saves (Kovasznay step on CPU: 152 ms stacked, 122 ms split).

Precision of each stream: matmuls of all streams run in the layer's compute dtype (the autocast
dtype under ``torch.autocast``, otherwise the weight dtype, e.g. fp16 for pure fp16); activation
rules (sigma, sigma', sigma'' and the products above) are evaluated in fp32 (fp64 for fp64) from
the rounded matmul outputs and rounded back to the compute dtype, so z_i^2 cannot overflow fp16 in
an intermediate. For fp16/bf16 streams an activation saves for backward only its low-precision
inputs and recomputes the fp32 rule in backward (`mpsciml.derivatives.rules`): saving the fp32
intermediates would keep mixed precision from halving the activation memory. Final streams are
converted to `assembly_dtype` (fp32, fp64 for fp64) and the derivative seeds are divided out there.
Seeds work as in reverse mode: the order-k streams are carried multiplied by ``seed(k)``, so a
`DerivativeScaler` keeps fp16 tangents in range.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.carry import LAPLACIAN, carry_order, plan_carry
from mpsciml.derivatives.jets import coordinate_jets, seeded_streams, unseeded_jets
from mpsciml.derivatives.rules import (
    ACTIVATION_RULES,
    ActivationRule,
    activation_step,
    is_one,
    register_activation,
)
from mpsciml.models.constrained import ConstrainedModel
from mpsciml.models.mlp import MLP
from mpsciml.models.periodic import PeriodicEmbedding

__all__ = [
    "ACTIVATION_RULES",
    "LAPLACIAN",
    "ActivationRule",
    "TaylorDerivatives",
    "TaylorStreams",
    "UnsupportedModelError",
    "probe_derivatives",
    "register_activation",
    "supports_taylor",
    "taylor_forward",
    "taylor_refusal",
]


class UnsupportedModelError(TypeError):
    """The model is not a plain stack of Linear layers and known elementwise activations."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"no Taylor-mode derivatives: {reason}; use the autograd engine")
        self.reason = reason


def _flatten(model: nn.Module) -> list[nn.Module]:
    """The layers of an `nn.Sequential` (nested ones flattened) or `MLP`, else an error.

    Forward hooks disqualify a model: whoever registered one wants to see the real forward (the
    precision probe reads the dtype of the first matmul in the first step), so that step goes
    through autograd.
    """
    if type(model) is ConstrainedModel:  # its transform: `_constrained` (product rule on jets)
        if model._forward_hooks or model._forward_pre_hooks:
            raise UnsupportedModelError("ConstrainedModel has forward hooks")
        return _flatten(model.net)
    if isinstance(model, MLP) and type(model).forward is MLP.forward:
        model = model.net
    if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
        raise UnsupportedModelError(f"{type(model).__name__} is not an nn.Sequential or MLP")
    layers: list[nn.Module] = []
    for layer in [model, *model]:
        if layer._forward_hooks or layer._forward_pre_hooks:
            raise UnsupportedModelError(f"{type(layer).__name__} has forward hooks")
        if layer is model:
            continue
        if isinstance(layer, (nn.Sequential, MLP)):
            layers.extend(_flatten(layer))
        elif type(layer) in (nn.Linear, nn.Identity, PeriodicEmbedding, *ACTIVATION_RULES):
            layers.append(layer)
        else:
            known = ", ".join(t.__name__ for t in (nn.Linear, nn.Identity, *ACTIVATION_RULES))
            raise UnsupportedModelError(
                f"layer {type(layer).__name__} has no rule (known: {known}; register_activation)"
            )
    return layers


def taylor_refusal(model: nn.Module) -> str | None:
    """Why `TaylorDerivatives` cannot propagate through `model` now (None: it can), so a
    fallback to autograd can say why."""
    if nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks:
        return "global forward hooks are registered"
    try:
        _flatten(model)
    except UnsupportedModelError as exc:
        return exc.reason
    return None


def supports_taylor(model: nn.Module) -> bool:
    """Whether `TaylorDerivatives` can propagate through `model`; otherwise use autograd."""
    return taylor_refusal(model) is None


@dataclass
class TaylorStreams:
    """Output and input derivatives, in the last layer's compute dtype. value (N, O); first
    (k, N, O) (or (k, 1, O) while point-independent) = seed(1) * d value / d x_i, i in first_dirs;
    second (K, N, O) = seed(2) * d2 value / d x_i^2 for second_dirs = first_dirs[:K], so first[:K]
    is the matching view; None if not carried or (second) identically zero. `summed`: second is
    (1, N, O), the sum over second_dirs (seed(2) times the Laplacian)."""

    value: Tensor
    first: Tensor | None
    second: Tensor | None
    first_dirs: tuple[int, ...] = ()
    second_dirs: tuple[int, ...] = ()
    summed: bool = False


def _linear(layer: nn.Linear, state: TaylorStreams) -> TaylorStreams:
    """Every stream through the same weight; the bias only on the value."""
    first, second = state.first, state.second
    return TaylorStreams(
        F.linear(state.value, layer.weight, layer.bias),
        None if first is None else F.linear(first, layer.weight),
        None if second is None else F.linear(second, layer.weight),
        state.first_dirs,
        state.second_dirs,
        state.summed,
    )


def _activation(layer: nn.Module, state: TaylorStreams, ratio: float | Tensor) -> TaylorStreams:
    """Chain rule for an elementwise sigma; `ratio` = seed(2) / seed(1)^2 (see module doc)."""
    k = len(state.second_dirs)
    value, first, second = activation_step(
        layer, state.value, state.first, state.second, k, ratio, state.summed
    )
    return TaylorStreams(value, first, second, state.first_dirs, state.second_dirs, state.summed)


def _full_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _periodic(
    layer: PeriodicEmbedding, state: TaylorStreams, seeds: tuple[float | Tensor, float | Tensor]
) -> TaylorStreams:
    """The periodic embedding's chain rule on jets, in fp32 (fp64), rounded back to the dtype
    the streams came in (`models.periodic`)."""
    dtype, k2 = state.value.dtype, len(state.second_dirs)
    full = _full_dtype(dtype)
    with torch.autocast(state.value.device.type, enabled=False):
        jets = unseeded_jets(state.value, state.first, state.second, k2, seeds, full)
        columns = layer.columns(jets)
        n, k = state.value.shape[0], len(state.first_dirs)
        value, first, second = seeded_streams(columns, n, k, k2, seeds, dtype)
    return TaylorStreams(value, first, second, state.first_dirs, state.second_dirs)


def _constrained(
    model: ConstrainedModel,
    inputs: Tensor,
    first: Sequence[int] | None,
    second: Sequence[int] | None,
    seeds: tuple[float | Tensor, float | Tensor],
) -> TaylorStreams:
    """The network's streams, then the output transform's product rule on jets, in fp32 (fp64)
    like the wrapper's forward (`models.constrained`)."""
    inner = taylor_forward(model.net, inputs, first, second, seeds)
    full = torch.float64 if torch.float64 in (inputs.dtype, inner.value.dtype) else torch.float32
    k2, n = len(inner.second_dirs), inputs.shape[0]
    with torch.autocast(inputs.device.type, enabled=False):
        coordinates = coordinate_jets(inputs.to(full), inner.first_dirs, k2)
        raw = unseeded_jets(inner.value, inner.first, inner.second, k2, seeds, full)
        columns = model.formula(coordinates, raw)
        value, d1, d2 = seeded_streams(columns, n, len(inner.first_dirs), k2, seeds, full)
    return TaylorStreams(value, d1, d2, inner.first_dirs, inner.second_dirs)


def taylor_forward(
    model: nn.Module,
    inputs: Tensor,
    first: Sequence[int] | None = None,
    second: Sequence[int] | None = None,
    seeds: tuple[float | Tensor, float | Tensor] = (1.0, 1.0),
    laplacian: bool = False,
) -> TaylorStreams:
    """Push the value and chosen input derivatives through an MLP-like model.

    `inputs` (N, D). `first` lists the inputs whose first derivatives are carried, `second` those
    whose unmixed second derivatives are (each needs its first: added if missing); None means all
    D. `seeds` (s1, s2) scale the order-1 and order-2 streams, which are returned scaled.
    `laplacian`: return the `second` directions summed, carried as one stream where the layers
    allow it; a periodic embedding or output transform (whose jet rules are per direction)
    carries them apart and sums at the end: the same result, without the saving.
    """
    layers = [] if type(model) is ConstrainedModel else _flatten(model)
    if laplacian and (
        type(model) is ConstrainedModel or any(type(x) is PeriodicEmbedding for x in layers)
    ):
        apart = taylor_forward(model, inputs, first, second, seeds)
        total = None if apart.second is None else apart.second.sum(0, keepdim=True)
        return TaylorStreams(
            apart.value, apart.first, total, apart.first_dirs, apart.second_dirs, summed=True
        )
    if type(model) is ConstrainedModel:
        return _constrained(model, inputs, first, second, seeds)
    every = range(inputs.shape[-1])
    second_dirs = tuple(every if second is None else dict.fromkeys(second))
    rest = [i for i in (every if first is None else first) if i not in second_dirs]
    first_dirs = (*second_dirs, *dict.fromkeys(rest))
    s1, s2 = seeds
    tangents = None
    if first_dirs:  # d x / d x_i = e_i, the same at every point: (k, 1, D)
        eye = torch.eye(inputs.shape[-1], dtype=inputs.dtype, device=inputs.device)
        tangents = (s1 * eye[list(first_dirs)]).unsqueeze(1)
    state = TaylorStreams(inputs, tangents, None, first_dirs, second_dirs, laplacian)
    for layer in layers:
        if type(layer) is nn.Linear:
            state = _linear(layer, state)
        elif type(layer) is PeriodicEmbedding:
            state = _periodic(layer, state, seeds)
        elif type(layer) is not nn.Identity:
            state = _activation(layer, state, s2 / (s1 * s1))
    return state


class TaylorDerivatives(Derivatives):
    """`Derivatives` whose value, d(name, x_i) and d(name, x_i, x_i) come from one forward pass.

    ``TaylorDerivatives(model, inputs, ("x", "t"), ("u",))`` replaces
    ``Derivatives(inputs, model(inputs), ("x", "t"), ("u",))``. Everything else (mixed partials,
    third order) is inherited: `Derivatives.__call__` differentiates the longest prefix the
    streams carry (u_xy from the stream u_x), with the same caching, seeds and non-finite counts.

    `carry` lists the `wrt` tuples worth streaming (`probe_derivatives` finds them): Burgers needs
    {x, t, xx}, 4 streams instead of 5; ``carry=()`` is a plain forward for boundary terms (any
    model). None carries every first and unmixed second derivative. The rest falls back to
    autograd, so `carry` is a speed hint, never a correctness one. With `track_nonfinite`,
    `nonfinite[k]` counts non-finite entries of the carried order-k streams (and fallbacks).
    """

    def __init__(
        self,
        model: nn.Module,
        inputs: Tensor,
        input_names: tuple[str, ...] | list[str],
        output_names: tuple[str, ...] | list[str],
        seed: Callable[[int], float | Tensor] | None = None,
        track_nonfinite: bool = False,
        carry: Collection[tuple[str, ...]] | None = None,
        fallback: bool = True,
    ) -> None:
        self.fallback = fallback
        if fallback and not inputs.requires_grad:  # the fallback differentiates w.r.t. inputs
            inputs = inputs.detach().requires_grad_(True)
        if carry is None:
            carry = [(n,) for n in input_names] + [(n, n) for n in input_names]
        plan = plan_carry(carry, input_names)
        first, second = plan.first, plan.second
        self.requested: set[tuple[str, ...]] = set()
        self._quiet = 0  # > 0 inside `laplacian`: its terms are not requests of their own
        self._laplacian: Tensor | None = None
        self._laplacian_dirs: frozenset[int] = frozenset()
        self._first_pos: dict[int, int] = {}
        self._second_pos: dict[int, int] = {}
        names = (input_names, output_names)
        if not first:
            self._start(inputs, model(inputs), *names, seed, track_nonfinite)
            return
        s1 = seed(1) if seed is not None else 1.0
        s2 = seed(2) if seed is not None and second else 1.0
        streams = taylor_forward(model, inputs, first, second, (s1, s2), laplacian=plan.summed)
        self._start(inputs, streams.value, *names, seed, track_nonfinite)
        dtype, n = self.outputs.dtype, inputs.shape[0]
        assert streams.first is not None
        stream1 = streams.first.to(dtype).expand(-1, n, -1)
        self._first = stream1 if is_one(s1) else stream1 / s1
        self._first_pos = {i: k for k, i in enumerate(streams.first_dirs)}
        counts = {1: self._first}
        if streams.second_dirs:
            size = 1 if streams.summed else len(streams.second_dirs)
            if streams.second is None:  # identically zero: a linear model, ReLU
                stream2 = torch.zeros_like(self._first[:size])
            else:
                stream2 = streams.second.to(dtype)
                stream2 = stream2 if is_one(s2) else stream2 / s2
            if streams.summed:
                self._laplacian, self._laplacian_dirs = stream2, frozenset(streams.second_dirs)
            else:
                self._second = stream2
                self._second_pos = {i: k for k, i in enumerate(streams.second_dirs)}
            counts[2] = stream2
        if track_nonfinite:
            for order, tensor in counts.items():
                self.nonfinite[order] = torch.count_nonzero(~torch.isfinite(tensor))

    def _start(
        self,
        inputs: Tensor,
        outputs: Tensor,
        input_names: tuple[str, ...] | list[str],
        output_names: tuple[str, ...] | list[str],
        seed: Callable[[int], float | Tensor] | None,
        track_nonfinite: bool,
    ) -> None:
        """`Derivatives.__init__`, or without a fallback its state without the requires-grad
        check: nothing is then differentiated w.r.t. the inputs, and a compiled step must not
        mark them (torch.compile can neither return such a tensor nor do a double backward)."""
        if self.fallback:
            super().__init__(inputs, outputs, input_names, output_names, seed, track_nonfinite)
            return
        self._bind(inputs, outputs, input_names, output_names, seed, track_nonfinite)

    @classmethod
    def from_model(cls, *args: Any, **kwargs: Any) -> TaylorDerivatives:
        """The constructor, for call sites that read better with a named one."""
        return cls(*args, **kwargs)

    def laplacian(self, output_name: str, *over: str) -> Tensor:
        """The summed stream where it was carried for exactly these inputs, else the sum of the
        second derivatives (streamed apart, or by autograd), recorded as one request."""
        names = over or tuple(self._input_index)
        self.requested.add((LAPLACIAN, *names))
        column = self._output_index.get(output_name)
        dirs = frozenset(self._input_index.get(name, -1) for name in names)
        if self._laplacian is not None and column is not None and dirs == self._laplacian_dirs:
            return self._laplacian[0, :, column]
        self._quiet += 1
        try:
            return super().laplacian(output_name, *names)
        finally:
            self._quiet -= 1

    def __call__(self, output_name: str, *wrt: str) -> Tensor:
        if not self._quiet:
            self.requested.add(wrt)
        column = self._output_index.get(output_name)
        i = self._input_index.get(wrt[0], -1) if wrt else -1
        if column is not None and len(wrt) == 1 and i in self._first_pos:
            return self._first[self._first_pos[i], :, column]
        if column is not None and len(wrt) == 2 and wrt[1] == wrt[0] and i in self._second_pos:
            return self._second[self._second_pos[i], :, column]
        if not self.fallback and output_name in self._output_index and wrt:
            raise KeyError(
                f"d({output_name}, {', '.join(wrt)}) is not carried by the Taylor streams and "
                "this TaylorDerivatives has no autograd fallback (carry it, or fallback=True)"
            )
        return super().__call__(output_name, *wrt)


def probe_derivatives(
    residual: Callable[[Derivatives], object],
    model: nn.Module,
    points: Tensor,
    input_names: tuple[str, ...] | list[str],
    output_names: tuple[str, ...] | list[str],
) -> tuple[tuple[str, ...], ...]:
    """The `wrt` tuples `residual` asks for, found once on two points through autograd: the
    `carry` of a condition (Burgers' interior (x, t, xx); Kovasznay's (x, y, (LAPLACIAN, x,
    y)); boundaries usually none), in `carry_order`."""
    param = next(model.parameters(), None)
    inputs = points[:2].detach()
    if param is not None:
        inputs = inputs.to(param.device, param.dtype)
    d = TaylorDerivatives(model, inputs, input_names, output_names, carry=())
    residual(d)
    return carry_order([key for key in d.requested if key], input_names)
