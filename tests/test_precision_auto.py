"""precision=auto: the choice on synthetic probe tables, the refusals, a real tiny run that
records its probe and trains as the chosen precision would, and a problem whose fp16 input
derivatives overflow, where auto must not pick fp16 even when it is made the fastest."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY, compose_config
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from mpsciml.compose import build
from mpsciml.config import ConfigError, validate
from mpsciml.factory import build_model, build_module
from mpsciml.precision.auto_probe import (
    HOPELESS_RATIO,
    MIN_SEEN,
    STOP_RATIO,
    AutoSettings,
    ProbeRow,
    _StepClock,
    choose,
    close_call,
    continue_auto_choice,
    judge,
    run_probe,
)
from mpsciml.threads import usable_cores
from mpsciml.train import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SETTINGS = AutoSettings(min_cosine=0.99, max_rel_error=0.05)


def row(name: str, ms: float | None, cosine: float | None = 1.0, error: float | None = 0.0):
    return judge(
        ProbeRow(name, steps=30, step_ms=ms, grad_cosine=cosine, grad_rel_error=error), SETTINGS
    )


# ------------------------------------------------------------------ the choice
def test_the_fastest_agreeing_candidate_wins():
    chosen, line = choose([row("fp32", 2.0), row("bf16_mixed", 1.0, 0.999, 0.01), row("mixed", 3)])
    assert chosen == "bf16_mixed"
    assert line.startswith("precision=auto: bf16_mixed")
    assert "fp32 2x slower" in line and "mixed 3x slower" in line


@pytest.mark.parametrize(
    ("cosine", "error", "why"),
    [
        (0.95, 0.01, "cosine"),  # direction off
        (0.999, 0.2, "error"),  # too much rounding noise
        (None, None, "no finite gradient"),  # non-finite: nothing to compare
    ],
)
def test_a_faster_candidate_that_disagrees_loses(cosine, error, why):
    fast = row("mixed", 0.5, cosine, error)
    assert not fast.agrees and why in fast.why
    chosen, line = choose([row("fp32", 2.0), fast])
    assert chosen == "fp32"
    assert f"mixed 0.25x the time but {fast.why}" in line


def test_a_candidate_still_skipping_late_in_the_probe_loses():
    settling = ProbeRow("mixed", 30, 0.5, grad_cosine=1.0, grad_rel_error=0.0, late_skips=3)
    assert not judge(settling, SETTINGS).agrees
    assert choose([row("fp32", 2.0), settling])[0] == "fp32"


def test_fp32_runs_when_no_candidate_agrees():
    chosen, line = choose([row("bf16_mixed", 1.0, 0.5, 0.9), row("mixed", 1.0, None, None)])
    assert chosen == "fp32" and "no candidate agreed" in line


# ------------------------------------------------------------------ refusals
@pytest.fixture(scope="module")
def auto_config(tmp_path_factory):
    """precision=auto composed once (a composition costs ~0.5 s); each case edits a copy."""
    return compose_config([*TINY, "precision=auto"], tmp_path_factory.mktemp("auto"))


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("precision.candidates", ["fp32", "fp16"], "precision.candidates"),
        ("precision.candidates", ["fp32", "nosuch"], "precision.candidates"),
        ("precision.candidates", [], "precision.candidates"),
        ("precision.probe_steps", 0, "precision.probe_steps"),
        ("precision.max_rel_error", -1.0, "precision.max_rel_error"),
        ("precision.schedule", [{"step": 1, "precision": "fp32"}], "precision.schedule"),
        ("optimizer.adam", None, "L-BFGS-only"),  # with an lbfgs section: L-BFGS only
        ("precision.compare_every", 0, "precision.compare_every"),
        ("precision.compare_every", -3, "precision.compare_every"),
        ("precision.compare_every", 1.5, "precision.compare_every"),
    ],
)
def test_bad_values_are_refused_in_one_line(auto_config, key, value, message):
    cfg = copy.deepcopy(auto_config)
    cfg.optimizer.lbfgs = {"_target_": "torch.optim.LBFGS", "_partial_": True, "lr": 1.0}
    cfg.optimizer.switch_step = 2
    OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        validate(cfg)
    assert "\n" not in str(error.value)


def test_the_composed_auto_config_is_valid(auto_config):
    validate(auto_config)


@pytest.mark.skipif(usable_cores() < 2, reason="2 CPU processes need 2 cores (refused first)")
def test_auto_is_refused_under_ddp_before_anything_is_built(tiny_config):
    cfg = tiny_config("precision=auto", "trainer=ddp", "trainer.devices=2")
    with pytest.raises(ConfigError, match="several processes") as error:
        build(cfg)
    assert "\n" not in str(error.value)


# ------------------------------------------------------------------ real runs
def test_auto_records_the_probe_and_trains_as_the_chosen_precision(tiny_config):
    summary = run(tiny_config("precision=auto", "precision.probe_steps=3"))
    precision = summary["precision"]
    assert summary["status"] == "ok" and precision["requested"] == "auto"
    assert precision["chosen"] in ("fp32", "bf16_mixed", "mixed")
    assert precision["final_precision"] == precision["chosen"]
    assert [r["precision"] for r in precision["probe"]] == ["fp32", "bf16_mixed", "mixed"]
    fp32 = precision["probe"][0]
    assert fp32["grad_cosine"] == pytest.approx(1.0) and fp32["grad_rel_error"] < 1e-6
    assert all(r["step_ms"] > 0 and r["steps"] >= 1 for r in precision["probe"])
    assert precision["probe_seconds"] > 0 and precision["why"].startswith("precision=auto: ")
    written = json.loads((Path(summary["output_dir"]) / "summary.json").read_text())
    assert written["precision"]["probe"] == precision["probe"]
    # the run after the probe is the run the user would have had with the chosen precision
    same = run(tiny_config(f"precision={precision['chosen']}"))
    assert summary["final_losses"] == same["final_losses"]


def overflowing_pinn(cfg, scale: float):
    """A Burgers PINN whose first layer is scaled by `scale`: the network sees its inputs times
    `scale`, so its second input derivatives grow like scale^2 and pass fp16's 65504."""
    problem = instantiate(cfg.problem)
    model = build_model(cfg.model, problem)
    first = next(m for m in model.modules() if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.weight.mul_(scale)
    return problem, build_module(cfg, problem, model)


@pytest.mark.parametrize(("scale", "fp16_agrees"), [(100.0, False), (1.0, True)])
def test_auto_does_not_pick_fp16_where_its_derivatives_overflow(tiny_config, scale, fp16_agrees):
    cfg = tiny_config(
        "precision=auto",
        "precision.derivative_scaling=false",  # no per-order seeds: the overflow shows
        "precision.candidates=[fp32,mixed]",
        "precision.probe_steps=3",
    )
    problem, module = overflowing_pinn(cfg, scale)
    settings = AutoSettings.from_config(cfg.precision)
    # fp16 made the fastest by far, through the probe's own parameter for given timings
    choice = run_probe(cfg, problem, module, "cpu", settings, threads=1, timings={"mixed": 1e-3})
    fp32, mixed = choice.rows
    assert mixed.timing == "given" and fp32.agrees
    assert mixed.agrees is fp16_agrees
    assert choice.chosen == ("mixed" if fp16_agrees else "fp32")
    if not fp16_agrees:
        assert mixed.extra["skip_reasons"] == {"gradient_overflow": mixed.steps}  # every step
        assert mixed.grad_cosine is None and "no finite gradient" in mixed.why


def test_a_run_continued_in_place_keeps_the_interrupted_runs_choice(auto_config):
    cfg = copy.deepcopy(auto_config)
    probe = [{"precision": "fp32", "agrees": True}]
    earlier = {"precision": {"requested": "auto", "chosen": "bf16_mixed", "probe": probe}}
    record = continue_auto_choice(cfg, earlier)
    assert cfg.precision.name == "bf16_mixed"  # no new probe: the checkpoint's precision
    assert record == {"requested": "auto", "chosen": "bf16_mixed", "probe": probe}
    assert continue_auto_choice(copy.deepcopy(auto_config), {}) is None  # nothing to continue
    assert cfg.precision.name == "bf16_mixed" and continue_auto_choice(cfg, earlier) is None


def test_a_close_call_between_agreeing_measured_candidates_is_timed_again():
    fp32, bf16 = row("fp32", 2.0), row("bf16_mixed", 2.2, 0.999, 0.01)
    assert close_call([fp32, bf16, row("mixed", 1.0, None, None)]) == [fp32, bf16]
    assert close_call([fp32, row("bf16_mixed", 2.4, 0.999, 0.01)]) == []  # 1.2x: clear
    given = row("mixed", 2.1)
    given.timing = "given"  # a test's timing is never re-measured
    assert close_call([fp32, given]) == []


class _MeasuredFirstStep:
    """The gradient agreement as a probe sees it: usable, measured at the first step."""

    def __init__(self) -> None:
        self.measured_steps = {0}

    def first_usable(self) -> int:
        return 0


def steps_until_stopped(step_ms: float, best_ms: float | None, planned: int = 12) -> int:
    """How many steps of `step_ms` each a candidate trains before the probe's clock stops it,
    against the fastest agreeing median `best_ms`."""
    clock = _StepClock(_MeasuredFirstStep(), best_ms)  # type: ignore[arg-type]
    trainer = SimpleNamespace(should_stop=False, precision_plugin=None)
    readings = iter([0.0, step_ms / 1000] * planned)  # each step's start and end
    clock._now = lambda _module: next(readings)  # type: ignore[method-assign]
    for step in range(planned):
        clock.on_train_batch_start(trainer, None, None, step)
        clock.on_train_batch_end(trainer, None, None, None, step)
        if trainer.should_stop:
            return step + 1
    return planned


def test_a_slower_candidate_stops_after_a_few_steps_and_a_hopeless_one_after_one():
    assert steps_until_stopped(12.0, best_ms=10.0) == 12  # within 1.5x: probed to the end
    assert steps_until_stopped(20.0, best_ms=10.0) == 1 + MIN_SEEN  # 2x: MIN_SEEN timed steps
    assert steps_until_stopped(60.0, best_ms=10.0) == 2  # 6x: its first timed step decides
    assert steps_until_stopped(60.0, best_ms=None) == 12  # nothing to compare with yet
    # just under the hopeless ratio the MIN_SEEN rule decides; just under the stop ratio, none
    assert steps_until_stopped(0.99 * HOPELESS_RATIO * 10.0, best_ms=10.0) == 1 + MIN_SEEN
    assert steps_until_stopped(0.99 * STOP_RATIO * 10.0, best_ms=10.0) == 12
