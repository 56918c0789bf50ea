"""The Lightning side of adaptive collocation (`sampling.adaptive=rar|rad`).

`attach_adaptive_sampling` wires an `data.adaptive_points.AdaptivePoints` to a PINN module: the
module trains on the adapted points (`PINNModule.adapt_points`), this callback updates them at
the start of every update step and saves them with the checkpoint, and the module's summary
gets a `sampling` record. The callback owns the schedule because an update must happen on every
rank at the same step (it is a collective under DDP) and before that step's loss; Lightning's
`on_train_batch_start` runs after the batch is on the device and before the training step.

The updates are logged straight to the loggers at their own step (`train/adaptive_points_*`,
`train/adaptive_residual_mean_*`, `train/adaptive_residual_max_*`): an update step is rarely a
`log_every_n_steps` step, and Lightning drops values logged on the other steps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig
from torch import Tensor

from mpsciml.data.adaptive_points import AdaptivePoints
from mpsciml.data.adaptive_settings import adaptive_settings
from mpsciml.plots import save_figure

log = logging.getLogger(__name__)

#: where the picture of the final points goes, under the run folder
PLOT_PATH = Path("plots") / "adaptive_points.png"


class AdaptiveSampling(pl.Callback):
    """Runs the sampler's updates, logs them, checkpoints its state and plots the end."""

    def __init__(
        self,
        sampler: AdaptivePoints,
        drawn: Mapping[str, Tensor],
        plot_to: Path | None = None,
    ) -> None:
        self.sampler = sampler
        self.drawn = drawn  # the run's first points per condition: the picture's background
        self.plot_to = plot_to
        self.plotted: Path | None = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        done = self.sampler.updates and self.sampler.updates[-1]["step"] >= step
        if done or not self.sampler.is_update_step(step):
            return
        metrics = self.sampler.update(step, pl_module.model, pl_module.device)  # type: ignore[arg-type]
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
            prefix = "train/adaptive_points_"
            counts = {k.removeprefix(prefix): int(v) for k, v in metrics.items() if prefix in k}
            log.info("step %d: adaptive points (%s) %s", step, self.sampler.settings.method, counts)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.plot_to is not None and trainer.is_global_zero:
            self.plotted = plot_adaptive_points(
                self.sampler,
                self.drawn,
                pl_module.problem,
                self.plot_to,
            )

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state_dict)


def attach_adaptive_sampling(cfg: DictConfig, problem: Any, module: Any) -> None:
    """Give a PINN module its adaptive points, callback and summary record (`sampling`); for
    `sampling.adaptive=null` only the record, so every PINN summary says how its points moved."""
    settings = adaptive_settings(cfg)
    resample_every = cfg.get("resample_every")
    if settings is None:
        module.summary_parts["sampling"] = partial(fixed_points_report, resample_every)
        return
    optimizer = cfg.optimizer
    lbfgs_only = optimizer.get("adam") is None and optimizer.get("lbfgs") is not None
    freeze_at = 0 if lbfgs_only else module.first_phase_end()
    sampler = AdaptivePoints(settings, problem, cfg.seed, module.conditions, freeze_at)
    plot_to = Path(cfg.paths.output_dir) / PLOT_PATH if cfg.get("plots", True) else None
    drawn = {name: c.points for name, c in module.conditions.items()}
    callback = AdaptiveSampling(sampler, drawn, plot_to)
    module.strategy_callbacks.append(callback)
    module.adapt_points = sampler.batch_points
    # module-level functions, not closures: the module must pickle (the precision probe's copies)
    module.summary_parts["sampling"] = partial(adaptive_report, callback, resample_every)


def fixed_points_report(resample_every: int | None) -> dict[str, Any]:
    """summary.json `sampling` of a run without adaptive points."""
    return {"method": None, "resample_every": resample_every}


def adaptive_report(callback: AdaptiveSampling, resample_every: int | None) -> dict[str, Any]:
    """summary.json `sampling` of an adaptive run (`AdaptivePoints.summary` and the picture)."""
    plot = str(PLOT_PATH) if callback.plotted is not None else None
    return {**callback.sampler.summary(), "resample_every": resample_every, "plot": plot}


def plot_adaptive_points(
    sampler: AdaptivePoints, drawn: Mapping[str, Tensor], problem: Any, path: Path
) -> Path | None:
    """Where the points went: one panel per adapted condition on the problem's first two
    inputs (the axes of its evaluation grid), the drawn points grey and the adaptive ones
    (RAR's added, RAD's chosen) red; a histogram for a 1-D problem."""
    import matplotlib.pyplot as plt

    names = list(sampler.conditions)
    if not names:
        return None
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.5), squeeze=False)
    inputs = problem.input_names
    grid = problem.evaluation_grid()
    label = "added (RAR)" if sampler.settings.method == "rar" else "chosen (RAD)"
    for ax, name in zip(axes[0], names, strict=True):
        base = drawn[name].double()
        adaptive = sampler.points.get(name, base[:0])
        if len(inputs) == 1:
            ax.hist(base[:, 0].numpy(), bins=50, color="0.7", label="first draw")
            ax.hist(adaptive[:, 0].numpy(), bins=50, color="tab:red", alpha=0.7, label=label)
            ax.set(xlabel=inputs[0], ylabel="points")
        else:
            ax.scatter(base[:, 0], base[:, 1], s=2, color="0.75", label="first draw")
            ax.scatter(adaptive[:, 0], adaptive[:, 1], s=3, color="tab:red", label=label)
            ax.set(xlabel=inputs[0], ylabel=inputs[1])
            if grid.axes:
                ax.set_xlim(float(grid.axes[0].min()), float(grid.axes[0].max()))
                ax.set_ylim(float(grid.axes[1].min()), float(grid.axes[1].max()))
        updates = len(sampler.updates)
        ax.set_title(f"{name}: {sampler.count(name)} points after {updates} updates")
        ax.legend(fontsize=8, loc="upper right", markerscale=3)
    fig.suptitle(f"adaptive collocation: {sampler.settings.method}")
    fig.tight_layout()
    return save_figure(fig, path)
