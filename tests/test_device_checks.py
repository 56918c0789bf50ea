"""scripts/device_checks.sh: the CUDA measurements prepared as one run.

A GPU session cannot afford to debug the script on the device, so its dry mode (the same
commands on the CPU at toy sizes) must run every measurement to the end and leave each one's
JSON where the header says. `slow`: it compiles PINN steps and builds the Darcy and Poisson
references (~3.5 min on 2 cores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MEASUREMENTS = [
    "burgers_eager_vs_compiled",
    "burgers_compiled",
    "burgers_cuda_graphs",
    "navier_stokes",
    "fno_darcy",
    "diffnet",
]


@pytest.mark.slow
def test_the_dry_run_runs_every_measurement_and_writes_its_json(tmp_path: Path) -> None:
    env = os.environ | {"DEVICE_CHECKS_DRY": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "device_checks.sh"), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3000,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    status = (tmp_path / "status.txt").read_text().splitlines()
    assert status == [f"{name}: exit 0" for name in MEASUREMENTS]
    for name in MEASUREMENTS:
        assert json.loads((tmp_path / f"{name}.json").read_text()), name
    assert "torch" in (tmp_path / "machine.txt").read_text()
