"""Compare loss-balancing methods across finished runs: one row per (problem, steps, weighting).

    python train.py -m problem=burgers weighting=fixed,lr_annealing,relobralo,softadapt,ntk \\
        hydra.sweep.dir=outputs/weighting_study/burgers
    python scripts/weighting_report.py outputs/weighting_study/burgers

`scripts/report.py` keeps the methods apart too (its `strategy` column); this table adds what only a
weighting run has, per changed setting as well. Columns: relative L2 per output field and their mean
(mean over seeds where there are several), training time and its ratio to `fixed` of the same
problem and steps, weight updates, and the final weights. Written next to the runs as
weighting_report.md and weighting_report.json; printed too. Reads only summary.json files; trains
nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

#: the methods' default settings, against which a run's settings are labelled
CONF = Path(__file__).resolve().parents[1] / "conf" / "weighting"


def collect(folders: list[Path]) -> list[dict[str, Any]]:
    """Every finished run's summary under the folders."""
    runs = []
    for folder in folders:
        for path in sorted(folder.rglob("summary.json")):
            summary = json.loads(path.read_text())
            if summary.get("status") == "ok" and "weighting" in summary:
                runs.append(summary)
    return runs


def label(run: dict[str, Any]) -> str:
    """The method, with the settings that differ from its conf/weighting/<method>.yaml
    (`relobralo temperature=0.1`), so that two settings of one method are two rows."""
    record = run["weighting"]
    defaults_file = CONF / f"{record['method']}.yaml"
    defaults = yaml.safe_load(defaults_file.read_text()) if defaults_file.is_file() else {}
    changed = [
        f"{key}={value}"
        for key, value in record.get("settings", {}).items()
        if key in defaults and defaults[key] != value
    ]
    return " ".join([record["method"], *changed])


def rows_of(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["problem"], run["steps"], label(run))].append(run)
    rows = []
    for (problem, steps, method), group in sorted(groups.items()):
        fields = group[0].get("fields") or list(group[0]["l2"])
        l2 = {f: statistics.fmean(r["l2"][f] for r in group) for f in fields}
        rows.append(
            {
                "problem": problem,
                "steps": steps,
                "weighting": method,
                "seeds": sorted(r["seed"] for r in group),
                "l2": l2,
                "l2_mean": statistics.fmean(l2.values()),
                "train_seconds": statistics.median(r["train_seconds"] for r in group),
                "updates": group[0]["weighting"]["updates"],
                "weights": group[0]["weighting"]["weights"],
            }
        )
    baseline = {(r["problem"], r["steps"]): r for r in rows if r["weighting"] == "fixed"}
    for row in rows:
        fixed = baseline.get((row["problem"], row["steps"]))
        row["time_vs_fixed"] = row["train_seconds"] / fixed["train_seconds"] if fixed else None
        row["l2_vs_fixed"] = row["l2_mean"] / fixed["l2_mean"] if fixed else None
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| problem | steps | weighting | seeds | rel. L2 (per field) | mean L2 | vs fixed "
        "| train s | time vs fixed | updates | final weights (first seed) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_field = ", ".join(f"{f} {v:.3g}" for f, v in r["l2"].items())
        weights = ", ".join(f"{t} {w:.3g}" for t, w in r["weights"].items())
        ratio = "" if r["l2_vs_fixed"] is None else f"{r['l2_vs_fixed']:.2f}x"
        time_ratio = "" if r["time_vs_fixed"] is None else f"{r['time_vs_fixed']:.2f}x"
        lines.append(
            f"| {r['problem']} | {r['steps']} | {r['weighting']} | "
            f"{','.join(map(str, r['seeds']))} | {per_field} | "
            f"{r['l2_mean']:.3g} | {ratio} | {r['train_seconds']:.0f} | {time_ratio} | "
            f"{r['updates']} | {weights} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run or sweep folders")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        print(f"error: not a folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    rows = rows_of(collect(args.folders))
    if not rows:
        print(f"error: no finished run with a weighting record under {args.folders[0]}",
              file=sys.stderr)  # fmt: skip
        return 2
    table = markdown(rows)
    out = args.folders[0]
    (out / "weighting_report.md").write_text(table)
    (out / "weighting_report.json").write_text(json.dumps(rows, indent=2))
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
