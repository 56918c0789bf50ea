"""Per-layer precision policies: a layer may say how it takes the run's precision.

Some layers cannot run in half precision at all. Random Fourier features sin(2 pi x B) at
sigma = 10 are off by ~0.1 in fp16 (the phase 2 pi x B reaches ~100, where fp16's ulp is 0.06);
CPU torch has no fp16/bf16 FFT; PhysicsNeMo keeps its first layers in fp32 and neuraloperator runs
its FFTs in full precision. A model says so by giving the submodule an attribute
`precision_policy`:

- ``"fp32"``: the layer's parameters and buffers stay at least fp32 (fp64 in an fp64 run); it
  computes in that dtype with autocast off, its floating inputs cast up to it, and its output is
  cast back to the dtype the rest of the network runs in.
- ``"own"``: the layer manages its own compute dtype (e.g. an FFT in fp32): its parameters stay
  full precision and autocast is off inside it, but its inputs are handed over untouched; its
  output, too, is cast back to the dtype the rest of the network runs in.

The precision plugin honours a policy when it casts the model (`cast_module`), in the forward
(`attach_hooks`) and in its diagnostics (gradients measured against the layer's own dtype). The
forward part is a pair of hooks registered through `nn.Module`'s public hook API, so one mechanism
serves autocast (mixed) and converted weights (pure fp16/bf16) on CPU and CUDA alike. Taylor-mode
derivatives refuse models with forward hooks, so a model that declares a policy runs autograd
derivatives; whoever records the engine that ran sees that.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor, nn

#: the attribute a submodule declares its policy in
POLICY_ATTRIBUTE = "precision_policy"
#: where the hooks the plugin attached live on the layer, so that a second cast replaces them
_HOOKS_ATTRIBUTE = "_precision_policy_hooks"


class LayerPolicy(StrEnum):
    FP32 = "fp32"
    OWN = "own"


#: the layers that declare a policy, by qualified name in the converted module
Policies = Mapping[str, tuple[nn.Module, LayerPolicy]]


def find_policies(root: nn.Module) -> dict[str, tuple[nn.Module, LayerPolicy]]:
    """The layers under `root` that declare a policy. A policy covers the layer's whole subtree,
    so a declaration inside a declaring layer is the outer layer's business and is not listed."""
    found: dict[str, tuple[nn.Module, LayerPolicy]] = {}
    for name, module in root.named_modules():
        if any(outer == "" or name.startswith(f"{outer}.") for outer in found):
            continue
        declared = getattr(module, POLICY_ATTRIBUTE, None)
        if declared is None:
            continue
        try:
            found[name] = (module, LayerPolicy(declared))
        except ValueError:
            allowed = ", ".join(policy.value for policy in LayerPolicy)
            raise ValueError(
                f"{type(module).__name__} '{name or 'model'}': {POLICY_ATTRIBUTE}={declared!r} "
                f"is unknown; allowed: {allowed}"
            ) from None
    return found


def policy_parameters(policies: Policies) -> Iterator[nn.Parameter]:
    """The parameters that policies keep full precision."""
    for layer, _ in policies.values():
        yield from layer.parameters()


def input_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype the model's inputs should arrive in: that of the first floating tensor it holds,
    in registration order, so a first layer kept fp32 (Fourier features in a pure fp16 run) gets
    its coordinates unrounded, and any other model the dtype of its weights. None: no tensors."""
    for module in model.modules():
        for tensor in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
            if tensor.is_floating_point():
                return tensor.dtype
    return None


def cast_module(
    root: nn.Module, dtype: torch.dtype, policies: Policies, full_dtype: torch.dtype
) -> None:
    """`root.to(dtype=dtype)`, except that the layers with a policy get `full_dtype`.

    Each tensor is cast once, straight to its target: a buffer such as a Fourier matrix that went
    through fp16 on its way would come back with fp16's rounding. Parameters keep their identity
    (their `.data` is replaced, as `Module.to` does), so optimizers holding them stay valid.
    """
    if not policies:
        root.to(dtype=dtype)
        return
    kept = {id(module) for layer, _ in policies.values() for module in layer.modules()}
    for module in root.modules():
        target = full_dtype if id(module) in kept else dtype
        for param in module.parameters(recurse=False):
            if param.is_floating_point() and param.dtype != target:
                param.data = param.data.to(target)
                if param.grad is not None:
                    param.grad.data = param.grad.data.to(target)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.is_floating_point() and buffer.dtype != target:
                setattr(module, name, buffer.to(target))


@dataclass
class PolicyHooks:
    """The forward half of a policy: autocast off inside the layer, dtypes in and out.

    `layer_dtype` is the layer's full precision, `network_dtype` the parameter dtype of the rest
    of the network; both are set by the plugin whenever it casts the model. The output goes back
    to the autocast dtype where autocast was on at the layer's entry (mixed), else to
    `network_dtype` (pure precisions, and mixed models called outside autocast).
    """

    policy: LayerPolicy
    layer_dtype: torch.dtype
    network_dtype: torch.dtype
    _open: list[tuple[torch.autocast, torch.dtype | None]] = field(default_factory=list)

    def before(
        self, layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        device = _device_type(layer, args, kwargs)
        outer = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        guard = torch.autocast(device, enabled=False)
        guard.__enter__()
        self._open.append((guard, outer))
        if self.policy is LayerPolicy.FP32:
            return _cast(args, self.layer_dtype), _cast(kwargs, self.layer_dtype)
        return args, kwargs

    def after(
        self, layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> Any:
        # registered with always_call: runs even when the forward raised, so autocast is restored
        guard, outer = self._open.pop()
        guard.__exit__(None, None, None)
        return _cast(output, self.network_dtype if outer is None else outer)


def attach_hooks(layer: nn.Module, hooks: PolicyHooks) -> None:
    """Register the policy's hooks on `layer`, replacing any a previous cast attached."""
    previous = getattr(layer, _HOOKS_ATTRIBUTE, None)
    if previous is not None:
        for handle in previous:
            handle.remove()
    handles = (
        layer.register_forward_pre_hook(hooks.before, with_kwargs=True),
        layer.register_forward_hook(hooks.after, with_kwargs=True, always_call=True),
    )
    setattr(layer, _HOOKS_ATTRIBUTE, handles)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    """`value` with every floating tensor in it (also inside tuples, lists, dicts) in `dtype`."""
    if isinstance(value, Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a named tuple
        return type(value)(*(_cast(item, dtype) for item in value))
    if isinstance(value, tuple | list):
        return type(value)(_cast(item, dtype) for item in value)
    if isinstance(value, dict):
        return {key: _cast(item, dtype) for key, item in value.items()}
    return value


def _device_type(layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """The device the layer computes on: of its first tensor input, else of its own tensors."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, Tensor):
            return value.device.type
    for tensor in (*layer.parameters(), *layer.buffers()):
        return tensor.device.type
    return "cpu"
