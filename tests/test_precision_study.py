"""The precision study script end to end: runs, table, JSON (tiny, two precisions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_precision_study_writes_a_table_per_precision(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "scripts/precision_study.py",
            "--steps",
            "3",
            "--precisions",
            "fp32",
            "fp16",
            "--out",
            str(tmp_path),
            "--",
            "problem.n_domain=64",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    study = json.loads((tmp_path / "study.json").read_text())
    assert [row["precision"] for row in study["rows"]] == ["fp32", "fp16"]
    assert all(row["ok"] == 1 and row["l2_mean"] > 0 for row in study["rows"])
    table = (tmp_path / "study.md").read_text()
    assert "| fp16 | 1/1 |" in table and "L2 / fp32" in table
    assert (tmp_path / "burgers-fp16-seed0" / "summary.json").exists()
