"""The comparison as text: a Markdown document for people, CSV and JSON for other programs.

The Markdown rounds for reading; the CSV and JSON keep full precision, so nobody has to parse
"3.41e-02 ± 1.2e-03" back into numbers. Unknown values are blank cells (CSV, Markdown) and null
(JSON), never 0, which would read as a measurement.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mpsciml.report.aggregate import BASELINE, Row, describe_problem, field_names
from mpsciml.report.collect import Run


def _fmt(value: float | int | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _l2_cell(row: Row, name: str) -> str:
    stat = row.l2.get(name)
    if stat is None or stat.mean is None:
        return ""
    spread = f" ± {stat.std:.1e}" if stat.std is not None else ""
    return f"{stat.mean:.2e}{spread}"


def _has_cuda(rows: list[Row]) -> bool:
    return any(row.cuda_max_allocated_mb is not None for row in rows)


def _has_spectral(rows: list[Row]) -> bool:
    return any(row.spectral is not None for row in rows)


def error_header(name: str) -> str:
    """The column title of an error field: grid problems report, per output field f, the
    relative L2 (`f`) and H1 (`h1_f`) errors at the training grid and the same zero-shot at a
    finer one (`zero_shot_f`, `zero_shot_h1_f`)."""
    where = "zero-shot " if name.startswith("zero_shot_") else ""
    name = name.removeprefix("zero_shot_")
    norm = "H1" if name.startswith("h1_") else "L2"
    return f"{where}rel. {norm} {name.removeprefix('h1_')}"


def markdown_table(rows: list[Row]) -> str:
    """One line per (problem, model, steps, precision); CUDA columns only when a run had CUDA."""
    fields = field_names(rows)
    cuda, spectral = _has_cuda(rows), _has_spectral(rows)
    strategy = any(row.strategy is not None for row in rows)
    header = ["problem", "model", "steps", "precision"] + (["spectral"] if spectral else [])
    header += ["strategy"] if strategy else []
    header += ["runs", "ok", "failed", "diverged"]
    header += [error_header(name) for name in fields]
    header += ["ms/step", f"speed-up vs {BASELINE}", "peak RSS MB", f"RSS ×{BASELINE}"]
    if cuda:
        header += ["CUDA max MB", f"CUDA ×{BASELINE}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.problem, row.model, _fmt(row.steps, "d"), row.precision]
        cells += [row.spectral or "-"] if spectral else []
        cells += [row.strategy or "defaults"] if strategy else []
        cells += [str(row.runs), str(row.ok), str(row.failed), str(row.diverged)]
        cells += [_l2_cell(row, name) for name in fields]
        cells += [_fmt(row.step_ms, ".2f"), _fmt(row.speedup, ".2f")]
        cells += [_fmt(row.peak_rss_mb, ".0f"), _fmt(row.rss_ratio, ".2f")]
        if cuda:
            cells += [_fmt(row.cuda_max_allocated_mb, ".1f"), _fmt(row.cuda_ratio, ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _counts(counter: dict[str, int]) -> str:
    return ", ".join(f"`{name}` ({count})" for name, count in counter.items())


def markdown_document(
    folders: list[Path],
    facts: dict[str, Any],
    rows: list[Row],
    problems: list[Run],
    notes: list[str],
    figures: dict[str, Path | str],
) -> str:
    """report.md: where the numbers came from, the table, what failed, caveats, figures."""
    parts = [
        "# Precision report",
        "",
        f"- Folders read: {', '.join(f'`{f}`' for f in folders)}",
        f"- Runs: {facts['runs']} ({len(problems)} not ok)",
        f"- Git commits: {_counts(facts['commits'])}",
        f"- Devices: {_counts(facts['devices'])}; torch: {_counts(facts['torch'])}",
        "",
        markdown_table(rows),
        "",
        "Rows: problem, model, steps (the planned `trainer.max_steps`, so runs of different "
        "lengths are never averaged together) and requested precision (for an FNO also its "
        "spectral setting: `model.spectral_precision`, +tanh with the stabilizer, and the "
        "schedule's spectral switches with their steps; its baseline is fp32 with full), and "
        "the training strategies beyond the defaults (loss weighting, adaptive or resampled "
        "points, hard constraints, periodic inputs; the baseline is fp32 with the defaults). "
        "H1 and zero-shot columns: relative H1 error, and both errors at the finer zero-shot "
        "grid, where a grid operator is evaluated without having been trained. "
        f"Relative L2 error: mean ± sample std over the seeds of the ok runs (no ± with one run). "
        f"ms/step and memory: median over ok runs. Speed-up = {BASELINE} ms/step ÷ ms/step "
        f"(>1 is faster); RSS/CUDA × = memory ÷ {BASELINE} memory (<1 is smaller); blank when "
        f"the same problem, model and steps have no ok {BASELINE} run.",
    ]
    if problems:
        parts += ["", "## Runs that failed or diverged", ""]
        for run in problems:
            key = f"{run.problem}/{run.model}/{run.setting} seed {_fmt(run.seed, 'd')}"
            parts.append(f"- **{run.status}** {key}: `{run.folder}`: {describe_problem(run)}")
    if notes:
        parts += ["", "## Notes", ""] + [f"- {note}" for note in notes]
    parts += ["", "## Figures", ""]
    for name, result in figures.items():
        if isinstance(result, Path):
            parts.append(f"![{name}]({result.name})")
        else:
            parts.append(f"- {name}: skipped ({result})")
    return "\n".join(parts) + "\n"


def csv_records(rows: list[Row]) -> list[dict[str, Any]]:
    """Flat records, one per row, with a mean, std and n column per error field."""
    fields = field_names(rows)
    records = []
    for row in rows:
        record: dict[str, Any] = {
            "problem": row.problem,
            "model": row.model,
            "steps": row.steps,
            "precision": row.precision,
            "spectral": row.spectral,
            "strategy": row.strategy,
            "runs": row.runs,
            "ok": row.ok,
            "failed": row.failed,
            "diverged": row.diverged,
            "seeds": " ".join(str(s) for s in row.seeds),
        }
        for name in fields:
            stat = row.l2.get(name)
            record[f"l2_{name}_mean"] = stat.mean if stat else None
            record[f"l2_{name}_std"] = stat.std if stat else None
            record[f"l2_{name}_n"] = stat.n if stat else 0
        record |= {
            "step_ms_median": row.step_ms,
            f"speedup_vs_{BASELINE}": row.speedup,
            "peak_rss_mb_median": row.peak_rss_mb,
            f"rss_ratio_vs_{BASELINE}": row.rss_ratio,
            "cuda_max_allocated_mb_median": row.cuda_max_allocated_mb,
            f"cuda_ratio_vs_{BASELINE}": row.cuda_ratio,
        }
        records.append(record)
    return records


def write_csv(rows: list[Row], path: Path) -> None:
    records = csv_records(rows)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["problem"])
        writer.writeheader()
        for record in records:
            writer.writerow({k: "" if v is None else v for k, v in record.items()})


def write_json(
    path: Path,
    folders: list[Path],
    facts: dict[str, Any],
    rows: list[Row],
    problems: list[Run],
    notes: list[str],
    figures: dict[str, Path | str],
) -> None:
    document = {
        "folders": [str(f) for f in folders],
        **facts,
        "rows": [asdict(row) for row in rows],
        "not_ok": [
            {
                "folder": str(run.folder),
                "status": run.status,
                "problem": run.problem,
                "model": run.model,
                "precision": run.precision,
                "spectral": run.spectral,
                "strategy": run.strategy,
                "seed": run.seed,
                "error": describe_problem(run),
            }
            for run in problems
        ],
        "notes": notes,
        "figures": {
            name: {"path": str(result)} if isinstance(result, Path) else {"skipped": result}
            for name, result in figures.items()
        },
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
