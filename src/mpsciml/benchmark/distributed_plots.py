"""Pictures of `scripts/bench_distributed.py`'s record: scaling over processes, and the race.

Why: scaling is a curve against an ideal line, and the optimiser race is two loss curves against
wall time with a target between them; both are read at a glance where the tables need arithmetic
(and on a cluster the process counts run to 8 and more, one table row each).

- `plot_scaling`: per grid, samples/s against processes for weak scaling (fixed fields per
  process), strong scaling (fixed global batch) and independent runs at once (the machine's
  ceiling), beside the ideal P x one process; each weak point labelled with its efficiency and,
  where the BatchNorm is synchronised by ours, the time the step spent in its exchanges.
- `plot_race`: per process count, the held-out (or training-set) loss against wall seconds of
  Adam alone and of Adam -> L-BFGS (its L-BFGS part marked), with the target both race to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: the `comm` of the rows that ran P independent runs at once (no DDP, nothing exchanged)
INDEPENDENT = "independent"


def _series(rows: list[dict[str, Any]], grid: int, kind: str) -> list[dict[str, Any]]:
    """The grid's rows of one kind, by process count: "weak" / "strong" (fp32 gradients),
    "independent" (P runs at once, nothing exchanged)."""
    if kind == INDEPENDENT:
        chosen = [r for r in rows if r["comm"] == INDEPENDENT]
    else:
        chosen = [r for r in rows if r.get(kind) and r["comm"] == "fp32"]
    chosen = [r for r in chosen if r["grid"] == grid and r.get("samples_per_s")]
    return sorted(chosen, key=lambda r: r["processes"])


def plot_scaling(scaling: dict[str, Any], path: Path, title: str) -> Path | None:
    """Samples/s against processes per grid (see the module's docstring); None without rows of
    more than one process count."""
    rows = scaling.get("rows") or []
    if len({r["processes"] for r in rows}) < 2:
        return None
    import matplotlib.pyplot as plt

    from mpsciml.plots import save_figure  # its import selects Agg (before any figure)

    grids = sorted({r["grid"] for r in rows})
    fig, axes = plt.subplots(
        1, len(grids), figsize=(max(7.0, 5.5 * len(grids)), 4.4), squeeze=False,
        constrained_layout=True,
    )  # fmt: skip
    efficiency = {(e["grid"], e["processes"]): e for e in scaling.get("efficiency") or []}
    for ax, grid in zip(axes[0], grids, strict=True):
        weak = _series(rows, grid, "weak")
        processes = sorted({r["processes"] for r in rows if r["grid"] == grid})
        if weak and weak[0]["processes"] == 1:
            base = weak[0]["samples_per_s"]
            ax.plot(processes, [base * p for p in processes], "k--", lw=1, label="ideal (P x 1)")
        for kind, marker, label in (
            ("weak", "o-", "weak: fixed fields per process"),
            ("strong", "s-", "strong: fixed global batch"),
            (INDEPENDENT, "x:", "independent runs at once (ceiling)"),
        ):
            series = _series(rows, grid, kind)
            if series:
                x = [r["processes"] for r in series]
                ax.plot(x, [r["samples_per_s"] for r in series], marker, label=label)
        for row in weak[1:]:
            entry = efficiency.get((grid, row["processes"]), {})
            note = f"weak {entry['weak_efficiency']:.2f}" if "weak_efficiency" in entry else ""
            exchange = row.get("batchnorm_exchange_ms_per_step")
            if exchange:
                note += f"\nBN exchanges {exchange:.0f} of {row['median_ms']:.0f} ms"
            ax.annotate(note, (row["processes"], row["samples_per_s"]), fontsize=8,
                        textcoords="offset points", xytext=(6, -22))  # fmt: skip
        ax.set_xticks(processes)
        ax.margins(x=0.3)  # room for the labels beside the last points
        ax.set(xlabel="processes", ylabel="samples / s (median step)", title=f"{grid} x {grid}")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_race(optimizers: dict[str, Any], path: Path, title: str) -> Path | None:
    """Loss against wall seconds per process count (see the module's docstring); None without
    a race."""
    races = [r for r in optimizers.get("rows") or [] if r.get("adam_curve")]
    if not races:
        return None
    import matplotlib.pyplot as plt

    from mpsciml.plots import save_figure  # its import selects Agg (before any figure)

    fig, axes = plt.subplots(
        1, len(races), figsize=(5.5 * len(races), 4.2), squeeze=False, constrained_layout=True
    )
    for ax, race in zip(axes[0], races, strict=True):
        adam = race["adam_curve"]
        ax.plot([r["seconds"] for r in adam], [r["loss"] for r in adam], "-", label="Adam")
        route = race.get("route_curve") or []
        ax.plot([r["seconds"] for r in route], [r["loss"] for r in route], "-", color="C1",
                label="Adam -> L-BFGS")  # fmt: skip
        lbfgs = [r for r in route if r.get("phase") == "lbfgs"]
        if lbfgs:
            ax.plot([r["seconds"] for r in lbfgs], [r["loss"] for r in lbfgs], "o", color="C1",
                    ms=4, label="its L-BFGS steps")  # fmt: skip
        ax.axhline(race["target_loss"], color="k", ls=":", lw=1, label="target: Adam's final")
        ratio = race.get("time_ratio")
        verdict = "never" if ratio is None else f"in {ratio:.2f}x Adam's time"
        ax.set(
            xlabel="wall seconds", ylabel="loss (judged outside the clock)",
            title=f"{race['processes']} process(es): the L-BFGS route reached it {verdict}",
        )  # fmt: skip
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def write_plots(record: dict[str, Any], json_path: Path) -> list[Path]:
    """The record's pictures beside its JSON (`<stem>_scaling.png`, `<stem>_race.png`)."""
    machine = record["machine"]
    where = f"{machine.get('cuda') or machine['cpu']}, {machine.get('threads_per_process', 1)}"
    where += " thread(s) per process"
    written = []
    if "scaling" in record:
        title = f"DiffNet under DDP: samples/s against processes | {where}"
        written.append(plot_scaling(record["scaling"], json_path.with_name(
            f"{json_path.stem}_scaling.png"), title))  # fmt: skip
    if "optimizers" in record:
        title = f"DiffNet: Adam against Adam -> L-BFGS | {where}"
        written.append(plot_race(record["optimizers"], json_path.with_name(
            f"{json_path.stem}_race.png"), title))  # fmt: skip
    return [p for p in written if p is not None]
