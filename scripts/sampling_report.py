"""Compare collocation strategies across finished runs: fixed, resampled, RAR, RAD.

    python train.py -m problem=burgers sampling.adaptive=null,rar,rad
    python train.py problem=burgers resample_every=500
    python scripts/sampling_report.py outputs/multirun/<date>/<time> outputs/<date>/<time>

One row per run (every summary.json below the folders): the points strategy (summary.json
`sampling`), relative L2 error per field, training seconds, time per step, the final number of
points of each adapted condition and the updates that ran: what `scripts/report.py`'s rows
(one per strategy, averaged over seeds) do not show. Writes
sampling_report.md and sampling_report.json into the first folder (or --out); reads only the
run folders and never trains anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one `error: ...` line and exit code 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see --help)\n")


def strategy(sampling: dict[str, Any] | None) -> str:
    """`fixed`, `resample_every=N`, `rar (...)` or `rad (...)`, from summary.json `sampling`."""
    if not sampling:
        return "unrecorded"
    method, resample = sampling.get("method"), sampling.get("resample_every")
    if method is None:
        return f"resample_every={resample}" if resample else "fixed"
    every = f"every {sampling['every']}, {sampling['n_candidates']} candidates"
    own = (
        f"n_add {sampling['n_add']}" if method == "rar" else f"k {sampling['k']}, c {sampling['c']}"
    )
    extra = f", resample_every={resample}" if resample else ""
    return f"{method} ({every}, {own}{extra})"


def row(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    sampling = summary.get("sampling")
    return {
        "run": str(folder),
        "status": summary.get("status"),
        "problem": summary.get("problem"),
        "precision": (summary.get("precision") or {}).get("requested"),
        "seed": summary.get("seed"),
        "steps": summary.get("steps"),
        "strategy": strategy(sampling),
        "l2": summary.get("l2") or {},
        "train_seconds": summary.get("train_seconds"),
        "step_ms": summary.get("step_ms"),
        "final_points": (sampling or {}).get("final_points"),
        "updates": (sampling or {}).get("updates", 0),
        "update_seconds": (sampling or {}).get("update_seconds"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    fields = sorted({name for r in rows for name in r["l2"]})
    head = [
        "problem",
        "steps",
        "seed",
        "points",
        *[f"L2 {f}" for f in fields],
        "train s",
        "ms/step",
    ]
    head += ["final points", "updates", "update s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (str(r["problem"]), str(r["strategy"]), r["seed"] or 0)):
        errors = [f"{r['l2'][f]:.4f}" if f in r["l2"] else "-" for f in fields]
        points = ", ".join(f"{k} {v}" for k, v in (r["final_points"] or {}).items()) or "-"
        cells = [r["problem"], r["steps"], r["seed"], r["strategy"], *errors]
        step_ms = f"{r['step_ms']:.1f}" if isinstance(r["step_ms"], float) else "-"
        cells += [r["train_seconds"], step_ms, points, r["updates"], r["update_seconds"] or "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("folders", nargs="*", type=Path, help="run or sweep folders")
    parser.add_argument("--out", type=Path, default=None, help="default: the first folder")
    args = parser.parse_args(argv)
    if not args.folders:
        parser.error("no folder given: pass run or sweep folders")
    rows = []
    for folder in args.folders:
        for path in sorted(folder.rglob("summary.json")):
            rows.append(row(json.loads(path.read_text()), path.parent))
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        print(
            f"error: no finished run (summary.json, status ok) under {args.folders}",
            file=sys.stderr,
        )
        return 2
    out = args.out or args.folders[0]
    out.mkdir(parents=True, exist_ok=True)
    text = table(ok)
    (out / "sampling_report.md").write_text(text + "\n")
    (out / "sampling_report.json").write_text(json.dumps(ok, indent=2) + "\n")
    print(text)
    for r in rows:
        if r["status"] != "ok":
            print(f"skipped: {r['run']} ({r['status']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
