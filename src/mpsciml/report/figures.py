"""Figures of a sweep: error by precision, loss curves by precision, cost relative to fp32.

One panel per (problem, model, steps), the same grouping as the table, so a figure never mixes
runs the table keeps apart. Each precision has one colour in every figure. Errors and losses
span decades, hence log axes. A figure with nothing to draw is not written; the caller gets the
reason instead of a path, and the report says why it is missing.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mpsciml.plots import save_figure
from mpsciml.report.aggregate import BASELINE, PRECISION_ORDER, Row, group_key, setting_rank
from mpsciml.report.collect import Run, read_loss_curve

Panel = tuple[str, str, int | None]


#: one line style per setting of a panel, so settings sharing a precision (and colour) differ
LINESTYLES = ("-", "--", ":", "-.")


def colour(precision: str) -> str:
    palette = plt.get_cmap("tab10").colors
    index = PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else None
    if index is None:
        index = len(PRECISION_ORDER) + sum(map(ord, precision)) % (10 - len(PRECISION_ORDER))
    return matplotlib.colors.to_hex(palette[index % len(palette)])


def panel_title(panel: Panel) -> str:
    problem, model, steps = panel
    return f"{problem} · {model} · {_steps(steps)} steps"


def _steps(steps: int | None) -> str:
    return "?" if steps is None else str(steps)


def _panels(count: int, width: float = 5.0, height: float = 3.8) -> tuple[Figure, list[Axes]]:
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(max(width * columns, 7.0), height * rows),  # room for the two-line title
        squeeze=False,
        constrained_layout=True,
    )
    flat = list(axes.flat)
    for ax in flat[count:]:
        ax.set_visible(False)
    return fig, flat[:count]


def _by_panel(rows: list[Row]) -> dict[Panel, list[Row]]:
    panels: dict[Panel, list[Row]] = defaultdict(list)
    for row in rows:
        panels[row.panel].append(row)
    return dict(panels)


def l2_by_precision(rows: list[Row], runs: list[Run], path: Path) -> Path | str:
    """Bars: mean error per precision and field, std as error bars, each seed's error a dot."""
    panels = {k: v for k, v in _by_panel(rows).items() if any(r.l2 for r in v)}
    if not panels:
        return "no ok run recorded a relative L2 error"
    values: dict[tuple[str, str, int | None, str], list[Run]] = defaultdict(list)
    for run in runs:
        if run.status == "ok":
            values[group_key(run)].append(run)
    fig, axes = _panels(len(panels))
    for ax, (panel, members) in zip(axes, panels.items(), strict=True):
        fields = list(dict.fromkeys(name for row in members for name in row.l2))
        width = 0.8 / len(fields)
        hatches = ["", "//", "..", "xx", "\\\\"]
        for i, row in enumerate(members):
            for j, name in enumerate(fields):
                stat = row.l2.get(name)
                if stat is None or stat.mean is None:
                    continue
                x = i - 0.4 + width * (j + 0.5)
                error = [[0], [stat.std]] if stat.std is not None else None
                ax.bar(
                    x,
                    stat.mean,
                    width,
                    yerr=error,
                    capsize=3,
                    color=colour(row.precision),
                    edgecolor="black",
                    hatch=hatches[j % len(hatches)],
                    alpha=0.8,
                )
                seeds = [r.l2[name] for r in values[(*panel, row.setting)] if name in r.l2]
                ax.plot([x] * len(seeds), seeds, "o", color="black", markersize=3, zorder=3)
        labels = [row.setting for row in members]
        ax.set_xticks(range(len(members)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set(title=panel_title(panel), xlabel="precision", ylabel="relative L2 error")
        ax.grid(axis="y", which="both", alpha=0.3)
        if len(fields) > 1:
            handles = [
                plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="black", hatch=hatches[j])
                for j in range(len(fields))
            ]
            ax.legend(handles, [f"field {name}" for name in fields], fontsize=8)
    fig.suptitle("Relative L2 error by precision\n(bar: mean, whisker: +1 std, dots: seeds)")
    return save_figure(fig, path)


def loss_curves(rows: list[Row], runs: list[Run], path: Path) -> Path | str:
    """train/loss against step: the median over seeds per precision, min-max band around it.

    Diverged runs are drawn too (up to their last finite loss): how a precision fails is part
    of the comparison; failed runs are not. A step logged by only some seeds uses those seeds.
    """
    curves: dict[Panel, dict[str, list[list[tuple[int, float]]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    rank: dict[str, tuple[int, bool, str]] = {}
    colours: dict[str, str] = {}
    for run in runs:
        curve = read_loss_curve(run.folder) if run.status in ("ok", "diverged") else []
        if curve:
            curves[(run.problem, run.model, run.steps)][run.setting].append(curve)
            rank[run.setting], colours[run.setting] = setting_rank(run), run.precision
    if not curves:
        return "no run folder has a metrics.csv with a train/loss column"
    order = {row.panel: i for i, row in enumerate(rows)}
    panels = sorted(curves, key=lambda p: order.get(p, len(order)))
    fig, axes = _panels(len(panels))
    for ax, panel in zip(axes, panels, strict=True):
        for index, setting in enumerate(sorted(curves[panel], key=rank.__getitem__)):
            by_step: dict[int, list[float]] = defaultdict(list)
            for curve in curves[panel][setting]:
                for step, value in curve:
                    by_step[step].append(value)
            steps = sorted(by_step)
            middle = [statistics.median(by_step[s]) for s in steps]
            seeds = len(curves[panel][setting])
            style = {"color": colour(colours[setting]), "linestyle": LINESTYLES[index % 4]}
            ax.plot(steps, middle, label=f"{setting} ({seeds} runs)", **style)
            if seeds > 1:
                low = [min(by_step[s]) for s in steps]
                high = [max(by_step[s]) for s in steps]
                ax.fill_between(steps, low, high, color=style["color"], alpha=0.2, lw=0)
        ax.set_yscale("log")
        ax.set(title=panel_title(panel), xlabel="training step", ylabel="train/loss")
        ax.grid(which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Training loss by precision\n(line: median over seeds, band: min-max)")
    return save_figure(fig, path)


def ratios_vs_baseline(rows: list[Row], path: Path) -> Path | str:
    """Bars per precision: speed-up over fp32 and memory relative to fp32; 1 is fp32 itself.

    Memory is CUDA max allocated when the runs had a GPU (what limits model size there), else
    peak RSS of the process.
    """
    cuda = any(row.cuda_ratio is not None for row in rows)
    memory_of = (lambda r: r.cuda_ratio) if cuda else (lambda r: r.rss_ratio)
    shown = [
        r for r in rows if not r.is_baseline and (r.speedup is not None or memory_of(r) is not None)
    ]
    if not shown:
        return f"no precision other than {BASELINE} has an ok {BASELINE} run to compare with"
    panels = list(dict.fromkeys(row.panel for row in shown))
    fig, (ax_time, ax_memory) = plt.subplots(
        1, 2, figsize=(max(8.0, 2.0 + 1.6 * len(shown)), 4.2), constrained_layout=True
    )
    memory_label = "CUDA max allocated" if cuda else "peak RSS"
    for ax, value_of, ylabel in (
        (ax_time, lambda r: r.speedup, f"speed-up vs {BASELINE} (×, >1 faster)"),
        (ax_memory, memory_of, f"{memory_label} vs {BASELINE} (×, <1 smaller)"),
    ):
        ticks, labels = [], []
        x = 0.0
        for panel in panels:
            for row in (r for r in shown if r.panel == panel):
                value = value_of(row)
                if value is not None:
                    ax.bar(x, value, 0.8, color=colour(row.precision), edgecolor="black")
                    ax.annotate(f"{value:.2f}", (x, value), ha="center", va="bottom", fontsize=8)
                ticks.append(x)
                labels.append(f"{row.setting}\n{row.problem}\n{_steps(row.steps)} steps")
                x += 1
            x += 0.5  # a gap between problems
        ax.axhline(1.0, color="black", lw=1, ls="--", label=BASELINE)
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set(ylabel=ylabel, xlabel="precision / problem / steps")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    ax_time.set_title(f"Time per step relative to {BASELINE}")
    ax_memory.set_title(f"Memory relative to {BASELINE}")
    return save_figure(fig, path)


def write_figures(rows: list[Row], runs: list[Run], out: Path) -> dict[str, Path | str]:
    """Every figure by name: the path written, or why it was skipped."""
    return {
        "L2 error by precision": l2_by_precision(rows, runs, out / "report_l2.png"),
        "loss curves": loss_curves(rows, runs, out / "report_loss.png"),
        f"time and memory vs {BASELINE}": ratios_vs_baseline(rows, out / "report_ratios.png"),
    }
