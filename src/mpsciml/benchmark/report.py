"""Results of a benchmark: rows with ratios to fp32, a printed table, JSON and the sizes plot.

A row is a plain dict (one runner: one precision, the bare loop, a peer); ratios are taken against
the Lightning fp32 row of the same case, since fp32 is the baseline every precision is judged by.
Two more time ratios place every row against issue 15's references: `x_fastest_mpsciml` (to the
fastest of our Lightning rows: the best a user of mpsciml gets) and `x_bare_eager` (to the bare
PyTorch eager loop, `bare_fp32`).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mpsciml.benchmark.bare_compiled import FUSED_IMPL
from mpsciml.benchmark.timing import paired_ratio, summarize

if TYPE_CHECKING:
    from mpsciml.benchmark.runner import Runner

REFERENCE = "fp32"
BARE_EAGER = "bare_fp32"
RATIO_KEYS = {  # ratio name -> the row key it divides
    "time_vs_fp32": "median_ms",
    "saved_vs_fp32": "saved_bytes",
    "rss_peak_vs_fp32": "rss_peak_mb",
    "cuda_vs_fp32": "cuda_max_allocated_mb",
    "throughput_vs_fp32": "samples_per_s",
}


def runner_row(runner: Runner, warmup: int) -> dict[str, Any]:
    """What one runner measured, JSON-ready (the module and traceback stay out)."""
    row: dict[str, Any] = {"name": runner.name, "kind": runner.kind, "error": runner.error}
    if runner.error is None and len(runner.clock.samples) <= warmup:  # e.g. stopped as diverged
        row["error"] = f"stopped after {runner.clock.ticks} steps, before any timed step"
    if row["error"] is None:
        # a compile=true row's compiling steps (H1's `compile_steps`) are never step times, even
        # where they fall after the warm-up (a recompile; a short --warmup)
        compiled = runner.facts.get("compile") or {}
        late = {s for s in compiled.get("compile_steps") or () if s >= warmup}
        kept = [s for i, s in enumerate(runner.clock.samples) if i not in late]
        row.update(summarize(kept, warmup))
        if late:
            row["compile_steps_not_timed"] = sorted(late)
        row["turn"], row["warmup"] = runner.clock.turn, warmup
        row["samples_ms"] = [round(1e3 * s, 4) for s in runner.clock.samples]
    row.update(
        {
            "saved_bytes": runner.saved_bytes,
            "saved_by_dtype": runner.saved_by_dtype,
            **runner.memory,
            "first_loss": runner.losses[0] if runner.losses else None,
            "last_loss": runner.losses[-1] if runner.losses else None,
        }
    )
    row.update(
        {
            k: v
            for k, v in runner.facts.items()
            if k not in ("module", "traceback") and not k.startswith("_")
        }
    )
    if fused_step(row) or row["kind"] == "loop":  # a graph's backward, or none: nothing seen
        row["saved_bytes"], row["saved_by_dtype"] = None, {}
    if row.get("batch_size") and row.get("median_ms"):
        row["samples_per_s"] = row["batch_size"] / (row["median_ms"] / 1e3)
    return row


def fused_step(row: dict[str, Any]) -> bool:
    """Whether the row's steps were whole compiled calls (forward, gradient and Adam): the
    `bare_fused` row, or a compile=true row whose steps the fused step ran."""
    compiled = row.get("compile") if isinstance(row.get("compile"), dict) else {}
    return bool(compiled.get("fused_steps")) or row.get("optimizer_impl") == FUSED_IMPL


def skipped_row(name: str, reason: str, why: str, kind: str = "lightning") -> dict[str, Any]:
    """A row that was not run because its configuration cannot run here (neuraloperator's half
    spectral path on a CPU, a peer not installed): listed with the short reason (`skipped`, for
    the table) and the whole message (`skipped_why`), never counted as a failure."""
    return {"name": name, "kind": kind, "error": None, "skipped": reason, "skipped_why": why}


def row_notes(rows: Sequence[dict[str, Any]]) -> list[str]:
    """One line per row that has something the table cannot show: a peer's version and loss
    definition, a compiled row's compile time (never part of its step time), an idle row."""
    notes = []
    for r in rows:
        if r.get("skipped") or r.get("error"):
            continue
        parts = [r[k] for k in ("tool", "loss_definition") if r.get(k)]
        compiled = r.get("compile") if isinstance(r.get("compile"), dict) else r
        if compiled.get("compile_seconds") is not None:
            backend = compiled.get("compile_backend") or compiled.get("backend")
            if compiled.get("cpp_wrapper"):
                backend = f"{backend}, C++ wrapper"
            parts.append(f"compiled ({backend}) in {compiled['compile_seconds']:.1f} s, not timed")
        if fused_step(r):
            parts.append(
                "forward, gradient and Adam in one compiled call per step: nothing is saved for "
                "autograd outside it, so no saved-bytes figure"
            )
        if r.get("kind") == "loop":
            parts.append("its training step does nothing: the loop's own cost, no loss")
        if parts:
            notes.append(f"{r['name']}: " + "; ".join(parts))
    return notes


def add_ratios(rows: list[dict[str, Any]], reference: str = REFERENCE) -> list[dict[str, Any]]:
    """Each row's time, saved bytes and memory peaks divided by the reference row's (in place)."""
    base = next((r for r in rows if r["name"] == reference and r["kind"] == "lightning"), None)
    for row in rows:
        for ratio, key in RATIO_KEYS.items():
            mine, theirs = row.get(key), None if base is None else base.get(key)
            row[ratio] = mine / theirs if mine is not None and theirs else None
    ours = [r["median_ms"] for r in rows if r.get("kind") == "lightning" and r.get("median_ms")]
    bare = next((r for r in rows if r["name"] == BARE_EAGER and r.get("median_ms")), None)
    for row in rows:
        mine = row.get("median_ms")
        row["x_fastest_mpsciml"] = mine / min(ours) if mine and ours else None
        row["x_bare_eager"] = mine / bare["median_ms"] if mine and bare else None
        row["x_bare_eager_paired"] = paired_rows(row, bare) if mine and bare else None
    return rows


def paired_rows(row: dict[str, Any], base: dict[str, Any]) -> float | None:
    """`paired_ratio` of two rows' samples, turn by turn (None without samples or turns)."""
    a, b = row.get("samples_ms"), base.get("samples_ms")
    if not a or not b or not row.get("turn") or row.get("turn") != base.get("turn"):
        return None
    try:
        return paired_ratio(a, b, row["turn"], row.get("warmup", 0))
    except ValueError:  # no timed turn in common
        return None


def framework_overhead(rows: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Lightning fp32 step / bare PyTorch fp32 step: the ratio of the medians, and the median
    of the per-turn ratios (`paired_ratio`, robust to load drifting during the run)."""
    ours = next((r for r in rows if r["name"] == REFERENCE and r["kind"] == "lightning"), None)
    bare = next((r for r in rows if r["name"] == BARE_EAGER), None)
    if ours is None or bare is None or not ours.get("median_ms") or not bare.get("median_ms"):
        return None
    a, b = ([s / 1e3 for s in row["samples_ms"]] for row in (ours, bare))
    return {
        "of_medians": ours["median_ms"] / bare["median_ms"],
        "paired": paired_ratio(a, b, ours["turn"], ours["warmup"]),
    }


#: the row of our Taylor step with a Laplacian's terms as streams of their own (--laplacian-apart)
LAPLACIAN_APART = "fp32_laplacian_apart"


def versus_laplacian_apart(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]] | None:
    """Each other fp32 Lightning row's step over the Laplacian-apart row's (medians, and paired
    by turn): how much the summed Laplacian stream, and compiling on top of it, save against
    the Taylor step before it. None without that row."""
    apart = next((r for r in rows if r["name"] == LAPLACIAN_APART and r.get("median_ms")), None)
    if apart is None:
        return None
    base = [s / 1e3 for s in apart["samples_ms"]]
    ratios = {}
    for row in rows:
        ours = row["kind"] == "lightning" and row["name"].startswith("fp32")
        if row is apart or not ours or not row.get("median_ms"):
            continue
        samples = [s / 1e3 for s in row["samples_ms"]]
        ratios[row["name"]] = {
            "of_medians": row["median_ms"] / apart["median_ms"],
            "paired": paired_ratio(samples, base, row["turn"], row["warmup"]),
        }
    return ratios


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """One line per runner: time (median, IQR; x fp32, x our fastest row, x bare eager), saved
    bytes, memory peaks, and losses: the row's own at step 0 and at its last step, and ours at its
    final weights (`loss_ours_end`: every row's weights after the same number of steps)."""
    lines = [
        "| runner | ms/step (median) | IQR ms | time x fp32 | x fastest mpsciml | x bare eager "
        "(paired) "
        "| saved for backward MiB | saved x fp32 | peak RSS MiB | CUDA peak MiB | loss (step 0) "
        "| loss (last step) | our loss at the end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['name']} | not run: {r['skipped']} |||||||||||")
            continue
        if r.get("error"):
            lines.append(f"| {r['name']} | failed: {r['error']} |||||||||||")
            continue
        saved = None if r.get("saved_bytes") is None else r["saved_bytes"] / 2**20
        lines.append(
            f"| {r['name']} | {_fmt(r.get('median_ms'), '.1f')} | {_fmt(r.get('iqr_ms'), '.1f')} "
            f"| {_fmt(r.get('time_vs_fp32'), '.2f')} | {_fmt(r.get('x_fastest_mpsciml'), '.2f')} "
            f"| {_fmt(r.get('x_bare_eager'), '.2f')} ({_fmt(r.get('x_bare_eager_paired'), '.2f')}) "
            f"| {_fmt(saved, '.2f')} "
            f"| {_fmt(r.get('saved_vs_fp32'), '.2f')} | {_fmt(r.get('rss_peak_mb'), '.0f')} "
            f"| {_fmt(r.get('cuda_max_allocated_mb'), '.1f')} "
            f"| {_fmt(r.get('first_loss'), '.6g')} | {_fmt(r.get('last_loss'), '.6g')} "
            f"| {_fmt(r.get('loss_ours_end'), '.6g')} |"
        )
    return "\n".join(lines)


def write_json(path: Path, record: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return path


def plot_sizes(cases: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Time/step and saved bytes against collocation points: a line per runner (and width)."""
    if len({c["points"] for c in cases}) < 2:
        return None  # one point per line says nothing a table does not
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mpsciml.plots import save_figure

    fig, (ax_time, ax_saved) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    widths = sorted({c["width"] for c in cases})
    styles = ["-", "--", ":", "-."]
    names = list(dict.fromkeys(r["name"] for c in cases for r in c["rows"]))
    by_points = sorted(cases, key=lambda c: c["points"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, name in enumerate(names):
        for w, width in enumerate(widths):
            points, times, saved = [], [], []
            for case in (c for c in by_points if c["width"] == width):
                row = next((r for r in case["rows"] if r["name"] == name), None)
                if row is None or row.get("error") or row.get("median_ms") is None:
                    continue
                points.append(case["points"])
                times.append(row["median_ms"])
                saved.append(None if row["saved_bytes"] is None else row["saved_bytes"] / 2**20)
            if not points:
                continue
            style = {
                "color": colours[n % len(colours)],
                "linestyle": styles[w % len(styles)],
                "marker": "x" if name.startswith("bare") else "o",  # bare fp32 saves what fp32 does
            }
            label = name if len(widths) == 1 else f"{name}, width {width}"
            ax_time.plot(points, times, label=label, **style)
            if all(s is not None for s in saved):
                ax_saved.plot(points, saved, label=label, **style)
    ax_time.set(xlabel="collocation points (domain)", ylabel="time per step [ms] (median)")
    ax_saved.set(xlabel="collocation points (domain)", ylabel="saved for backward [MiB]")
    for ax, subtitle in ((ax_time, "time per training step"), (ax_saved, "activation memory")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(subtitle)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def machine() -> dict[str, Any]:
    """The CPU model, core count, CUDA device (None without one), torch version and threads a
    benchmark ran with: its times mean nothing without them."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def plot_title(record: dict[str, Any]) -> str:
    """The sizes plot's title: the problem and where it ran."""
    m = record["machine"]
    where = f"{m['cuda'] or m['cpu']}, {m['threads']} thread(s)"
    return f"{record['problem']}: step time and saved activations | {where}"
