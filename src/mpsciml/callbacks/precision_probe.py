"""Records the precision a run really used, so no setting can silently become another.

The dtypes are read during the first training step (a precision schedule may change them
later; the plugin's `switches` say when). The dtype a matmul inside the model produces during
a training step is the one check that sees through every layer of indirection (Lightning's CPU
bf16 swap, autocast, casts). It watches a matmul of the network proper, outside the layers whose
precision policy keeps them full, and reports those policies next to it.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from mpsciml.precision.policy import find_policies


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


class PrecisionProbe(pl.Callback):
    def __init__(self, requested: str) -> None:
        self.requested = requested
        self.matmul_dtype: torch.dtype | None = None
        self.param_dtype: torch.dtype | None = None
        self.scaler_used = False
        self._handle: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kept = {id(m) for layer, _ in find_policies(pl_module).values() for m in layer.modules()}
        linear = next(
            (m for m in pl_module.modules() if isinstance(m, nn.Linear) and id(m) not in kept),
            None,
        )
        if linear is not None:
            self._handle = linear.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.matmul_dtype = output.dtype
        self.param_dtype = module.weight.dtype
        self._handle.remove()
        self._handle = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # whether a scaler is on, not its scale: reading the scale is a host sync every step
        plugin = trainer.precision_plugin
        scalers = (getattr(plugin, "grad_scaler", None), getattr(plugin, "fp16_scaler", None))
        self.scaler_used |= any(scaler is not None for scaler in scalers)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        plugin = trainer.precision_plugin
        scale = getattr(plugin, "loss_scale", None)
        return {
            "requested": self.requested,
            "lightning_plugin": type(plugin).__name__,
            "param_dtype": dtype_name(self.param_dtype),
            "matmul_dtype": dtype_name(self.matmul_dtype),
            "scaler": self.scaler_used,
            "final_scale": scale,
            "layer_policies": dict(getattr(plugin, "layer_policies", {})),
        }
