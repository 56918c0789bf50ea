"""The side-by-side benchmark: its measuring parts on known cases, and the CLI end to end (tiny).

No assertion here is about time: a shared machine makes every timing a noisy number, so the
tests check what is exact (bytes, orders, ratios of given numbers, losses) and that the CLI runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from mpsciml.benchmark.bare_loop import BareLoop
from mpsciml.benchmark.report import add_ratios, framework_overhead, markdown_table, write_json
from mpsciml.benchmark.saved_bytes import SavedTensorMeter
from mpsciml.benchmark.timing import Baton, StepClock, paired_ratio, summarize
from mpsciml.compose import build

ROOT = Path(__file__).resolve().parents[1]
N, D, H = 64, 8, 16  # points, inputs, hidden width of the known graph


def known_graph() -> torch.Tensor:
    """y = tanh(x @ W).sum(): mm saves x and W, tanh saves its output, sum saves nothing."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=generator, requires_grad=True)
    weight = torch.randn(D, H, generator=generator, requires_grad=True)
    return (x @ weight).tanh().sum()


def test_saved_bytes_of_a_known_graph_is_exact():
    with SavedTensorMeter() as meter:
        known_graph()
    assert meter.total_bytes == 4 * (N * D + D * H + N * H)
    assert meter.bytes_by_dtype == {"float32": 4 * (N * D + D * H + N * H)}


def test_fp16_autocast_saves_half_the_bytes_of_fp32():
    with SavedTensorMeter() as fp32:
        known_graph()
    with torch.autocast("cpu", dtype=torch.float16), SavedTensorMeter() as fp16:
        known_graph()
    assert fp16.bytes_by_dtype == {"float16": 2 * (N * D + D * H + N * H)}
    assert fp16.total_bytes * 2 == fp32.total_bytes


def test_a_storage_saved_twice_is_counted_once():
    x = torch.randn(N, D, requires_grad=True)
    with SavedTensorMeter() as meter:
        (x * x).sum()  # mul saves both operands: the same storage
    assert meter.saved_tensors == 2
    assert meter.total_bytes == 4 * N * D


def test_summarize_gives_median_and_quartiles_after_warmup():
    samples = [9.0, 9.0, 0.001, 0.002, 0.003, 0.004, 0.005]  # seconds; two warm-up steps
    stats = summarize(samples, warmup=2)
    assert stats["steps"] == 5
    assert stats["median_ms"] == pytest.approx(3.0)
    assert (stats["q1_ms"], stats["q3_ms"]) == (pytest.approx(2.0), pytest.approx(4.0))
    assert stats["iqr_ms"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="warm-up"):
        summarize(samples[:2], warmup=2)


def test_paired_ratio_cancels_a_load_change_between_turns():
    # B takes 10 then 30 ms (load tripled); A is always 1.1x B in the same turn.
    b = [0.010] * 4 + [0.030] * 4
    a = [1.1 * s for s in b]
    assert paired_ratio(a, b, turn=4, warmup=0) == pytest.approx(1.1)


def test_baton_interleaves_turns_and_alternates_the_round_order():
    baton, turns, lock = Baton(3), [], threading.Lock()
    clocks = [StepClock(baton, i, steps=4, turn=2, sync=lambda: None) for i in range(3)]

    def run(clock: StepClock) -> None:
        try:
            for step in range(clock.steps + 1):
                clock.tick()
                if step < clock.steps and step % clock.turn == 0:
                    with lock:
                        turns.append(clock.index)
        finally:
            clock.finish()

    threads = [threading.Thread(target=run, args=(c,)) for c in clocks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(t.is_alive() for t in threads)
    assert turns == [0, 1, 2, 2, 1, 0]
    assert all(len(c.samples) == 4 for c in clocks)


def rows() -> list[dict]:
    return [
        {"name": "fp32", "kind": "lightning", "median_ms": 20.0, "saved_bytes": 1000,
         "rss_peak_mb": 500.0, "cuda_max_allocated_mb": None, "turn": 2, "warmup": 0,
         "samples_ms": [20.0, 20.0, 40.0, 40.0]},
        {"name": "mixed", "kind": "lightning", "median_ms": 80.0, "saved_bytes": 520,
         "rss_peak_mb": 520.0, "cuda_max_allocated_mb": None},
        {"name": "bare_fp32", "kind": "bare", "median_ms": 16.0, "saved_bytes": 1000,
         "rss_peak_mb": 500.0, "cuda_max_allocated_mb": None, "turn": 2, "warmup": 0,
         "samples_ms": [16.0, 16.0, 40.0, 40.0]},
        {"name": "bf16_mixed", "kind": "lightning", "error": "RuntimeError: boom"},
    ]  # fmt: skip


def test_ratios_table_and_json(tmp_path):
    table_rows = add_ratios(rows())
    mixed = table_rows[1]
    assert mixed["time_vs_fp32"] == pytest.approx(4.0)
    assert mixed["saved_vs_fp32"] == pytest.approx(0.52)
    assert mixed["rss_peak_vs_fp32"] == pytest.approx(1.04)
    assert mixed["cuda_vs_fp32"] is None
    assert table_rows[0]["time_vs_fp32"] == 1.0
    overhead = framework_overhead(table_rows)
    assert overhead["of_medians"] == pytest.approx(1.25)
    assert overhead["paired"] == pytest.approx((1.25 + 1.0) / 2)
    table = markdown_table(table_rows).splitlines()
    assert len(table) == 2 + 4
    assert table[3].startswith("| mixed | 80.0 |") and "| 4.00 |" in table[3]
    assert "| 0.52 |" in table[3]  # saved bytes x fp32
    assert "failed: RuntimeError: boom" in table[5]
    path = write_json(tmp_path / "sub" / "bench.json", {"rows": table_rows})
    assert json.loads(path.read_text())["rows"][1]["saved_vs_fp32"] == pytest.approx(0.52)


@pytest.mark.parametrize("problem", ["burgers", "navier_stokes"])
def test_bare_loop_computes_the_same_first_loss_as_the_module(tiny_config, problem):
    cfg = tiny_config(
        f"problem={problem}", "trainer.max_steps=1", "logger=none", "~callbacks", "val_every=1"
    )
    module, trainer, parts = build(cfg)
    bare = BareLoop.like(module)
    bare_loss = float(bare.step())
    trainer.fit(module, datamodule=parts["datamodule"])
    assert float(module.last_terms["total"]) == pytest.approx(bare_loss, rel=1e-6, abs=0)
    assert bare.taylor == (problem == "navier_stokes")  # the recipe's derivative mode


def benchmark_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "WANDB_MODE": "offline"}
    return subprocess.run(
        [sys.executable, "scripts/benchmark.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts/benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_on_a_tiny_config_writes_json_and_a_plot(tmp_path, capsys):
    """In-process (`main(argv)`), to spare the test a second interpreter start-up."""
    out = tmp_path / "bench.json"
    code = load_script().main(
        [
            "problem=burgers",
            "model.hidden=[8,8]",
            "--precisions", "fp32", "bf16_mixed",
            "--steps", "3", "--warmup", "1", "--turn", "2",
            "--sizes", "points=32,64",
            "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    record = json.loads(out.read_text())
    assert record["problem"] == "burgers" and record["settings"]["steps"] == 3
    assert [c["points"] for c in record["cases"]] == [32, 64]
    for case in record["cases"]:
        assert [r["name"] for r in case["rows"]] == ["fp32", "bf16_mixed", "bare_fp32"]
        assert all(r["error"] is None and r["steps"] == 3 for r in case["rows"])
        fp32, bf16, bare = case["rows"]
        assert bf16["saved_by_dtype"].get("bfloat16", 0) > 0
        assert bf16["saved_vs_fp32"] < 1 and bare["saved_vs_fp32"] == 1
        assert fp32["first_loss"] == pytest.approx(bare["first_loss"], rel=1e-6)
        assert case["framework_overhead"]["paired"] > 0
        profiled = case["matmul_share"]["rows"]["bare_fp32"]  # after the timed steps
        assert profiled["matmul_calls"] > 0 and 0 < profiled["matmul_share"] < 1
    assert (tmp_path / "bench_sizes.png").stat().st_size > 10_000
    assert not (tmp_path / "bench_rows.png").exists()  # two sizes: the sizes plot says it
    assert "where a bare step's time goes" in captured.out
    assert "| bf16_mixed |" in captured.out


def test_cli_bad_option_is_one_line_and_exit_code_2():
    result = benchmark_cli("--precisions", "fp32", "fp8")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert "--precisions" in lines[0] and "'fp8'" in lines[0] and "bf16_mixed" in lines[0]


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--sizes", "depth=3"], ["--sizes", "depth", "points, width"]),
        (["--sizes", "points=ten"], ["--sizes", "points"]),
        (["--steps", "0"], ["--steps"]),
        (["problem=unknown"], ["problem=unknown", "burgers", "navier_stokes"]),
        (["--frobnicate"], ["--frobnicate"]),
        (["--python-wrapper"], ["--python-wrapper", "--compile"]),
    ],
)
def test_bad_options_name_the_key_and_what_is_allowed(capsys, argv, named):
    assert load_script().main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert all(word in lines[0] for word in named), lines[0]


def test_comparison_ratios_to_our_fastest_row_and_the_bare_eager_loop():
    table_rows = add_ratios(rows())
    fp32, mixed, bare, failed = table_rows
    assert fp32["x_fastest_mpsciml"] == 1.0 and mixed["x_fastest_mpsciml"] == pytest.approx(4.0)
    assert fp32["x_bare_eager"] == pytest.approx(1.25) and bare["x_bare_eager"] == 1.0
    assert bare["x_fastest_mpsciml"] == pytest.approx(0.8)
    assert failed["x_fastest_mpsciml"] is None and failed["x_bare_eager"] is None
    header, _, first = markdown_table(table_rows).splitlines()[:3]
    assert "x fastest mpsciml | x bare eager (paired)" in header
    assert first.startswith("| fp32 | 20.0 | - | 1.00 | 1.00 | 1.25 (1.12) |")


@pytest.mark.slow  # ~7 s of dynamo tracing on a quiet 2-core machine, 20 s on a busy one
def test_bare_compiled_equals_bare_eager_over_ten_steps(tiny_config):
    """The compiled bare step (aot_eager: dynamo capture and AOT autograd, no C++ build; zero
    graph breaks by fullgraph=True) gives the eager Taylor-mode loop's losses to 1e-6, from the
    same weights, with its compile run before the first step and the weights left unchanged."""
    from mpsciml.benchmark.bare_compiled import compile_now, compiled_bare_loop

    cfg = tiny_config("problem=burgers", "model.hidden=[8,8]", "logger=none", "~callbacks")
    module, _, _ = build(cfg)
    eager = BareLoop.like(module, derivatives="taylor")
    compiled, facts = compiled_bare_loop(module, "cpu", backend="aot_eager")
    compile_now(compiled, facts)
    assert facts["compile_seconds"] > 0 and facts["optimizer_impl"] in ("fused", "foreach")
    for _ in range(10):
        assert float(compiled.step()) == pytest.approx(float(eager.step()), rel=1e-6, abs=1e-7)
    for a, b in zip(compiled.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~10 s of dynamo tracing (the gradient transform and Adam in one graph)
def test_bare_fused_equals_bare_eager_over_ten_steps(tiny_config):
    """The bare step as one compiled call (forward, gradient, Adam; aot_eager) gives the eager
    Taylor-mode loop's losses (1e-6) and weights from the same start: its compile ran a step,
    which was undone, so the row starts from the initial network like every other row."""
    from mpsciml.benchmark.bare_compiled import fused_bare_loop

    cfg = tiny_config("problem=burgers", "model.hidden=[8,8]", "logger=none", "~callbacks")
    module, _, _ = build(cfg)
    eager = BareLoop.like(module, derivatives="taylor")
    fused, facts = fused_bare_loop(module, "cpu", backend="aot_eager")
    assert facts["compile_seconds"] > 0 and fused.steps_done == 0
    for a, b in zip(fused.model.parameters(), eager.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for _ in range(10):
        assert float(fused.step()) == pytest.approx(float(eager.step()), rel=1e-6, abs=1e-7)
    for a, b in zip(fused.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wrapper", ["auto", "false"])
def test_the_bare_compiled_rows_compile_as_the_run_does(tiny_config, monkeypatch, wrapper):
    """The bare rows are the reference for compile=true's step, so they take its backend, mode
    and C++ wrapper (auto: on for inductor on a CPU); torch.compile sees the same options."""
    from mpsciml.benchmark import bare_compiled, comparison

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(comparison, "inductor_refusal", lambda backend, device: None)
    monkeypatch.setattr(bare_compiled.torch, "compile", lambda f, **how: seen.append(how) or f)
    monkeypatch.setattr(bare_compiled, "compile_now", lambda loop, facts: None)
    monkeypatch.setattr(comparison, "compile_now", lambda loop, facts: None)
    monkeypatch.setattr(bare_compiled.FusedBareLoop, "step", lambda self: torch.zeros(()))
    cfg = tiny_config(
        "problem=burgers",
        "model.hidden=[8]",
        "logger=none",
        "~callbacks",
        "compile_mode=max-autotune-no-cudagraphs",
        f"compile_cpp_wrapper={wrapper}",
    )
    module, _, _ = build(cfg)
    for fused in (False, True):
        runner, why = comparison.bare_compiled_runner(module, cfg, "cpu", 2, 1, fused=fused)
        assert why is None and runner.facts["cpp_wrapper"] is (wrapper == "auto")
    for how in seen:
        if wrapper == "auto":
            assert how["options"] == {
                "max_autotune": True,
                "coordinate_descent_tuning": True,
                "cpp_wrapper": True,
            }
        else:
            assert how["mode"] == "max-autotune-no-cudagraphs" and "options" not in how


def test_a_fused_row_shows_no_saved_bytes_and_says_why():
    """A step that is one compiled call saves nothing for autograd outside its graph: the
    meter's 0 would read as "no activation memory", so the row has no figure and a note."""
    from mpsciml.benchmark.bare_compiled import FUSED_IMPL as FUSED
    from mpsciml.benchmark.report import row_notes, runner_row
    from mpsciml.benchmark.runner import Runner

    rows = []
    for name, facts in (
        ("fp32_compiled", {"compile": {"fused_steps": 6, "compile_seconds": 1.0}}),
        ("bare_fused", {"optimizer_impl": FUSED, "cpp_wrapper": True, "compile_seconds": 2.0}),
        ("bare_compiled", {"optimizer_impl": "fused"}),
    ):
        runner = Runner(name, "bare", StepClock(None, 0, steps=2, turn=1))
        runner.clock.samples, runner.saved_bytes = [0.01, 0.01], 0 if "fused" in name else 5
        runner.facts.update(facts)
        rows.append(runner_row(runner, warmup=0))
    assert [r["saved_bytes"] for r in rows] == [None, None, 5]
    notes = row_notes(rows)
    assert sum("no saved-bytes figure" in note for note in notes) == 2
    assert not any(note.startswith("bare_compiled") for note in notes)
    fused = next(note for note in notes if note.startswith("bare_fused"))
    assert "C++ wrapper" in fused and not any("C++" in n for n in notes if n != fused)


def test_compiling_steps_after_the_warmup_are_not_timed():
    from mpsciml.benchmark.report import runner_row
    from mpsciml.benchmark.runner import Runner

    runner = Runner("fp32_compiled", "lightning", StepClock(None, 0, steps=5, turn=5))
    runner.clock.samples = [0.01, 0.01, 9.0, 0.01, 0.01]  # step 2 compiled (a recompile)
    runner.facts["compile"] = {"compile_steps": [0, 2]}
    row = runner_row(runner, warmup=1)
    assert row["steps"] == 3 and row["median_ms"] == pytest.approx(10.0)
    assert row["compile_steps_not_timed"] == [2]


def test_the_laplacian_apart_row_trains_the_same_step(tmp_path, capsys):
    """`--laplacian-apart`: Poisson in Taylor mode with its Laplacian's terms as streams of
    their own beside the summed stream; the same loss to rounding, and both rows ran."""
    out = tmp_path / "poisson.json"
    code = load_script().main(
        [
            "problem=poisson", "model.hidden=[8,8]", "problem.n_domain=64", "derivatives=taylor",
            "--precisions", "fp32", "--laplacian-apart", "--no-matmul-share",
            "--steps", "3", "--warmup", "1", "--turn", "2", "--out", str(out),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    (case,) = json.loads(out.read_text())["cases"]
    rows = {row["name"]: row for row in case["rows"]}
    assert list(rows) == ["fp32", "fp32_laplacian_apart", "bare_fp32"]
    assert all(row["error"] is None and row["steps"] == 3 for row in rows.values())
    summed, apart = rows["fp32"]["first_loss"], rows["fp32_laplacian_apart"]["first_loss"]
    assert summed == pytest.approx(apart, rel=1e-6)
    assert "| fp32_laplacian_apart |" in captured.out
    versus = case["vs_laplacian_apart"]
    assert list(versus) == ["fp32"] and versus["fp32"]["of_medians"] == pytest.approx(
        rows["fp32"]["median_ms"] / rows["fp32_laplacian_apart"]["median_ms"]
    )
    assert "over our Taylor step with the Laplacian apart" in captured.out
    assert (rows["fp32"]["laplacian"], rows["fp32_laplacian_apart"]["laplacian"]) == (
        "summed",
        "apart",
    )
    assert "run the same step" not in captured.out
    assert (tmp_path / "poisson_rows.png").stat().st_size > 10_000  # one case: the bar chart
