"""Train one problem in several precisions, same steps and seeds, and tabulate what each did.

    python scripts/precision_study.py                       # Burgers, 5 precisions, seed 0
    python scripts/precision_study.py --steps 20000 --seeds 0 1 2
    python scripts/precision_study.py --problem navier_stokes --precisions fp32 mixed -- \
        trainer.max_steps=2000 val_every=1000

Each run is a separate `train.py` process (its own run folder, its own peak memory, and a crash
in one precision cannot take the others down). The table is printed, and written as JSON and
Markdown next to the runs. The expected shape (Hayford et al. 2024): mixed ~ fp32 in error, pure
fp16 several times worse.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRECISIONS = ["fp64", "fp32", "mixed", "bf16_mixed", "fp16"]


def run_one(out_dir: Path, problem: str, precision: str, seed: int, steps: int, extra: list[str]):
    """One training run in its own process; returns its summary.json (or a failure record)."""
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        f"problem={problem}",
        f"precision={precision}",
        f"seed={seed}",
        f"trainer.max_steps={steps}",
        f"val_every={steps}",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        f"hydra.run.dir={out_dir}",
        *extra,
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    summary_path = out_dir / "summary.json"
    if summary_path.exists():
        return json.loads(summary_path.read_text())
    return {"status": "failed", "error": result.stderr.strip().splitlines()[-1:] or ["?"]}


def aggregate(precision: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds of the numbers a reader compares across precisions."""

    def values(get) -> list[float]:  # type: ignore[no-untyped-def]
        found = []
        for summary in summaries:
            try:
                value = get(summary)
            except (KeyError, TypeError):
                continue
            if value is not None:
                found.append(float(value))
        return found

    def mean(get) -> float | None:  # type: ignore[no-untyped-def]
        found = values(get)
        return statistics.fmean(found) if found else None

    l2 = values(lambda s: statistics.fmean(s["l2"].values()))
    return {
        "precision": precision,
        "runs": len(summaries),
        "ok": sum(s.get("status") == "ok" for s in summaries),
        "l2_mean": statistics.fmean(l2) if l2 else None,
        "l2_std": statistics.stdev(l2) if len(l2) > 1 else 0.0 if l2 else None,
        "step_ms": mean(lambda s: s["step_ms"]),
        "skipped_steps": mean(lambda s: s["precision"]["skipped_steps"]),
        "lost_update_fraction": mean(lambda s: s["precision"]["mean_lost_update_fraction"]),
        "grad_underflow_fraction": mean(lambda s: s["precision"]["mean_grad_underflow_fraction"]),
        "final_scale": mean(lambda s: s["precision"]["final_scale"]),
        "peak_rss_mb": mean(lambda s: s["memory"]["peak_rss_mb"]),
    }


def fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(rows: list[dict[str, Any]], reference: str = "fp32") -> str:
    base = next((r for r in rows if r["precision"] == reference), None)
    lines = [
        "| precision | ok/runs | rel. L2 (mean +- std) | L2 / fp32 | ms/step | skipped steps "
        "| lost updates | grad < fp16 tiny | final loss scale |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = (
            r["l2_mean"] / base["l2_mean"]
            if base and r["l2_mean"] is not None and base["l2_mean"]
            else None
        )
        lines.append(
            f"| {r['precision']} | {r['ok']}/{r['runs']} "
            f"| {fmt(r['l2_mean'], '.3e')} +- {fmt(r['l2_std'], '.1e')} | {fmt(ratio, '.2f')} "
            f"| {fmt(r['step_ms'], '.1f')} | {fmt(r['skipped_steps'], '.0f')} "
            f"| {fmt(r['lost_update_fraction'], '.3f')} "
            f"| {fmt(r['grad_underflow_fraction'], '.3f')} "
            f"| {fmt(r['final_scale'], '.0f')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--problem", default="burgers")
    parser.add_argument("--precisions", nargs="+", default=DEFAULT_PRECISIONS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs and tables")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    stamp = datetime.now().strftime("%Y-%m-%d/%H-%M-%S")
    out = args.out or ROOT / "outputs" / "precision_study" / stamp
    rows = []
    total = len(args.precisions) * len(args.seeds)
    done = 0
    for precision in args.precisions:
        summaries = []
        for seed in args.seeds:
            started = time.perf_counter()
            run_dir = out / f"{args.problem}-{precision}-seed{seed}"
            summary = run_one(run_dir, args.problem, precision, seed, args.steps, args.overrides)
            summaries.append(summary)
            done += 1
            l2 = summary.get("l2") or {}
            print(
                f"[{done}/{total}] {precision:<10} seed {seed}: {summary.get('status')} "
                f"L2 {', '.join(f'{k} {v:.3e}' for k, v in l2.items()) or '-'} "
                f"({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
        rows.append(aggregate(precision, summaries))

    table = markdown_table(rows)
    header = (
        f"{args.problem}, {args.steps} steps, seeds {args.seeds}, "
        f"overrides {args.overrides or 'none'}"
    )
    print(f"\n{header}\n\n{table}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "study.json").write_text(
        json.dumps({"setting": vars(args) | {"out": str(out)}, "rows": rows}, indent=2, default=str)
    )
    (out / "study.md").write_text(f"{header}\n\n{table}\n")
    print(f"\nwritten: {out / 'study.json'}, {out / 'study.md'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
