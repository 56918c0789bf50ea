"""The inverse Navier-Stokes study: C1 and C2 learned from velocity data, by precision and noise.

    python scripts/ns_inverse_study.py                      # fp32 and mixed, 0% and 1% noise
    python scripts/ns_inverse_study.py --precisions fp32 --noise 0 0.01 --steps 2000
    python scripts/ns_inverse_study.py --report-only outputs/ns_inverse_study [more folders]

Each setting is one `train.py problem=ns_inverse` run (the recipe, conf/recipe/ns_inverse_mlp.yaml,
with `precision=`, `problem.noise=` and optionally `trainer.max_steps=`) in its own folder under
`--out`; an existing finished run there is read, not repeated. The table gives, per run, the
relative errors of C1 and C2 (summary.json `unknowns`), the relative L2 of u, v and p (p after the
per-time gauge, see problems/ns_inverse.py), the steps and the training time; `study.json` in
`--out` holds the same rows.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run_folder(out: Path, precision: str, noise: float, steps: int | None) -> Path:
    return out / (f"{precision}_noise{noise:g}" + ("" if steps is None else f"_steps{steps}"))


def train(folder: Path, precision: str, noise: float, steps: int | None, extra: list[str]) -> None:
    """One run of the recipe into `folder` (skipped when a finished summary is there)."""
    summary = folder / "summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("status") == "ok":
        return
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "problem=ns_inverse",
        f"precision={precision}",
        f"problem.noise={noise}",
        "logger=csv",
        "trainer.enable_progress_bar=false",
        "plots=false",
        f"hydra.run.dir={folder}",
        *([] if steps is None else [f"trainer.max_steps={steps}"]),
        *extra,
    ]
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def row(summary: dict[str, Any]) -> dict[str, Any]:
    unknowns = summary.get("unknowns") or {}
    overrides = {o.split("=", 1)[0]: o.split("=", 1)[1] for o in summary.get("overrides", [])}
    return {
        "precision": summary.get("precision", {}).get("requested"),
        "noise": float(overrides.get("problem.noise", 0.0)),
        "C1": unknowns.get("C1", {}).get("final"),
        "C1_error": unknowns.get("C1", {}).get("relative_error"),
        "C2": unknowns.get("C2", {}).get("final"),
        "C2_error": unknowns.get("C2", {}).get("relative_error"),
        **{f"l2_{field}": summary.get("l2", {}).get(field) for field in ("u", "v", "p")},
        "steps": summary.get("steps"),
        "train_seconds": summary.get("train_seconds"),
        "status": summary.get("status"),
        "folder": summary.get("output_dir"),
    }


def table(rows: list[dict[str, Any]]) -> str:
    def number(value: Any) -> str:
        return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    head = "| precision | noise | C1 | C1 rel. error | C2 | C2 rel. error | L2 u | L2 v | L2 p "
    head += "| steps | train s |\n|" + "---|" * 11
    lines = [
        "| "
        + " | ".join(
            number(r[key])
            for key in (
                "precision",
                "noise",
                "C1",
                "C1_error",
                "C2",
                "C2_error",
                "l2_u",
                "l2_v",
                "l2_p",
                "steps",
                "train_seconds",
            )
        )
        + " |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "mixed"])
    parser.add_argument("--noise", nargs="+", type=float, default=[0.0, 0.01])
    parser.add_argument("--steps", type=int, default=None, help="trainer.max_steps (recipe's)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "ns_inverse_study")
    parser.add_argument(
        "--report-only", type=Path, nargs="+", default=None, help="tabulate the runs in these"
    )
    parser.add_argument("extra", nargs="*", help="more train.py overrides, e.g. seed=1")
    args = parser.parse_args()
    if args.report_only is not None:
        summaries = [p for d in args.report_only for p in sorted(d.rglob("summary.json"))]
        out = args.report_only[0]
    else:
        summaries = []
        for precision in args.precisions:
            for noise in args.noise:
                folder = run_folder(args.out, precision, noise, args.steps)
                train(folder, precision, noise, args.steps, args.extra)
                summaries.append(folder / "summary.json")
        out = args.out
    rows = [row(json.loads(path.read_text())) for path in summaries if path.exists()]
    print(table(rows))
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
