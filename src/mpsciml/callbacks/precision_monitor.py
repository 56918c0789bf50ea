"""Diagnostics of the precision at work: cheap, on by default, logged and plotted.

Every `every_n_steps` steps the plugin is asked to measure one step (gradient underflow, lost
updates, non-finite gradients); the scalers' state is read at the same time. Between measurements
nothing is computed, so the training step stays as fast as without the monitor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from mpsciml.precision.plugin import SciMLPrecision


class PrecisionMonitor(pl.Callback):
    def __init__(self, every_n_steps: int = 100) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self.history: list[dict[str, float]] = []
        self._measuring = False

    @staticmethod
    def _plugin(trainer: pl.Trainer) -> SciMLPrecision | None:
        plugin = trainer.precision_plugin
        return plugin if isinstance(plugin, SciMLPrecision) else None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        plugin = self._plugin(trainer)
        self._measuring = plugin is not None and trainer.global_step % self.every_n_steps == 0
        if self._measuring:
            plugin.measure_next_step = True
            plugin.last_measurement = {}

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        plugin = self._plugin(trainer)
        if not self._measuring or plugin is None:
            return
        record: dict[str, float] = {
            "step": float(trainer.global_step),
            "skipped_steps": float(plugin.skipped_steps),
            "derivative_overflow_steps": float(plugin.derivative_nonfinite_total),
            "derivative_nonfinite": float(plugin.last_derivative_nonfinite),
            **plugin.last_measurement,
        }
        if plugin.loss_scale is not None:
            record["loss_scale"] = plugin.loss_scale
        if plugin.derivative_scaler is not None:
            for order in (1, 2):
                record[f"derivative_seed_order{order}"] = plugin.derivative_seed(order)
        self.history.append(record)
        pl_module.log_dict(
            {f"precision/{k}": v for k, v in record.items() if k != "step"}, batch_size=1
        )

    def state_dict(self) -> dict[str, Any]:
        """Saved with the checkpoint, so a resumed run reports and plots the whole run."""
        return {"history": [dict(record) for record in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(record) for record in state_dict.get("history", [])]

    def report(self) -> dict[str, Any]:
        """Means of the measured fractions and the last values of the counters."""
        summary: dict[str, Any] = {"measurements": len(self.history)}
        for key in ("grad_underflow_fraction", "lost_update_fraction", "grad_nonfinite"):
            values = [r[key] for r in self.history if key in r]
            summary[f"mean_{key}"] = sum(values) / len(values) if values else None
        return summary

    def plot(self, path: Path, title: str = "") -> Path | None:
        """Loss scale, skipped steps, underflow and lost-update fractions against step."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from mpsciml.plots import save_figure

        panels = [
            ("loss_scale", "loss scale", True),
            ("skipped_steps", "skipped steps (cumulative)", False),
            ("grad_underflow_fraction", "gradient entries < fp16 tiny", False),
            ("lost_update_fraction", "updates lost to rounding", False),
        ]
        fig, axes = plt.subplots(1, 4, figsize=(18, 3.6), constrained_layout=True)
        for ax, (key, label, log_scale) in zip(axes, panels, strict=True):
            points = [(r["step"], r[key]) for r in self.history if key in r]
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker=".")
                if log_scale:
                    ax.set_yscale("log", base=2)
            else:
                ax.text(0.5, 0.5, "not used in this precision", ha="center", transform=ax.transAxes)
            ax.set(title=label, xlabel="step")
            ax.grid(True, alpha=0.3)
        fig.suptitle(title)
        return save_figure(fig, path, dpi=100)
