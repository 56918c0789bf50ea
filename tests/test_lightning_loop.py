"""The benchmark's `lightning_loop` row: Lightning's loop around a step that does nothing, and the
floor it sets for every row run by `trainer.fit` (`comparison.loop_floor`)."""

from __future__ import annotations

import pytest
import torch

from mpsciml.benchmark.comparison import LIGHTNING_LOOP, loop_floor, loop_floor_lines
from mpsciml.benchmark.report import add_ratios, runner_row
from mpsciml.benchmark.runner import EXTRA_STEPS, lightning_runner, run_interleaved


def test_the_idle_row_runs_the_whole_loop_without_training(tiny_config):
    """Every step is counted (max_steps ends the fit, the clock ticks each one) and nothing
    trains: the weights and the optimizer's state stay as built; the row has no loss and no
    saved-bytes figure, and no ratio takes it for one of our training rows."""
    steps = 4
    cfg = tiny_config(f"trainer.max_steps={steps + EXTRA_STEPS}", "callbacks=default")
    idle = lightning_runner(cfg, steps, turn=2, name=LIGHTNING_LOOP, idle=True)
    real = lightning_runner(
        tiny_config(f"trainer.max_steps={steps + EXTRA_STEPS}"), steps, turn=2, name="fp32"
    )
    module = idle.facts["module"]
    before = [p.detach().clone() for p in module.parameters()]
    run_interleaved([real, idle])
    assert idle.error is None, idle.facts.get("traceback")
    assert idle.kind == "loop" and len(idle.clock.samples) == steps
    assert module.trainer.global_step == steps + EXTRA_STEPS
    for was, now in zip(before, module.parameters(), strict=True):
        assert torch.equal(was, now)
    assert not any(module.optimizers().optimizer.state.values())
    rows = add_ratios([runner_row(real, 0), runner_row(idle, 0)])
    assert rows[0]["x_fastest_mpsciml"] == 1.0  # the idle row is not "our fastest"
    assert rows[1]["first_loss"] is None and rows[1]["saved_bytes"] is None
    assert "_linears" not in idle.facts  # no loss at its final weights to compare


def timed_row(name: str, ms: float, kind: str = "lightning") -> dict:
    return {"name": name, "kind": kind, "median_ms": ms, "error": None}


def test_loop_floor_adds_the_loop_to_the_fastest_bare_step():
    shipped = timed_row("fp32_compiled_shipped", 2.6)
    shipped |= {"samples_ms": [3.0, 3.0, 2.6, 2.6], "turn": 2, "warmup": 0}
    rows = [
        shipped,
        timed_row(LIGHTNING_LOOP, 0.25, "loop"),
        timed_row("bare_compiled", 2.3, "bare"),
        timed_row("bare_fused", 2.0, "bare")
        | {"samples_ms": [2.5, 2.5, 2.0, 2.0], "turn": 2, "warmup": 0},
    ]
    floor = loop_floor(rows)
    assert floor["reference"] == "bare_fused" and floor["floor_ms"] == pytest.approx(2.25)
    assert floor["floor_x_reference"] == pytest.approx(1.125)
    assert floor["shipped"] == "fp32_compiled_shipped"
    assert floor["shipped_x_reference"] == pytest.approx(1.3)
    assert floor["shipped_beyond_floor_ms"] == pytest.approx(0.35)
    assert floor["shipped_x_reference_paired"] == pytest.approx(1.25)  # median of 1.2 and 1.3
    first, second = loop_floor_lines(floor)
    assert "0.25 ms/step" in first and "2.25 ms = 1.12x bare_fused" in first
    assert second.strip().startswith("fp32_compiled_shipped 2.60 ms = 1.30x bare_fused")
    assert "(paired by turn 1.25x)" in second and "+0.35" in second


def test_loop_floor_needs_the_loop_and_a_bare_step():
    assert loop_floor([timed_row("bare_fused", 2.0, "bare")]) is None
    assert loop_floor([timed_row(LIGHTNING_LOOP, 0.3, "loop")]) is None
    failed = {**timed_row("bare_fused", 2.0, "bare"), "error": "boom"}
    rows = [timed_row(LIGHTNING_LOOP, 0.3, "loop"), failed, timed_row("bare_compiled", 2.4)]
    floor = loop_floor(rows)
    assert floor["reference"] == "bare_compiled" and "shipped" not in floor
    assert len(loop_floor_lines(floor)) == 1 and loop_floor_lines(None) == []


def test_a_lightning_without_the_step_counter_fails_the_idle_row_only(tiny_config, monkeypatch):
    """The idle step reaches into Lightning's loop for its step counter; where that is missing
    the row says so and the other rows run to the end (no crash, no hang)."""
    from mpsciml.benchmark import runner as runner_module

    def missing(module, trainer):
        raise AttributeError("'_TrainingEpochLoop' object has no attribute 'manual_optimization'")

    monkeypatch.setattr(runner_module, "idle_training_step", missing)
    steps, max_steps = 2, f"trainer.max_steps={2 + EXTRA_STEPS}"
    idle = lightning_runner(tiny_config(max_steps), steps, 1, LIGHTNING_LOOP, idle=True)
    real = lightning_runner(tiny_config(max_steps), steps, 1, "fp32")
    run_interleaved([real, idle])
    assert idle.error is not None and "manual_optimization" in idle.error
    assert real.error is None and len(real.clock.samples) == steps


def test_the_cpp_wrapper_gain_is_the_compiled_row_over_its_python_wrapper_twin():
    """`--compile --python-wrapper`: the same compile=true row with either wrapper, side by
    side; the line says which wrapper the compiled row really had."""
    from mpsciml.benchmark.comparison import PYTHON_WRAPPER, cpp_wrapper_gain, cpp_wrapper_lines

    def row(name: str, samples: list[float], **facts: object) -> dict:
        median = sorted(samples)[len(samples) // 2]
        return {
            "name": name,
            "median_ms": median,
            "samples_ms": samples,
            "turn": 1,
            "warmup": 0,
            "kind": "lightning",
            **facts,
        }

    compiled = row("fp32_compiled", [3.0, 3.0, 3.3], compile={"cpp_wrapper": True})
    python = row(PYTHON_WRAPPER, [4.0, 3.0, 3.3], compile={"cpp_wrapper": False})
    gain = cpp_wrapper_gain([compiled, python])
    assert gain == {"cpp_wrapper": True, "of_medians": pytest.approx(3.0 / 3.3), "paired": 1.0}
    compiled["samples_ms"], compiled["median_ms"] = [2.0, 2.4, 3.0], 2.4
    gain = cpp_wrapper_gain([compiled, python])
    assert gain["of_medians"] == pytest.approx(2.4 / 3.3) and gain["paired"] == pytest.approx(0.8)
    (line,) = cpp_wrapper_lines(gain)
    assert line.startswith(f"fp32_compiled (C++ wrapper) / {PYTHON_WRAPPER}: 0.727x (medians)")
    assert "(paired by turn 0.800x)" in line
    compiled["compile"] = {"cpp_wrapper": False}  # auto is off off the CPU: say so
    assert "also the Python wrapper" in cpp_wrapper_lines(cpp_wrapper_gain([compiled, python]))[0]
    assert cpp_wrapper_gain([compiled]) is None and cpp_wrapper_lines(None) == []


def run_twin_cli(tmp_path, monkeypatch, flag: str, twin: str) -> tuple[dict, dict, dict]:
    """`scripts/benchmark.py --compile <flag>` on a tiny Burgers under aot_eager (the bare
    compiled rows stubbed out): the case's JSON, our compile=true row and its twin."""
    import json

    from test_benchmark import load_script

    from mpsciml.benchmark import comparison

    monkeypatch.setattr(comparison, "bare_compiled_runner", lambda *a, **k: (None, ("out", "")))
    out = tmp_path / "bench.json"
    argv = ["problem=burgers", "model.hidden=[8]", "problem.n_domain=64", "--compile"]
    argv += [flag, "compile_backend=aot_eager", "--no-matmul-share"]
    argv += ["--steps", "2", "--warmup", "0", "--turn", "1", "--out", str(out)]
    assert load_script().main(argv) == 0
    case = json.loads(out.read_text())["cases"][0]
    rows = {r["name"]: r for r in case["rows"]}
    ours, other = rows["fp32_compiled"], rows[twin]
    assert ours["error"] is None and other["error"] is None
    assert ours["first_loss"] == other["first_loss"]  # the same step
    return case, ours, other


def test_the_cli_runs_the_python_wrapper_row_beside_the_compiled_one(tmp_path, capsys, monkeypatch):
    """`--compile --python-wrapper` from the command line: both compiled rows train the same
    step; the JSON and the printed line carry their ratio (aot_eager here: no wrapper at all,
    and the line says so)."""
    from mpsciml.benchmark.comparison import PYTHON_WRAPPER

    case, _, _ = run_twin_cli(tmp_path, monkeypatch, "--python-wrapper", PYTHON_WRAPPER)
    assert case["cpp_wrapper_gain"]["cpp_wrapper"] is False
    assert "fp32_compiled (also the Python wrapper" in capsys.readouterr().out


def test_the_lean_guards_gain_is_the_compiled_row_over_its_full_guards_twin():
    """`--compile --full-guards`: the ratio of the two compile=true rows and its line."""
    from mpsciml.benchmark.comparison import FULL_GUARDS, lean_guards_gain, lean_guards_lines

    def row(name: str, samples: list[float]) -> dict:
        median = sorted(samples)[len(samples) // 2]
        base = {"name": name, "median_ms": median, "samples_ms": samples, "turn": 1}
        return {**base, "warmup": 0, "kind": "lightning"}

    lean, full = row("fp32_compiled", [2.0, 2.4, 3.0]), row(FULL_GUARDS, [4.0, 3.0, 3.3])
    gain = lean_guards_gain([lean, full])
    assert gain["of_medians"] == pytest.approx(2.4 / 3.3) and gain["paired"] == pytest.approx(0.8)
    (line,) = lean_guards_lines(gain)
    assert (
        line
        == f"fp32_compiled (lean guards) / {FULL_GUARDS}: 0.727x (medians) (paired by turn 0.800x)"
    )
    assert lean_guards_gain([lean]) is None and lean_guards_lines(None) == []


def test_the_cli_runs_the_full_guards_row_beside_the_compiled_one(tmp_path, capsys, monkeypatch):
    """`--compile --full-guards` from the command line: the twin checks every guard, ours the
    lean set (their summaries say so), both train the same step; without --compile, one line."""
    from mpsciml.benchmark.comparison import FULL_GUARDS
    from mpsciml.benchmark.options import UsageError, parse_args

    case, lean, full = run_twin_cli(tmp_path, monkeypatch, "--full-guards", FULL_GUARDS)
    assert full["compile"]["guards"]["fused_step"] == "full"
    kept = lean["compile"]["guards"]["fused_step"]
    assert 0 < kept["kept"] < kept["total"]
    assert case["lean_guards_gain"]["of_medians"] > 0
    assert f"fp32_compiled (lean guards) / {FULL_GUARDS}" in capsys.readouterr().out
    with pytest.raises(UsageError, match="--full-guards compares two compile=true rows"):
        parse_args(["--full-guards"], "")
