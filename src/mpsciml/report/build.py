"""Write the whole report for some folders: the one function the command line calls.

It reads only what runs left on disk (summary.json, metrics.csv, .hydra/), so a report can be
made on another machine, long after the sweep, from a copied outputs/ folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mpsciml.report.aggregate import aggregate, bad_runs, header_facts, notes
from mpsciml.report.collect import load_runs
from mpsciml.report.table import markdown_document, markdown_table, write_csv, write_json


@dataclass
class Report:
    table: str  # the Markdown table alone, for the terminal
    written: list[Path]
    skipped: dict[str, str]  # figure name -> why it was not drawn


def build_report(folders: list[Path], out: Path | None = None) -> Report:
    """Load every run below `folders`, write report.md/.csv/.json and PNGs into `out`.

    `out` defaults to the first folder. Raises collect.NoRunsError for a missing folder or one
    without any summary.json below it.
    """
    runs = load_runs(folders)
    # matplotlib is most of the start-up time: imported only once there are runs to draw, so a
    # mistyped folder is reported at once
    from mpsciml.report.figures import write_figures

    rows = aggregate(runs)
    out = out or folders[0]
    out.mkdir(parents=True, exist_ok=True)
    facts, problems, remarks = header_facts(runs), bad_runs(runs), notes(runs)
    figures = write_figures(rows, runs, out)
    paths = {name: out / f"report.{name}" for name in ("md", "csv", "json")}
    paths["md"].write_text(markdown_document(folders, facts, rows, problems, remarks, figures))
    write_csv(rows, paths["csv"])
    write_json(paths["json"], folders, facts, rows, problems, remarks, figures)
    pictures = [p for p in figures.values() if isinstance(p, Path)]
    return Report(
        table=markdown_table(rows),
        written=[*paths.values(), *pictures],
        skipped={name: why for name, why in figures.items() if isinstance(why, str)},
    )
