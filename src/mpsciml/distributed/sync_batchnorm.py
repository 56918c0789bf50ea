"""Synchronised BatchNorm for CPU processes (gloo): the statistics of the whole step's batch.

Under DDP every rank sees only its share of the batch, so a plain BatchNorm normalises each share
by its own mean and variance: the outputs, the gradients and the running statistics then depend
on how the batch was split (and a share of one sample has no variance at all). torch's
`nn.SyncBatchNorm` fixes that on CUDA only (it refuses CPU modules, and Lightning's
`sync_batchnorm=True` uses it), so the CPU path is ours:

- per channel, each rank sums x and x^2 over its items (in float64, so E[x^2] - E[x]^2 loses
  nothing that matters) and counts them; ONE all-reduce per layer makes the global sums;
- that all-reduce is differentiable (its backward all-reduces the incoming gradient, as
  torch's `SyncBatchNorm` does), so the gradients reaching every rank's inputs are those of one
  process holding the whole batch;
- the running statistics are updated as `nn.BatchNorm` does (momentum, or the cumulative average
  when momentum is None; the unbiased variance n / (n - 1)), identically on every rank;
- in eval mode, and with a single process, the layer IS `nn.BatchNorm` (its own forward).

`CPUSyncBatchNorm` is the Lightning `LayerSync` plugin that swaps every BatchNorm of a model for
ours before DDP wraps it (`Trainer(plugins=[CPUSyncBatchNorm()])`), keeping the very parameter
and buffer tensors and any attribute a layer carries (precision policies), and swaps them back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.plugins.layer_sync import LayerSync
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mpsciml.distributed.integrity import is_distributed


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is the sum over ranks of the incoming gradients.

    torch.distributed.nn.functional.all_reduce is exactly this, but torch 2.13 deprecates it with
    a FutureWarning on every call (it would print once per layer and step); the replacement it
    names (functional collectives) is not differentiable for all_reduce here. Sum, because
    every rank's loss part depends on the global statistics: d(sum_s L_s)/dx_r = sum_s dL_s/dy."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:  # type: ignore[override]
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total


def all_reduce_sum_differentiable(tensor: Tensor) -> Tensor:
    return _AllReduceSum.apply(tensor)


class AllReduceBatchNorm(_BatchNorm):
    """A BatchNorm whose training statistics are those of every rank's items together."""

    #: the class it was converted from (given back by `revert`)
    _original_class: type[nn.Module]

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)  # nn.BatchNorm: eval mode, or one process
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0, *range(2, input.dim())]
        wide = input.double()
        count = torch.full((1,), input.numel() // channels, dtype=wide.dtype, device=wide.device)
        local = torch.cat([wide.sum(dims), wide.pow(2).sum(dims), count])
        total = all_reduce_sum_differentiable(local)
        n = total[-1]
        mean = total[:channels] / n
        var = (total[channels:-1] / n - mean.pow(2)).clamp_min(0.0)  # biased, as BN normalises
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.detach(), var.detach(), int(n.item()))
        dtype = torch.promote_types(input.dtype, torch.float32)
        shape = (1, channels, *([1] * (input.dim() - 2)))
        scale = torch.rsqrt(var + self.eps).to(dtype)
        if self.weight is not None:
            scale = scale * self.weight.to(dtype)
        shift = -mean.to(dtype) * scale
        if self.bias is not None:
            shift = shift + self.bias.to(dtype)
        output = input.to(dtype) * scale.reshape(shape) + shift.reshape(shape)
        return output.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: Tensor, var: Tensor, n: int) -> None:
        """As `nn.BatchNorm`: running_var takes the unbiased variance n / (n - 1)."""
        assert self.running_mean is not None and self.running_var is not None
        factor = 0.0 if self.momentum is None else self.momentum
        if self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        unbiased = var * (n / (n - 1)) if n > 1 else var
        dtype = self.running_mean.dtype
        self.running_mean.mul_(1 - factor).add_(mean.to(dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(dtype), alpha=factor)


class AllReduceBatchNorm1d(AllReduceBatchNorm, nn.BatchNorm1d):
    pass


class AllReduceBatchNorm2d(AllReduceBatchNorm, nn.BatchNorm2d):
    pass


class AllReduceBatchNorm3d(AllReduceBatchNorm, nn.BatchNorm3d):
    pass


class AllReduceBatchNormXd(AllReduceBatchNorm):
    """For any other BatchNorm subclass: inputs (N, C, ...)."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input (N, C, ...), got {input.dim()} dimensions")


_SYNCED: dict[type[nn.Module], type[AllReduceBatchNorm]] = {
    nn.BatchNorm1d: AllReduceBatchNorm1d,
    nn.BatchNorm2d: AllReduceBatchNorm2d,
    nn.BatchNorm3d: AllReduceBatchNorm3d,
}


def _retype(module: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """The same layer as an instance of `cls`: the same parameters, buffers, hooks, flags."""
    new = cls.__new__(cls)
    new.__dict__.update(module.__dict__)
    return new


def _convertible(module: nn.Module) -> bool:
    return (
        isinstance(module, _BatchNorm)
        and not isinstance(module, AllReduceBatchNorm | nn.SyncBatchNorm)
        and not isinstance(module, nn.modules.lazy.LazyModuleMixin)
    )


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm of `module` (itself included) as an `AllReduceBatchNorm`."""
    if _convertible(module):
        original = type(module)
        converted = _retype(module, _SYNCED.get(original, AllReduceBatchNormXd))
        converted._original_class = original
        module = converted
    for name, child in module.named_children():
        module.add_module(name, convert_batchnorm(child))
    return module


def revert_batchnorm(module: nn.Module) -> nn.Module:
    """Undo `convert_batchnorm`: each layer back to its own class."""
    if isinstance(module, AllReduceBatchNorm):
        reverted = _retype(module, module._original_class)
        del reverted.__dict__["_original_class"]
        module = reverted
    for name, child in module.named_children():
        module.add_module(name, revert_batchnorm(child))
    return module


class CPUSyncBatchNorm(LayerSync):
    """Lightning's LayerSync for CPU (gloo) processes: `Trainer(plugins=[CPUSyncBatchNorm()])`.
    On CUDA use Lightning's own `sync_batchnorm=True` (torch's SyncBatchNorm, NCCL kernels)."""

    def apply(self, model: nn.Module) -> nn.Module:
        return convert_batchnorm(model)

    def revert(self, model: nn.Module) -> nn.Module:
        return revert_batchnorm(model)
