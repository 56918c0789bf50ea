"""Pictures of a run: fields (prediction, reference, |error|) and loss curves.

Rendered with the non-interactive Agg backend so they work on a headless GPU box or in CI.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor

from mpsciml.problems.base import EvaluationGrid


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write a PNG (creating its folder) and free the figure: pyplot keeps every open one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_fields(
    grid: EvaluationGrid,
    prediction: Tensor,
    reference: Tensor,
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    out_dir: Path,
    title: str = "",
) -> list[Path]:
    """One PNG per output field: heat maps for 2-D inputs, line plots for 1-D inputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, field in enumerate(output_names):
        pred, ref = prediction[:, i], reference[:, i]
        if grid.mask is not None:  # a domain that is not a box: the points outside are blank
            outside = ~grid.mask
            pred, ref = pred.masked_fill(outside, math.nan), ref.masked_fill(outside, math.nan)
        error = (pred - ref).abs()
        fig, axes = plt.subplots(1, 3, figsize=(15, 4), constrained_layout=True)
        panels = (("prediction", pred), ("reference", ref), ("|error|", error))
        if len(grid.shape) == 2:
            _heat_maps(fig, axes, grid, panels, input_names, field)
        else:
            for ax, (label, values) in zip(axes, panels, strict=True):
                ax.plot(grid.axes[0], values)
                ax.set(title=f"{field}: {label}", xlabel=input_names[0])
        fig.suptitle(f"{title}  {field}: max |error| {float(error.nan_to_num(0.0).max()):.3g}")
        path = out_dir / f"{field}.png"
        paths.append(save_figure(fig, path))
    return paths


def _heat_maps(fig, axes, grid, panels, input_names, field) -> None:  # type: ignore[no-untyped-def]
    (x_axis, y_axis) = grid.axes
    extent = [float(x_axis[0]), float(x_axis[-1]), float(y_axis[0]), float(y_axis[-1])]
    shown = torch.cat([panels[0][1], panels[1][1]])
    shown = shown[~shown.isnan()]  # NaN: outside a non-box domain
    vmin, vmax = float(shown.min()), float(shown.max())
    for k, (ax, (label, values)) in enumerate(zip(axes, panels, strict=True)):
        image = values.reshape(grid.shape).T.numpy()  # rows: second input, columns: first
        limits = {"vmin": vmin, "vmax": vmax} if k < 2 else {"cmap": "magma"}
        mesh = ax.imshow(image, origin="lower", extent=extent, aspect="auto", **limits)
        ax.set(title=f"{field}: {label}", xlabel=input_names[0], ylabel=input_names[1])
        fig.colorbar(mesh, ax=ax)


def plot_losses(metrics_csv: Path, out_path: Path, title: str = "") -> Path | None:
    """Every `train/loss*` column of a Lightning metrics.csv against step, log scale."""
    if not metrics_csv.exists():
        return None
    series: dict[str, tuple[list[int], list[float]]] = {}
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key.startswith(("train/loss", "val/l2")) and value not in ("", None):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(int(row["step"]))
                    values.append(float(value))
    if not series:
        return None
    fig, (ax_loss, ax_l2) = plt.subplots(1, 2, figsize=(12, 4), constrained_layout=True)
    for key, (steps, values) in sorted(series.items()):
        ax = ax_l2 if key.startswith("val/") else ax_loss
        finite = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v) and v > 0]
        if finite:
            ax.semilogy(*zip(*finite, strict=True), label=key, lw=2 if key == "train/loss" else 1)
    ax_loss.set(title="training loss terms", xlabel="step", ylabel="mean squared residual")
    ax_l2.set(title="relative L2 error vs reference", xlabel="step", ylabel="relative L2")
    for ax in (ax_loss, ax_l2):
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, out_path)
