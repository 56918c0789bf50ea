"""Records the precision a run really used, so no setting can silently become another.

Watching the dtype a matmul inside the model produces during a training step is the only check
that sees through every layer of indirection (Lightning's CPU bf16 swap, autocast, casts).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn


def dtype_name(dtype: torch.dtype | None) -> str | None:
    return None if dtype is None else str(dtype).removeprefix("torch.")


class PrecisionProbe(pl.Callback):
    def __init__(self, requested: str) -> None:
        self.requested = requested
        self.matmul_dtype: torch.dtype | None = None
        self._handle: Any = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        linear = next((m for m in pl_module.modules() if isinstance(m, nn.Linear)), None)
        if linear is not None:
            self._handle = linear.register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self.matmul_dtype = output.dtype
        self._handle.remove()
        self._handle = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        return {
            "requested": self.requested,
            "lightning_plugin": type(trainer.precision_plugin).__name__,
            "param_dtype": dtype_name(next(pl_module.parameters()).dtype),
            "matmul_dtype": dtype_name(self.matmul_dtype),
            "scaler": scaler is not None,
            "final_scale": float(scaler.get_scale()) if scaler is not None else None,
        }
