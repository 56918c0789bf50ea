"""The benchmark's rows as one bar chart: time per step of every row of a single-size case.

Why a picture: with `--peers --compile` a case has ten rows (our precisions and compiled steps,
the bare loops, the peers, Lightning's loop alone) and the question a reader brings is "how far
apart are they, and how noisy is that"; bars with their interquartile range answer it at a
glance, where the table needs reading across 13 columns. The floor of a step run by
`trainer.fit` (`comparison.loop_floor`) is drawn as a line, so the gap between our fastest row
and what Lightning allows shows too. Rows that did not run are named in the title.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: bar colour per row kind: ours, the bare loops, the peers, the loop alone
KIND_COLOURS = {"lightning": "C0", "bare": "0.55", "peer": "C1", "loop": "C2"}
KIND_NAMES = {
    "lightning": "mpsciml (trainer.fit)",
    "bare": "bare PyTorch loop",
    "peer": "peer tool",
    "loop": "Lightning's loop alone",
}


def bar_label(row: dict[str, Any]) -> str:
    """The figure beside a bar: the median, and the row over the bare eager loop (paired by turn
    where known) or else over fp32."""
    text = f"{row['median_ms']:.3g} ms"
    if row.get("kind") == "loop":  # no training step: a ratio to one would mislead
        return text
    paired, eager, fp32 = (
        row.get(k) for k in ("x_bare_eager_paired", "x_bare_eager", "time_vs_fp32")
    )
    if paired is not None:
        return f"{text}  ({paired:.2f}x bare eager, paired)"
    if eager is not None:
        return f"{text}  ({eager:.2f}x bare eager)"
    return text if fp32 is None else f"{text}  ({fp32:.2f}x fp32)"


def plot_rows(cases: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Horizontal bars (median ms/step, IQR whiskers) for a record with ONE case (several sizes
    have `report.plot_sizes`); None when there is not one case or no row has a time."""
    if len(cases) != 1:
        return None
    case = cases[0]
    timed = [r for r in case["rows"] if r.get("median_ms") and not r.get("error")]
    if not timed:
        return None
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from mpsciml.plots import save_figure  # its import selects Agg (before any figure)

    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.45 * len(timed)), constrained_layout=True)
    positions = range(len(timed))[::-1]  # the table's first row on top
    medians = [r["median_ms"] for r in timed]
    lower = [r["median_ms"] - r.get("q1_ms", r["median_ms"]) for r in timed]
    upper = [r.get("q3_ms", r["median_ms"]) - r["median_ms"] for r in timed]
    colours = [KIND_COLOURS.get(r.get("kind", ""), "C3") for r in timed]
    ax.barh(list(positions), medians, xerr=[lower, upper], color=colours, capsize=3)
    ax.set_yticks(list(positions), [r["name"] for r in timed])
    for y, row in zip(positions, timed, strict=True):
        ax.text(
            row.get("q3_ms", row["median_ms"]), y, "  " + bar_label(row), va="center", fontsize=8
        )
    handles = [
        Patch(color=KIND_COLOURS[kind], label=KIND_NAMES[kind])
        for kind in KIND_NAMES
        if any(r.get("kind") == kind for r in timed)
    ]
    floor = case.get("lightning_loop")
    if floor:
        line = ax.axvline(floor["floor_ms"], color="C3", linestyle="--", linewidth=1)
        line.set_label(f"{floor['reference']} + Lightning's loop: least step under trainer.fit")
        handles.append(line)
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=min(len(handles), 3))
    ax.set_xlabel("time per training step [ms]: median, whiskers the interquartile range")
    ax.set_xlim(0, 1.45 * max(r.get("q3_ms", r["median_ms"]) for r in timed))
    ax.grid(True, axis="x", alpha=0.3)
    not_run = [r["name"] for r in case["rows"] if r not in timed]
    ax.set_title(title + ("\nnot run: " + ", ".join(not_run) if not_run else ""), fontsize=10)
    return save_figure(fig, path)


def rows_title(record: dict[str, Any]) -> str:
    """The chart's title: the problem, its size and where it ran."""
    machine, case = record["machine"], record["cases"][0]
    where = f"{machine['cuda'] or machine['cpu']}, {machine['threads']} thread(s)"
    size = f"{case.get('points')} points, hidden {case.get('hidden')}"
    return f"{record['problem']} ({size}): time per training step | {where}"
