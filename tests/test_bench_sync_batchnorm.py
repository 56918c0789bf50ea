"""scripts/bench_sync_batchnorm.py: 2 gloo ranks time the exchanges and one BatchNorm layer.

At its smallest (a 2 x 2 x 4 x 4 activation, 2 repeats) the script spawns its two ranks, prints
the tables and writes every row as a positive time; a bad size stops with one line, exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "bench_sync_batchnorm.py"


def test_the_smallest_run_times_every_row(tmp_path) -> None:
    out = tmp_path / "bn.json"
    command = [sys.executable, str(SCRIPT), "--shape", "2", "2", "4", "4", "--repeats", "2"]
    done = subprocess.run(
        [*command, "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    assert set(record["exchanges_ms"]) == {"all_reduce", "all_gather"}
    assert set(record["layers"]) == {"native", "synchronised"}
    times = [*record["exchanges_ms"].values()]
    times += [t for row in record["layers"].values() for t in row.values()]
    assert all(t > 0 for t in times), record
    assert len(record["ranks"]) == 2 and "| synchronised |" in done.stdout


def test_a_bad_size_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--repeats", "0"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith("must be >= 1")
