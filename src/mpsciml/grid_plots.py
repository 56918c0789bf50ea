"""Pictures of one sample of a grid operator: input, prediction, reference and |error|.

One PNG per output field, four panels: the input field (the first input channel: what the
operator was given), the prediction, the reference and the absolute error. Heat maps on a 2-D
grid (prediction and reference on one colour scale), lines on a 1-D grid. Headless (Agg) through
`mpsciml.plots`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from mpsciml.plots import save_figure


def plot_grid_sample(
    inputs: Tensor,
    prediction: Tensor,
    reference: Tensor,
    axes: list[Tensor],
    input_names: tuple[str, ...],
    output_names: tuple[str, ...],
    coordinate_names: tuple[str, ...],
    out_dir: Path,
    title: str = "",
    suffix: str = "",
) -> list[Path]:
    """inputs (C_in, *grid), prediction and reference (C_out, *grid), one coordinate vector per
    spatial dimension in `axes`: `<field><suffix>.png` under out_dir for each output field."""
    if len(axes) > 2:  # a 3-D grid: the slice through the middle of the last dimensions
        middle = tuple(len(axis) // 2 for axis in axes[2:])
        inputs, prediction, reference = (t[(..., *middle)] for t in (inputs, prediction, reference))
        axes = axes[:2]
    paths = []
    for i, field in enumerate(output_names):
        pred, ref = prediction[i].double(), reference[i].double()
        error = (pred - ref).abs()
        panels = (
            (f"input {input_names[0]}", inputs[0].double(), None),
            (f"{field}: prediction", pred, "shared"),
            (f"{field}: reference", ref, "shared"),
            (f"{field}: |error|", error, "magma"),
        )
        fig, plot_axes = plt.subplots(1, 4, figsize=(19, 4), constrained_layout=True)
        limits = (
            float(torch.minimum(pred.min(), ref.min())),
            float(torch.maximum(pred.max(), ref.max())),
        )
        for ax, (label, values, scale) in zip(plot_axes, panels, strict=True):
            if len(axes) == 2:
                extent = [
                    float(axes[0][0]),
                    float(axes[0][-1]),
                    float(axes[1][0]),
                    float(axes[1][-1]),
                ]
                options: dict = {"cmap": "magma"} if scale == "magma" else {}
                if scale == "shared":
                    options = {"vmin": limits[0], "vmax": limits[1]}
                # rows: the second coordinate, columns: the first
                image = ax.imshow(
                    values.T.numpy(), origin="lower", extent=extent, aspect="auto", **options
                )
                fig.colorbar(image, ax=ax)
                ax.set(xlabel=coordinate_names[0], ylabel=coordinate_names[1])
            else:
                ax.plot(axes[0].numpy(), values.numpy())
                ax.set(xlabel=coordinate_names[0])
            ax.set_title(label)
        fig.suptitle(f"{title}  {field}: max |error| {float(error.max()):.3g}")
        paths.append(save_figure(fig, out_dir / f"{field}{suffix}.png"))
    return paths
