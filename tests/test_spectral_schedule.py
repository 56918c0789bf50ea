"""precision.schedule switches a spectral model's own precision (Tu et al.: half + tanh, mixed
from 80% of the steps, full for the last 5%): validated before training, switched at its steps,
recorded, and restored after a resume."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from mpsciml.callbacks.precision_schedule import (
    PrecisionSchedule,
    check_spectral_schedule,
    parse_schedule,
)
from mpsciml.config import ConfigError, validate_precision_schedule
from mpsciml.models.fno import FNO
from mpsciml.models.mlp import MLP
from mpsciml.models.neuralop_fno import NeuralopFNO

TU_ET_AL = [
    {"step": 8, "spectral_precision": "mixed"},
    {"step": 9, "spectral_precision": "full", "precision": "fp32"},
]


def tiny_fno(mode: str = "half") -> FNO:
    return FNO(1, 1, (8, 8), hidden_channels=4, n_modes=4, n_layers=2, spectral_precision=mode)


class Stub:
    """The parts of a LightningModule and Trainer the callback touches (no precision plugin:
    only the spectral switches are exercised here; the run's own switches are the plugin's,
    tested in test_precision_runs)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.logged: list[tuple[str, float]] = []
        self.trainer = SimpleNamespace(global_step=0, precision_plugin=None, optimizers=[])

    def log(self, name: str, value: float, **_: Any) -> None:
        self.logged.append((name, value))


def run_steps(callback: PrecisionSchedule, stub: Stub, steps: range) -> list[str]:
    modes = []
    for step in steps:
        stub.trainer.global_step = step
        callback.on_train_batch_start(stub.trainer, stub, None, step)  # type: ignore[arg-type]
        modes.append(stub.model.spectral_precision)
    return modes


def test_validation_names_the_key_and_the_allowed_values():
    validate_precision_schedule(OmegaConf.create(TU_ET_AL), 10)
    with pytest.raises(ConfigError, match=r"^precision\.schedule\[0\]\.spectral_precision='quarter'"
                       r" is invalid: allowed: full, mixed, half$"):  # fmt: skip
        validate_precision_schedule([{"step": 1, "spectral_precision": "quarter"}], 10)
    with pytest.raises(ConfigError, match=r"^precision\.schedule\[0\]=.*spectral_precision"):
        validate_precision_schedule([{"step": 1}], 10)
    with pytest.raises(ConfigError, match=r"precision\.schedule\[1\]\.step=10"):
        validate_precision_schedule([{"step": 1, "precision": "fp32"},
                                     {"step": 10, "spectral_precision": "full"}], 10)  # fmt: skip


def test_switches_at_their_steps_and_records_them():
    model = tiny_fno("half")
    stub = Stub(model)
    callback = PrecisionSchedule(TU_ET_AL)
    callback.setup(stub.trainer, stub, "fit")  # type: ignore[arg-type]
    modes = run_steps(callback, stub, range(10))
    assert modes == ["half"] * 8 + ["mixed", "full"]
    assert {layer.spectral_precision for layer in model.spectral_layers()} == {"full"}
    assert callback.switches == [
        {"step": 8, "from": "half", "to": "mixed"},
        {"step": 9, "from": "mixed", "to": "full"},
    ]
    assert stub.logged == [("precision/spectral_switch_step", 8.0),
                           ("precision/spectral_switch_step", 9.0)]  # fmt: skip


def test_a_resumed_run_gets_the_scheduled_mode_back_without_a_second_record():
    first = PrecisionSchedule(TU_ET_AL)
    stub = Stub(tiny_fno("half"))
    first.setup(stub.trainer, stub, "fit")  # type: ignore[arg-type]
    run_steps(first, stub, range(9))
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint keeps
    # the resumed run: a fresh model in the config's mode, checkpoint state loaded after setup
    resumed, fresh = PrecisionSchedule(TU_ET_AL), Stub(tiny_fno("half"))
    resumed.setup(fresh.trainer, fresh, "fit")  # type: ignore[arg-type]
    resumed.load_state_dict(state)
    assert run_steps(resumed, fresh, range(8, 9)) == ["mixed"]  # restored, not switched
    assert run_steps(resumed, fresh, range(9, 10)) == ["full"]
    assert [s["step"] for s in resumed.switches] == [8, 9]
    assert fresh.logged == [("precision/spectral_switch_step", 9.0)]


def test_a_spectral_entry_needs_a_model_with_spectral_layers():
    switches = parse_schedule(TU_ET_AL)
    mlp = MLP(in_features=2, out_features=1, hidden=[4])
    with pytest.raises(ValueError, match=r"MLP has no spectral layers.*model=fno"):
        check_spectral_schedule(switches, mlp, "cpu")
    check_spectral_schedule(parse_schedule([{"step": 1, "precision": "fp32"}]), mlp, "cpu")
    check_spectral_schedule(switches, tiny_fno(), "cpu")


def test_a_mode_the_model_cannot_run_on_the_device_is_refused_before_training():
    model = NeuralopFNO(1, 1, (8, 8), hidden_channels=4, n_modes=4, n_layers=2)
    with pytest.raises(ValueError, match=r"schedule switches to model\.spectral_precision=mixed"):
        check_spectral_schedule(parse_schedule(TU_ET_AL), model, "cpu")
    assert model.spectral_precision == "full"  # the check leaves the model as it was


def test_the_fno_runs_what_the_schedule_says():
    """The switch reaches the forward: after it, the layers record the new mode."""
    model = tiny_fno("half")
    stub = Stub(model)
    callback = PrecisionSchedule(TU_ET_AL)
    callback.setup(stub.trainer, stub, "fit")  # type: ignore[arg-type]
    for step in (0, 8, 9):
        run_steps(callback, stub, range(step, step + 1))
        model(torch.randn(1, 1, 8, 8))
    assert [r["spectral_precision"] for r in model.spectral_report()["ran"]] == [
        "half",
        "mixed",
        "full",
    ]
