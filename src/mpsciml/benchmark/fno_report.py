"""The FNO benchmark's own tables and plot: Tu et al.'s settings side by side, our FNO against
neuraloperator's at equal size, and the CP contraction orders.

Rows are the dicts of `report.runner_row` (plus `label` and the `spectral` record of what the
spectral layers ran); ratios are against our fp32 row (`report.add_ratios`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _mib(value: int | None) -> float | None:
    return None if value is None else value / 2**20


def spectral_ran(row: dict[str, Any]) -> str:
    """'fft/contraction/inverse' dtypes that ran, e.g. 'float32/float16/float32'."""
    ran = (row.get("spectral") or {}).get("ran") or []
    short = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16", "float64": "fp64"}
    parts = {
        "/".join(
            short.get(r[k], r[k]) for k in ("fft_dtype", "contraction_dtype", "inverse_fft_dtype")
        )
        for r in ran
    }
    return ", ".join(sorted(parts)) or "-"


def settings_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per setting: time, throughput, saved-for-backward bytes and memory peaks, each
    against fp32, and what the spectral layers ran (FFT/contraction/inverse FFT)."""
    lines = [
        "| row | setting | ms/step | time x fp32 | samples/s | saved MiB | saved x fp32 "
        "| peak RSS MiB | CUDA peak MiB | CUDA x fp32 | spectral ran (FFT/contr./iFFT) "
        "| parameters |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        label = r.get("label", r["name"])
        if r.get("skipped") or r.get("error"):
            why = f"not run: {r['skipped']}" if r.get("skipped") else f"failed: {r['error']}"
            lines.append(f"| {r['name']} | {label} | {why} ||||||||||")
            continue
        cells = [
            _fmt(r.get("median_ms"), ".1f"),
            _fmt(r.get("time_vs_fp32"), ".2f"),
            _fmt(r.get("samples_per_s"), ".1f"),
            _fmt(_mib(r.get("saved_bytes")), ".2f"),
            _fmt(r.get("saved_vs_fp32"), ".2f"),
            _fmt(r.get("rss_peak_mb"), ".0f"),
            _fmt(r.get("cuda_max_allocated_mb"), ".1f"),
            _fmt(r.get("cuda_vs_fp32"), ".2f"),
            spectral_ran(r),
            _fmt(r.get("parameters"), "d"),
        ]
        lines.append(f"| {r['name']} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def equal_size(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Our fp32 FNO against neuraloperator's fp32 FNO of the same size, from the same run:
    step time (and its ratio: < 1 means ours is faster), saved bytes, parameters, losses."""
    ours = next((r for r in rows if r["name"] == "fp32" and r.get("median_ms")), None)
    theirs = next((r for r in rows if r["name"] == "neuralop_fp32" and r.get("median_ms")), None)
    if ours is None or theirs is None:
        return None
    keys = ("median_ms", "saved_bytes", "parameters", "first_loss", "last_loss", "rss_peak_mb")
    return {
        "ours": {k: ours.get(k) for k in keys},
        "neuralop": {k: theirs.get(k) for k in keys},
        "time_ours_vs_neuralop": ours["median_ms"] / theirs["median_ms"],
        "saved_ours_vs_neuralop": (
            ours["saved_bytes"] / theirs["saved_bytes"]
            if ours.get("saved_bytes") and theirs.get("saved_bytes")
            else None
        ),
    }


def equal_size_table(comparison: dict[str, Any] | None) -> str:
    if comparison is None:
        return "(no fp32 rows of both FNOs)"
    ours, theirs = comparison["ours"], comparison["neuralop"]
    lines = [
        "| fp32 FNO | parameters | ms/step | saved MiB | loss (first timed step) | loss (last) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in (("ours (model=fno)", ours), ("neuraloperator (model=neuralop_fno)", theirs)):
        lines.append(
            f"| {name} | {_fmt(r['parameters'], 'd')} | {_fmt(r['median_ms'], '.1f')} "
            f"| {_fmt(_mib(r['saved_bytes']), '.2f')} | {_fmt(r['first_loss'], '.4g')} "
            f"| {_fmt(r['last_loss'], '.4g')} |"
        )
    lines.append(
        f"\nours / neuraloperator: time {comparison['time_ours_vs_neuralop']:.2f}x, saved bytes "
        f"{_fmt(comparison['saved_ours_vs_neuralop'], '.2f')}x"
    )
    return "\n".join(lines)


def contraction_table(result: dict[str, Any] | None) -> str:
    if not result:
        return "(no CP contraction measured)"
    shape = result["x_shape"]
    lines = [
        f"CP contraction, x {tuple(shape)} (batch, channels, *kept modes), rank "
        f"{result['rank']}, forward + backward, median of {result['repeats']}:",
        "",
        "| precision | order | ms | x cheapest | saved MiB | x cheapest | largest intermediate "
        "(elements) | FLOPs (opt_einsum) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['precision']} | {r['order']} | {_fmt(r['ms'], '.2f')} "
            f"| {_fmt(r.get('time_vs_cheapest'), '.2f')} | {_fmt(_mib(r['saved_bytes']), '.3f')} "
            f"| {_fmt(r.get('saved_vs_cheapest'), '.2f')} | {r['largest_intermediate']:,} "
            f"| {r['flops']:,} |"
        )
    return "\n".join(lines)


def plot_settings(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Bars per row: time per step and saved-for-backward bytes, both x fp32."""
    measured = [r for r in rows if r.get("median_ms") and not r.get("skipped")]
    if len(measured) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpsciml.plots import save_figure

    names = [r["name"] for r in measured]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for ax, key, what in (
        (axes[0], "time_vs_fp32", "time per step x fp32"),
        (axes[1], "saved_vs_fp32", "saved for backward x fp32"),
    ):
        values = [r.get(key) or 0.0 for r in measured]
        bars = ax.bar(range(len(names)), values, color="tab:blue")
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(what)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(title)
    return save_figure(fig, path)
