"""scripts/report.py and mpsciml.report: synthetic sweeps with known numbers, and one real run."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mpsciml.report.aggregate import aggregate
from mpsciml.report.build import build_report
from mpsciml.report.collect import load_runs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "report.py"
FIELDS = {"Burgers": ["u"], "NavierStokes": ["u", "v", "p"]}
TERMS = {"Burgers": ["bc", "ic", "pde"], "NavierStokes": ["bc_u", "outlet", "pde_continuity"]}


def write_run(
    folder: Path,
    problem: str,
    precision: str,
    seed: int,
    l2: dict[str, float] | None,
    step_ms: float | None,
    rss: float | None,
    steps: int = 50,
    status: str = "ok",
    metrics: bool = True,
) -> None:
    """A run folder shaped like train.py's: summary.json, metrics.csv, .hydra/*.yaml."""
    folder.mkdir(parents=True)
    summary: dict[str, Any] = {
        "status": status,
        "problem": problem,
        "model": "MLP",
        "precision": {"requested": precision, "param_dtype": "float32", "skipped_steps": 0},
        "seed": seed,
        "output_dir": str(folder),
        "git_commit": "abc123",
        "torch": "2.13.0+cpu",
        "python": "3.11.7",
        "device": "x86_64",
        "cpu_threads": 2,
        "train_seconds": 1.0,
        "steps": steps if status == "ok" else steps // 2,
        "l2": l2,
        "final_losses": {"total": 0.1},
        "step_ms": step_ms,
        "wall_seconds": 2.0,
        "memory": {"peak_rss_mb": rss, "cuda_max_allocated_mb": None},
    }
    (folder / "summary.json").write_text(json.dumps(summary))  # NaN stays NaN, as json.dump does
    hydra = folder / ".hydra"
    hydra.mkdir()
    (hydra / "config.yaml").write_text(
        f"trainer:\n  max_steps: {steps}\nseed: {seed}\nprecision:\n  name: {precision}\n"
        f"problem:\n  _target_: mpsciml.problems.x.{problem}\n"
        "model:\n  _target_: mpsciml.models.mlp.MLP\n"
    )
    (hydra / "overrides.yaml").write_text(f"- precision={precision}\n- seed={seed}\n")
    if metrics:
        terms = TERMS[problem]
        header = ["epoch", "perf/step_ms", "step", "train/loss"]
        header += [f"train/loss_{t}" for t in terms] + ["val/l2"]
        header += [f"val/l2_{f}" for f in FIELDS[problem]]
        lines = [",".join(header)]
        for step in range(9, steps, 10):
            scale = 1.0 if precision == "fp32" else 3.0
            loss = scale * (1.0 + seed) / (step + 1) if status == "ok" else math.inf
            lines.append(",".join(["0", "12.5", str(step), str(loss), *["0.1"] * len(terms)]))
            lines[-1] += "," * (1 + len(FIELDS[problem]))
        lines.append(
            ",".join(
                ["0", "", str(steps - 1)]
                + [""] * (1 + len(terms))
                + ["0.5"] * (1 + len(FIELDS[problem]))
            )
        )
        (folder / "metrics.csv").write_text("\n".join(lines) + "\n")


# problem -> precision -> per seed (l2, step_ms, peak RSS)
SWEEP = {
    "Burgers": {
        "fp32": [({"u": 0.1}, 10.0, 400.0), ({"u": 0.3}, 12.0, 420.0)],
        "mixed": [({"u": 0.2}, 5.0, 300.0), ({"u": 0.4}, 6.0, 315.0)],
    },
    "NavierStokes": {
        "fp32": [
            ({"u": 0.01, "v": 0.02, "p": 0.1}, 40.0, 800.0),
            ({"u": 0.03, "v": 0.02, "p": 0.2}, 44.0, 800.0),
        ],
        "mixed": [
            ({"u": 0.02, "v": 0.04, "p": 0.3}, 21.0, 400.0),
            ({"u": 0.04, "v": 0.04, "p": 0.5}, 21.0, 400.0),
        ],
    },
}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun folder: 2 problems x 2 precisions x 2 seeds, plus runs that went wrong."""
    root = tmp_path / "multirun" / "2026-11-22" / "10-00-00"
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for problem, precisions in SWEEP.items():
        for precision, seeds in precisions.items():
            for seed, (l2, step_ms, rss) in enumerate(seeds):
                write_run(root / str(job), problem, precision, seed, l2, step_ms, rss)
                job += 1
    # diverged: NaN error, inf losses; counted, not averaged
    write_run(root / "8", "Burgers", "mixed", 2, {"u": math.nan}, 3.0, 999.0, status="diverged")
    # failed before it wrote anything but status and error; its config says what it was
    failed = root / "9"
    write_run(failed, "NavierStokes", "mixed", 2, None, None, None, metrics=False)
    (failed / "summary.json").write_text('{"status": "failed", "error": "RuntimeError: boom"}')
    # an old-style summary from before steps, timing and memory were recorded, and no .hydra
    old = root / "old"
    old.mkdir()
    old_summary = {
        "status": "ok",
        "problem": "Burgers",
        "model": "MLP",
        "seed": 2,
        "l2": {"u": 0.2},
    }
    (old / "summary.json").write_text(json.dumps(old_summary | {"precision": "fp32"}))
    # a longer run of the same precision must not be averaged with the 50-step ones
    write_run(root / "10", "Burgers", "mixed", 0, {"u": 0.05}, 5.0, 300.0, steps=100)
    return root


def rows_by_key(rows):  # type: ignore[no-untyped-def]
    return {(r.problem, r.steps, r.precision): r for r in rows}


def test_means_stds_medians_and_counts(sweep):
    rows = rows_by_key(aggregate(load_runs([sweep])))
    assert len(rows) == 5
    burgers32 = rows[("Burgers", 50, "fp32")]  # seeds 0, 1 and the old-style seed 2
    assert (burgers32.runs, burgers32.ok, burgers32.failed, burgers32.diverged) == (3, 3, 0, 0)
    assert burgers32.l2["u"].mean == pytest.approx(0.2)
    assert burgers32.l2["u"].std == pytest.approx(0.1)  # sample std of 0.1, 0.3, 0.2
    assert burgers32.step_ms == pytest.approx(11.0)  # the old run has no time: not a zero
    assert burgers32.peak_rss_mb == pytest.approx(410.0)
    assert burgers32.seeds == [0, 1, 2]

    burgers16 = rows[("Burgers", 50, "mixed")]
    assert (burgers16.runs, burgers16.ok, burgers16.diverged) == (3, 2, 1)
    assert burgers16.l2["u"].mean == pytest.approx(0.3)  # the diverged NaN is not in it
    assert burgers16.step_ms == pytest.approx(5.5)

    ns16 = rows[("NavierStokes", 50, "mixed")]
    assert (ns16.runs, ns16.ok, ns16.failed) == (3, 2, 1)  # the bare failed run, via .hydra
    assert set(ns16.l2) == {"u", "v", "p"}
    assert ns16.l2["u"].mean == pytest.approx(0.03)
    assert ns16.l2["u"].std == pytest.approx(math.sqrt(2) * 0.01)
    assert ns16.l2["v"].std == pytest.approx(0.0)
    assert ns16.l2["p"].mean == pytest.approx(0.4)

    longer = rows[("Burgers", 100, "mixed")]
    assert longer.runs == 1 and longer.l2["u"].mean == pytest.approx(0.05)
    assert longer.l2["u"].std is None


def test_ratios_against_fp32_of_the_same_problem_and_steps(sweep):
    rows = rows_by_key(aggregate(load_runs([sweep])))
    assert rows[("Burgers", 50, "mixed")].speedup == pytest.approx(11.0 / 5.5)
    assert rows[("Burgers", 50, "mixed")].rss_ratio == pytest.approx(307.5 / 410.0)
    assert rows[("NavierStokes", 50, "mixed")].speedup == pytest.approx(42.0 / 21.0)
    assert rows[("NavierStokes", 50, "mixed")].rss_ratio == pytest.approx(0.5)
    assert rows[("NavierStokes", 50, "fp32")].speedup == pytest.approx(1.0)
    assert rows[("Burgers", 100, "mixed")].speedup is None  # no fp32 run with 100 steps
    assert rows[("Burgers", 100, "mixed")].rss_ratio is None
    assert rows[("Burgers", 50, "mixed")].cuda_ratio is None  # no GPU in these runs


def test_a_strategy_sweep_gives_one_row_per_strategy_and_fixed_fp32_is_the_baseline(tmp_path):
    """`-m weighting=fixed,softadapt sampling.adaptive=null,rar`: four settings, four rows, never
    averaged together; ratios against fp32 with the default strategies."""
    strategies = {
        "fixed": {},
        "softadapt": {"weighting": {"method": "softadapt"}},
        "rar": {"weighting": {"method": "fixed"}, "sampling": {"method": "rar"}},
        "both": {"weighting": {"method": "softadapt"}, "sampling": {"method": "rar"}},
        "hard": {"constraints": {"hard_constraints": True, "periodic_inputs": {"x": 2.0}}},
    }
    for index, recorded in enumerate(strategies.values()):
        folder = tmp_path / str(index)
        write_run(folder, "Burgers", "fp32", 0, {"u": 0.1 * (index + 1)}, 10.0 + index, 400.0)
        summary = json.loads((folder / "summary.json").read_text())
        (folder / "summary.json").write_text(json.dumps({**summary, **recorded}))
    rows = {row.strategy: row for row in aggregate(load_runs([tmp_path]))}
    assert list(rows) == [
        None,
        "hard constraints + periodic inputs",
        "rar",
        "softadapt",
        "softadapt + rar",
    ]
    assert rows["softadapt"].l2["u"].mean == pytest.approx(0.2)
    assert rows["softadapt + rar"].speedup == pytest.approx(10.0 / 13.0)
    assert rows[None].speedup == pytest.approx(1.0)
    assert "| fp32 | softadapt + rar |" in build_report([tmp_path], tmp_path / "out").table


def test_report_files_tables_and_figures(sweep, tmp_path):
    out = tmp_path / "report"
    report = build_report([sweep], out)
    for name in ("report.md", "report.csv", "report.json"):
        assert (out / name).stat().st_size > 200, name
    for name in ("report_l2.png", "report_loss.png", "report_ratios.png"):
        assert (out / name).stat().st_size > 10_000, name
    assert report.skipped == {}

    markdown = (out / "report.md").read_text()
    assert "| NavierStokes | MLP | 50 | mixed | 3 | 2 | 1 | 0 | 3.00e-02 ± 1.4e-02 |" in markdown
    assert "rel. L2 u | rel. L2 v | rel. L2 p" in markdown
    assert "RuntimeError: boom" in markdown and str(sweep / "9") in markdown
    assert "**diverged**" in markdown and str(sweep / "8") in markdown
    assert "`abc123` (" in markdown and "`x86_64` (" in markdown and str(sweep) in markdown
    assert "process-wide peak" in markdown  # jobs of a multirun share one process
    assert "1 run(s) recorded no steps and were put with" in markdown and "/old`" in markdown
    assert "CUDA" not in report.table  # no GPU column when no run had a GPU

    with (out / "report.csv").open() as handle:
        records = {(r["problem"], r["steps"], r["precision"]): r for r in csv.DictReader(handle)}
    burgers16 = records[("Burgers", "50", "mixed")]
    assert float(burgers16["speedup_vs_fp32"]) == pytest.approx(2.0)
    assert float(burgers16["l2_u_mean"]) == pytest.approx(0.3)
    assert burgers16["l2_v_mean"] == ""  # Burgers has no v: blank, not 0
    assert records[("Burgers", "100", "mixed")]["speedup_vs_fp32"] == ""

    document = json.loads((out / "report.json").read_text())
    assert document["runs"] == 12
    assert {r["status"] for r in document["not_ok"]} == {"failed", "diverged"}
    ns32 = next(
        r for r in document["rows"] if (r["problem"], r["precision"]) == ("NavierStokes", "fp32")
    )
    assert ns32["l2"]["p"]["mean"] == pytest.approx(0.15)
    assert ns32["step_ms"] == pytest.approx(42.0)


def test_without_metrics_or_baseline_figures_are_skipped_with_a_reason(tmp_path):
    write_run(tmp_path / "a", "Burgers", "mixed", 0, {"u": 0.2}, 5.0, 300.0, metrics=False)
    report = build_report([tmp_path])
    assert set(report.skipped) == {"loss curves", "time and memory vs fp32"}
    assert (tmp_path / "report_l2.png").stat().st_size > 10_000
    assert not (tmp_path / "report_loss.png").exists()
    assert (
        "loss curves: skipped (no run folder has a metrics.csv"
        in (tmp_path / "report.md").read_text()
    )


def test_unreadable_and_empty_summaries_are_failed_runs_not_crashes(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "summary.json").write_text('{"status": "ok", "l2": ')
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "summary.json").write_text("[1, 2]")
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "summary.json").write_text('{"l2": {"u": "n/a"}, "memory": 3}')
    runs = {run.folder.name: run for run in load_runs([tmp_path])}
    assert runs["broken"].status == "failed" and "unreadable" in (runs["broken"].error or "")
    assert runs["list"].status == "failed"
    assert runs["bare"].status == "unknown" and runs["bare"].l2 == {}
    report = build_report([tmp_path])
    assert "| ? | ? |  | ? | 3 | 0 | 3 | 0 |" in report.table
    assert "summary.json records no status" in (tmp_path / "report.md").read_text()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_cli_writes_the_report_and_prints_the_table(sweep):
    result = run_cli(str(sweep))
    assert result.returncode == 0, result.stderr
    assert "| Burgers | MLP | 50 | fp32 | 3 | 3 | 0 | 0 | 2.00e-01 ± 1.0e-01 |" in result.stdout
    assert str(sweep / "report.md") in result.stdout
    assert (sweep / "report.csv").exists()


@pytest.mark.parametrize(
    "case",  # one CLI start each (~3 s): one fast, the others slow
    [
        "missing",
        *(pytest.param(c, marks=pytest.mark.slow) for c in ("none", "empty", "bad-option")),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_code_2(case, tmp_path):
    missing = tmp_path / "no_such_folder"
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    args, named = {
        "none": ([], "no folder given"),
        "missing": ([str(missing)], str(missing)),
        "empty": ([str(tmp_path / "empty")], str(tmp_path / "empty")),
        "bad-option": ([str(tmp_path), "--colour"], "--colour"),
    }[case]
    result = run_cli(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], result.stderr
    assert result.stdout == ""


def test_help_explains_the_usage():
    result = run_cli("--help")
    assert result.returncode == 0
    assert "summary.json" in result.stdout and "--out" in result.stdout


def test_a_real_run_from_train_py(tiny_config, tmp_path):
    from mpsciml.train import run

    cfg = tiny_config("trainer.max_steps=4", "val_every=4")
    run(cfg)
    report = build_report([Path(cfg.paths.output_dir)], tmp_path / "report")
    row = aggregate(load_runs([Path(cfg.paths.output_dir)]))[0]
    assert (row.problem, row.model, row.steps, row.precision) == ("Burgers", "MLP", 4, "fp32")
    assert (row.runs, row.ok) == (1, 1)
    assert 0 < row.l2["u"].mean < 10 and row.step_ms is not None and row.step_ms > 0
    assert row.peak_rss_mb is not None and row.speedup == pytest.approx(1.0)
    assert "loss curves" not in report.skipped  # the real metrics.csv has train/loss
    assert (tmp_path / "report" / "report_loss.png").stat().st_size > 10_000
