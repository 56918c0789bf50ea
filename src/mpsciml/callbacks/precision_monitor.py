"""Diagnostics of the precision at work: cheap, on by default, logged and plotted.

Every `every_n_steps` steps the plugin is asked to measure one step (gradient underflow, lost
updates, non-finite gradients); the scalers' state is read at the same time. Between measurements
nothing is computed, so the training step stays as fast as without the monitor.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from mpsciml.callbacks.gradient_agreement import GradientAgreement
from mpsciml.precision.plugin import SciMLPrecision


class PrecisionMonitor(pl.Callback):
    """`agreement`: the run's `GradientAgreement` callback (`precision.compare_every`), whose
    measurements the plot shows next to the others; it measures and logs on its own steps."""

    def __init__(self, every_n_steps: int = 100, agreement: GradientAgreement | None = None):
        self.every_n_steps = max(1, int(every_n_steps))
        self.agreement = agreement
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
        """Loss scale, skipped steps, underflow and lost-update fractions against step; with
        `precision.compare_every`, a fifth panel: the gradient's cosine and relative error
        against the fp32 gradient of the same step."""
        agreement = self.agreement.history if self.agreement is not None else []
        if not self.history and not agreement:
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
        columns = len(panels) + bool(agreement)
        fig, axes = plt.subplots(1, columns, figsize=(4.5 * columns, 3.6), constrained_layout=True)
        if agreement:
            plot_agreement(axes[-1], agreement)
        for ax, (key, label, log_scale) in zip(axes, panels, strict=False):
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


def plot_agreement(ax: Any, history: list[dict[str, Any]]) -> None:
    """1 - cosine and the relative error against step, both on a log axis (an fp32 run sits at
    round-off, ~1e-7; a bf16 run near 1e-2): the smaller, the closer to the fp32 gradient."""
    for key, label, transform in (
        ("grad_cosine", "1 - cosine", lambda v: 1.0 - v),
        ("grad_rel_error", "relative error", lambda v: v),
    ):
        points = [(r["step"], transform(r[key])) for r in history if r.get(key) is not None]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, [max(v, 1e-12) for v in values], marker=".", label=label)
    ax.set_yscale("log")
    ax.set(title="gradient vs fp32 gradient", xlabel="step")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
