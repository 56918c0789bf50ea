"""Synchronised BatchNorm for CPU processes (gloo): the statistics of the whole step's batch.

Under DDP every rank sees only its share of the batch, so a plain BatchNorm normalises each share
by its own mean and variance: the outputs, the gradients and the running statistics then depend
on how the batch was split (and a share of one sample has no variance at all). torch's
`nn.SyncBatchNorm` fixes that on CUDA only (it refuses CPU modules, and Lightning's
`sync_batchnorm=True` uses it), so the CPU path is ours:

- per channel, each rank takes the mean and variance of its items (native BatchNorm's kernel) and
  ONE all-gather per layer hands every rank every rank's (count, mean, variance); the global
  moments are combined from them in float64 (Chan's parallel formula: no E[x^2] - E[x]^2
  cancellation);
- the normalisation is one autograd Function whose backward does what torch's `SyncBatchNorm`
  does on CUDA: the per-channel sums of dy and dy * x_hat (one fused native kernel), ONE
  exchange of them (`integrity.sum_over_ranks`: on gloo an all-gather, faster there than an
  all-reduce), then dx = w / sigma (dy - mean(dy) - x_hat mean(dy x_hat)) with the
  global means; so the gradients reaching every rank's inputs are those of one process holding
  the whole batch. Why not plain autograd over the formulas: that recorded ~15 full passes
  over the activation per layer (a float64 copy, its square, the casts and their backward);
  at 2 x 16 x 256 x 256 per rank, 2 ranks, forward + backward took 33-44 ms of CPU time
  against 9.8-10.3 ms now and native BatchNorm's 8-9 ms (scripts/bench_sync_batchnorm.py);
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
from pytorch_lightning.plugins.layer_sync import LayerSync
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from mpsciml.distributed.integrity import gather_ranks, is_distributed, sum_over_ranks


def global_moments(input: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance per channel (dim 1) over every rank's items, and their count
    (float64).

    One all-gather of (count, mean, variance) per rank; the moments are combined as
    n var = sum_r n_r (var_r + (mean_r - mean)^2), exact up to each rank's own rounding."""
    with torch.no_grad():
        # the native BatchNorm's statistics kernel: (mean, biased variance) in one pass, ~6x
        # faster than var_mean's strided reduction over (N, *spatial) on NCHW
        mean, var = torch.batch_norm_update_stats(input, None, None, 0.0)
        count = torch.full((1,), input.numel() // input.shape[1], dtype=torch.float64)
        local = torch.cat([count.to(input.device), mean.double(), var.double()])
        stacked = gather_ranks(local)
        counts, means, variances = (
            stacked[:, :1],
            stacked[:, 1 : 1 + mean.numel()],
            stacked[:, 1 + mean.numel() :],
        )
        n = counts.sum()
        mean_all = (counts * means).sum(0) / n
        var_all = (counts * (variances + (means - mean_all).pow(2))).sum(0) / n
    return mean_all, var_all, n


class _SyncedNormalise(torch.autograd.Function):
    """y = (x - mean) / sigma * w + b with the global mean and sigma; the backward sums over ranks
    the per-channel sums of dy and dy * x_hat, so d(sum over ranks of the loss)/dx is exact.
    The weight and bias gradients are this rank's part (DDP's all-reduce sums the ranks')."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        input: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        invstd: Tensor,
        count: float,
    ) -> Tensor:
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.count = count
        # native BatchNorm's inference kernel with the global moments: one vectorised pass
        # (x - mean) * invstd * w + b; given invstd as a "variance" 1 / invstd^2 with eps 0
        return torch.ops.aten.native_batch_norm(
            input, weight, bias, mean, invstd.pow(-2), False, 0.0, 0.0
        )[0]

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        input, weight, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous()
        # sum(dy * x_hat) and sum(dy) per channel in one fused pass over this rank's items
        _, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            grad, input, weight, None, None, mean, invstd, True, 0.0, [False, True, True]
        )
        sums = sum_over_ranks(torch.cat([sum_dy, sum_dy_xhat]).double())
        channels = input.shape[1]
        mean_dy, mean_dy_xhat = (sums[:channels] / ctx.count, sums[channels:] / ctx.count)
        w = invstd.double() if weight is None else invstd.double() * weight.double()
        # dx = w/sigma (dy - mean_dy - x_hat mean_dy_xhat) = a dy + b x + c, per channel
        a = w
        b = -w * invstd.double() * mean_dy_xhat
        c = -w * mean_dy - b * mean.double()
        dtype = input.dtype
        ones, zeros = torch.ones_like(mean), torch.zeros_like(mean)
        # b x + c by the same inference kernel (mean 0, variance 1, eps 0: exact), then + a dy
        grad_input = torch.ops.aten.native_batch_norm(
            input, b.to(dtype), c.to(dtype), zeros, ones, False, 0.0, 0.0
        )[0]
        shape = (1, channels, *([1] * (input.dim() - 2)))
        grad_input.addcmul_(grad, a.to(dtype).reshape(shape))
        grad_weight = sum_dy_xhat if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias, None, None, None


class AllReduceBatchNorm(_BatchNorm):
    """A BatchNorm whose training statistics are those of every rank's items together."""

    #: the class it was converted from (given back by `revert`)
    _original_class: type[nn.Module]

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and is_distributed()):
            return super().forward(input)  # nn.BatchNorm: eval mode, or one process
        self._check_input_dim(input)
        dtype = torch.promote_types(input.dtype, torch.float32)  # half inputs normalise in fp32
        wide = input.to(dtype)
        mean, var, n = global_moments(wide)
        count = int(n.item())
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean, var, count)
        invstd = torch.rsqrt(var + self.eps)
        weight = self.weight.to(dtype) if self.weight is not None else None
        bias = self.bias.to(dtype) if self.bias is not None else None
        output = _SyncedNormalise.apply(
            wide, weight, bias, mean.to(dtype), invstd.to(dtype), float(count)
        )
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
