"""Compare runs that differ in how conditions are met: by loss (soft) or by construction (hard
constraints, periodic inputs). A table (Markdown) of relative L2, steps, time and the dropped
conditions, one row per run, plus report_constraints.json; reads run folders, trains nothing.

    python train.py -m problem=burgers problem.hard_constraints=false,true seed=0 \\
        hydra.sweep.dir=outputs/constraints/burgers
    python train.py -m problem=allen_cahn model.periodic=null,problem seed=0 \\
        trainer.max_steps=500 optimizer=adam hydra.sweep.dir=outputs/constraints/allen_cahn
    python scripts/constraints_report.py outputs/constraints/burgers outputs/constraints/allen_cahn

(`scripts/report.py` groups runs by problem, model, steps and precision, so it would merge the
two arms of such a comparison into one row; this report keeps each run's overrides.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def row(summary: dict[str, Any]) -> dict[str, Any]:
    constraints = summary.get("constraints") or {}
    return {
        "problem": summary.get("problem"),
        "overrides": " ".join(summary.get("overrides") or []),
        "status": summary.get("status"),
        "steps": summary.get("steps"),
        "l2": summary.get("l2"),
        "train_seconds": summary.get("train_seconds"),
        "step_ms": summary.get("step_ms"),
        "dropped": sorted(constraints.get("dropped_conditions") or {}),
        "derivatives": (summary.get("derivatives") or {}).get("used"),
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| problem | overrides | status | steps | rel. L2 | train s | ms/step | dropped "
        "| derivatives |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        l2 = ", ".join(f"{k} {v:.3g}" for k, v in (r["l2"] or {}).items())
        step_ms = "-" if r["step_ms"] is None else f"{r['step_ms']:.1f}"
        lines.append(
            f"| {r['problem']} | `{r['overrides']}` | {r['status']} | {r['steps']} | {l2} | "
            f"{r['train_seconds']} | {step_ms} | {', '.join(r['dropped']) or '-'} | "
            f"{r['derivatives']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: first folder)")
    args = parser.parse_args(argv)
    paths = sorted(p for folder in args.folders for p in folder.rglob("summary.json"))
    if not paths:
        print(f"error: no summary.json under {', '.join(map(str, args.folders))}", file=sys.stderr)
        return 2
    rows = [row(json.loads(path.read_text())) for path in paths]
    print(markdown(rows))
    out = args.out or args.folders[0] / "report_constraints.json"
    out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
