"""One tiny training run of a problem in a given precision, for the tests of single problems
(test_cavity, test_heat, test_wave): every new problem must train in every precision."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY, compose_config

from mpsciml.precision.registry import PRECISIONS
from mpsciml.train import run


def tiny_problem_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str, precision: str, *extra: str
) -> dict:
    """Two steps of `problem` in `precision` on a handful of points and an 8-wide network; the
    run's summary. Generated data goes to tmp_path, so nothing leaks between tests."""
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    overrides = [
        *TINY,
        f"problem={problem}",
        f"precision={precision}",
        "trainer.max_steps=2",
        "problem.n_domain=32",
        "problem.n_boundary=16",
        "model.hidden=[8]",
        *extra,
    ]
    return run(compose_config(overrides, tmp_path / "run"))


def precisions(*fast: str) -> list:
    """Every precision of the registry as pytest params; those not in `fast` marked slow: for
    a feature's runs, where the precisions it is about are enough in the default suite."""
    return [
        precision if precision in fast else pytest.param(precision, marks=pytest.mark.slow)
        for precision in PRECISIONS
    ]


#: a problem's acceptance: it trains a few steps in every precision, in the default suite
#: (~1 s a run; the suite runs on one worker per core)
EVERY_PRECISION = list(PRECISIONS)
