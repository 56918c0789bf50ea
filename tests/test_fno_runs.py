"""Acceptance: every spectral_precision x precision trains a tiny Darcy FNO on the CPU, and the
run's summary records exactly what the precision rule says ran (a substitution fails here).

The rule (docs/architecture.md, "Spectral precision"), written out again here on purpose rather
than imported, so the model cannot agree with itself: full = the weights' dtype (fp64 in an fp64
run, else fp32: the spectral layers keep full-precision weights in every precision); half = bf16
when the tensor reaching the layer is bf16, else fp16; full runs FFT, contraction and inverse
FFT in full; mixed the contraction in half; half all three in half where the device has a half
FFT, which the CPU has not: there FFT and inverse FFT run in full and the record's note says so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import compose_config

from mpsciml.config import ConfigError
from mpsciml.contract import SPECTRAL_PRECISIONS
from mpsciml.precision.registry import PRECISIONS
from mpsciml.train import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY_DARCY = [
    "problem=darcy",
    "trainer.max_steps=2",
    "val_every=2",
    "trainer.enable_progress_bar=false",
    "logger=none",
    "~callbacks",  # no checkpoints: a third of a tiny run's time
    "trainer.log_every_n_steps=1",
    "optimizer=adam",
    "plots=false",
    "problem.n_train=4",
    "problem.n_test=2",
    "problem.batch_size=2",
    "problem.resolution=8",
    "problem.zero_shot_resolution=16",
    "problem.n_zero_shot=2",
    "problem.generator.solve_grid=24",
    "problem.generator.modes=8",
    "model.hidden_channels=4",
    "model.n_modes=4",
    "model.n_layers=2",
]

#: the dtype the layers before a spectral layer hand over in each precision (CPU)
INCOMING = {
    "fp64": "float64",
    "fp32": "float32",
    "mixed": "float16",
    "bf16_mixed": "bfloat16",
    "fp16": "float16",
    "bf16": "bfloat16",
}


def expected_on_cpu(precision: str, mode: str) -> tuple[str, str, str]:
    """(fft, contraction, inverse FFT) dtypes the rule prescribes on a CPU."""
    full = "float64" if precision == "fp64" else "float32"
    half = "bfloat16" if INCOMING[precision] == "bfloat16" else "float16"
    return (full, full if mode == "full" else half, full)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One small cache for every run of this file (the same Darcy samples each time)."""
    path = tmp_path_factory.mktemp("data")
    before = os.environ.get("MPSCIML_DATA_DIR")
    os.environ["MPSCIML_DATA_DIR"] = str(path)
    yield path
    if before is None:
        os.environ.pop("MPSCIML_DATA_DIR", None)
    else:
        os.environ["MPSCIML_DATA_DIR"] = before


def run_tiny(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_config([*TINY_DARCY, *overrides], tmp_path / "run")
    summary = run(cfg)
    assert (
        json.loads((tmp_path / "run" / "summary.json").read_text())["spectral"]
        == (summary["spectral"])
    )
    return summary


@pytest.mark.parametrize("mode", SPECTRAL_PRECISIONS)
@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_combination_runs_and_records_what_the_rule_says(data_dir, tmp_path, precision, mode):
    summary = run_tiny(tmp_path, "model=fno", f"precision={precision}",
                       f"model.spectral_precision={mode}")  # fmt: skip
    assert summary["status"] == "ok", summary.get("error")
    assert summary["steps"] == 2
    spectral = summary["spectral"]
    assert spectral["spectral_precision"] == mode
    assert spectral["switches"] == []
    # training and evaluation (also zero-shot at 16 x 16) all ran the same combination
    assert len(spectral["ran"]) == 1, spectral["ran"]
    ran = spectral["ran"][0]
    got = (ran["fft_dtype"], ran["contraction_dtype"], ran["inverse_fft_dtype"])
    assert got == expected_on_cpu(precision, mode)
    assert (ran["spectral_precision"], ran["device"], ran["padding"]) == (mode, "cpu", None)
    if mode == "half":  # asked for a half FFT, got a full one: the record must say why
        assert "CPU" in ran["note"] or "bf16" in ran["note"]
    assert set(summary["l2"]) == {"u", "h1_u", "zero_shot_u", "zero_shot_h1_u"}


@pytest.mark.parametrize("precision", ["mixed", "bf16"])
def test_neuraloperator_runs_its_full_path_and_records_it(data_dir, tmp_path, precision):
    summary = run_tiny(tmp_path, "model=neuralop_fno", f"precision={precision}")
    assert summary["status"] == "ok", summary.get("error")
    assert [(r["fft_dtype"], r["contraction_dtype"], r["inverse_fft_dtype"])
            for r in summary["spectral"]["ran"]] == [("float32",) * 3]  # fmt: skip


@pytest.mark.parametrize("mode", ["mixed", "half"])
def test_neuraloperator_half_modes_are_refused_on_the_cpu_before_training(data_dir, tmp_path, mode):
    cfg = compose_config(
        [*TINY_DARCY, "model=neuralop_fno", f"model.spectral_precision={mode}"], tmp_path / "r"
    )
    with pytest.raises(ConfigError, match=f"model.spectral_precision={mode} .*model=fno"):
        run(cfg)


def test_a_scheduled_run_records_each_mode_it_ran(data_dir, tmp_path):
    """Tu et al.'s schedule compressed into 3 steps: half + tanh, mixed, then full with the run
    switched from AMP to fp32; both kinds of switch are in the summary."""
    summary = run_tiny(
        tmp_path,
        "model=fno",
        "precision=mixed",
        "model.spectral_precision=half",
        "model.stabilizer=tanh",
        "trainer.max_steps=3",
        "val_every=3",
        "precision.schedule=[{step: 1, spectral_precision: mixed},"
        " {step: 2, spectral_precision: full, precision: fp32}]",
    )
    assert summary["status"] == "ok", summary.get("error")
    spectral = summary["spectral"]
    assert spectral["switches"] == [
        {"step": 1, "from": "half", "to": "mixed"},
        {"step": 2, "from": "mixed", "to": "full"},
    ]
    assert summary["precision"]["switches"] == [{"step": 2, "from": "mixed", "to": "fp32"}]
    assert [(r["spectral_precision"], r["contraction_dtype"]) for r in spectral["ran"]] == [
        ("half", "float16"),
        ("mixed", "float16"),
        ("full", "float32"),
    ]


def test_a_spectral_schedule_for_a_model_without_spectral_layers_is_one_line(tmp_path):
    cfg = compose_config(
        [
            "problem=burgers",
            "trainer.max_steps=3",
            "logger=csv",
            "plots=false",
            "problem.n_domain=64",
            "precision.schedule=[{step: 1, spectral_precision: mixed}]",
        ],
        tmp_path / "r",
    )
    with pytest.raises(ConfigError, match="MLP has no spectral layers") as info:
        run(cfg)
    assert "\n" not in str(info.value)


def test_a_resumed_run_continues_the_spectral_schedule(data_dir, tmp_path):
    """The spectral mode lives on the model, outside the checkpoint: a run resumed after a
    switch gets the scheduled mode back (not the config's) and keeps the switch in its record."""
    with_checkpoints = [o for o in TINY_DARCY if o != "~callbacks"]
    schedule = [
        "model=fno",
        "model.spectral_precision=half",
        "precision.schedule=[{step: 1, spectral_precision: mixed}]",
    ]
    first = compose_config([*with_checkpoints, *schedule, "trainer.max_steps=3"], tmp_path / "a")
    assert run(first)["spectral"]["switches"] == [{"step": 1, "from": "half", "to": "mixed"}]
    resumed = compose_config(
        [*with_checkpoints, *schedule, "trainer.max_steps=5", f"resume={tmp_path / 'a'}"],
        tmp_path / "b",
    )
    summary = run(resumed)
    assert summary["status"] == "ok" and summary["steps"] == 5
    spectral = summary["spectral"]
    assert spectral["switches"] == [{"step": 1, "from": "half", "to": "mixed"}]
    assert [r["spectral_precision"] for r in spectral["ran"]] == ["mixed"]
