"""Compare precisions across finished runs: a table (Markdown, CSV, JSON) and PNG figures.

    python scripts/report.py outputs/multirun/2026-11-22/10-00-00
    python scripts/report.py outputs/multirun/2026-11-22 outputs/2026-11-23 --out reports/nov

Each folder may be one run, a sweep (numbered job folders), or any tree of them: every
summary.json below it is one run. Rows are (problem, model, steps, precision); relative L2
error is mean ± std over seeds of the ok runs; time per step and memory are medians; speed-up
and memory ratio are against fp32 of the same problem, model and steps. Written into the first
folder (or --out): report.md, report.csv, report.json, report_l2.png, report_loss.png,
report_ratios.png. Reads only the run folders; never trains anything.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NoReturn

from mpsciml.report.build import build_report
from mpsciml.report.collect import NoRunsError


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one `error: ...` line and exit code 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument(
        "folders", nargs="*", type=Path, help="run folders, sweep folders, or trees of them"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write the report (default: first folder)"
    )
    args = parser.parse_args(argv)
    if not args.folders:
        parser.error("no folder given: pass a run or sweep folder, e.g. outputs/multirun/<date>")
    try:
        report = build_report(args.folders, args.out)
    except NoRunsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.table)
    for name, why in report.skipped.items():
        print(f"\nfigure skipped: {name}: {why}")
    print("\nwritten:")
    for path in report.written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
