"""scripts/bench_distributed.py: scaling over real DDP processes, the optimiser race, precisions.

Fast tests check the pieces the numbers come from (which cases run, efficiencies, the race's
target and time ratio, the bytes of the synchronised BatchNorm, the step clock, the options) and
the precision part end to end in this process; the whole script at its smallest (1 and 2 gloo
processes, every part) is `slow` (it spawns 4 groups of processes: ~1 min on 2 quiet cores).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT
from data_free_stub import TinyPoisson
from omegaconf import OmegaConf

from mpsciml.benchmark import distributed_bench as db
from mpsciml.benchmark import distributed_report as rep
from mpsciml.benchmark.ddp_case import ExchangeClock, StepTimes, batchnorm_sync_bytes
from mpsciml.benchmark.ddp_processes import alone
from mpsciml.benchmark.distributed_bench import (
    RacePlan,
    ScalingPlan,
    efficiencies,
    exchange_ms,
    race_cases,
    race_row,
    scaling_case,
    scaling_keys,
)
from mpsciml.benchmark.loss_monitor import LossMonitor, first_reached, race_monitor
from mpsciml.distributed import sync_batchnorm
from mpsciml.distributed.comm_hooks import BytesCounter
from mpsciml.models.diffnet import DiffNet


def load_script():
    spec = importlib.util.spec_from_file_location(
        "bench_distributed", ROOT / "scripts" / "bench_distributed.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_scaling_cases_cover_weak_strong_and_compressed_all_reduce():
    plan = ScalingPlan([1, 2], [128, 256], batch_per_process=2)
    keys = scaling_keys(plan)
    one = {(k["grid"], k["batch"], k["comm"], k["weak"], k["strong"]) for k in keys[1]}
    assert one == {(g, b, "fp32", b == 2, b == 4) for g in (128, 256) for b in (2, 4)} | {
        (g, 2, "none", False, False) for g in (128, 256)
    }  # 1 process: the weak batch b and the strong (global) batch b * max P; and without DDP
    two = [(k["grid"], k["batch"], k["comm"]) for k in keys[2]]
    assert two == [
        (g, 4, c) for g in (128, 256) for c in ("fp32", "fp16", "bf16", "block", "independent")
    ]  # blocking waits; and 2 runs of 2 fields each without DDP at once: the machine's ceiling
    apart = ("block", "independent")
    assert all(k["weak"] and k["strong"] for k in keys[2] if k["comm"] not in apart)


def test_the_blocking_row_is_the_fp32_run_with_its_exchanges_awaited_asleep():
    plan = ScalingPlan([1, 2], [64], batch_per_process=3)
    key = next(k for k in scaling_keys(plan)[2] if k["comm"] == "block")
    seen = []
    scaling_case(plan, key, lambda overrides: seen.extend(overrides) or "cfg")
    assert {"trainer=ddp", "trainer.devices=2", "problem.batch_size=6"} <= set(seen)
    assert "trainer.collective_wait=block" in seen
    assert not any(o.startswith("trainer.comm_precision") for o in seen)
    on_gpus = ScalingPlan([1, 2], [64], batch_per_process=3, accelerator="cuda")
    assert "block" not in {k["comm"] for k in scaling_keys(on_gpus)[2]}  # NCCL is never polled


def test_rounds_alternate_the_process_counts_and_the_order_of_the_cases(monkeypatch):
    plan = ScalingPlan([1, 2], [64], batch_per_process=2, repeats=3)
    launched = []

    def fake_launch(p, cases, threads):
        launched.append((p, [c["label"] for c in cases]))
        return [[{"label": c["label"]}] for c in cases]

    monkeypatch.setattr(db, "prepare_test_sets", lambda configs: None)
    monkeypatch.setattr(db, "launch", fake_launch)
    monkeypatch.setattr(db, "scaling_row", lambda key, rounds, warmup: key | {"per_round": rounds})
    monkeypatch.setattr(db, "efficiencies", lambda rows, plan: [])
    result = db.run_scaling(plan, lambda overrides: "cfg", log=lambda line: None)
    labels = {p: [db.label(k) for k in ks] for p, ks in db.scaling_keys(plan).items()}
    assert launched == [
        (1, labels[1]), (2, labels[2]),  # round 1: forward
        (2, labels[2][::-1]), (1, labels[1][::-1]),  # round 2: the other way round
        (1, labels[1]), (2, labels[2]),
    ]  # fmt: skip
    for row in result["rows"]:  # each row gets its own case's results from every round
        assert [r[0]["label"] for r in row["per_round"]] == [db.label(row)] * 3


def test_independent_runs_train_alone_on_their_share_without_ddp():
    plan = ScalingPlan([1, 2], [64], batch_per_process=3)
    key = next(k for k in scaling_keys(plan)[2] if k["comm"] == "independent")
    seen = []
    case = scaling_case(plan, key, lambda overrides: seen.extend(overrides) or "cfg")
    assert case["independent"] and "trainer=ddp" not in seen
    assert {"trainer.devices=1", "problem.batch_size=3"} <= set(seen)
    assert not any(o.startswith("trainer.comm_precision") for o in seen)


def test_alone_hides_the_world_from_a_rank_and_gives_it_back(monkeypatch):
    world = {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_PORT": "12345"}
    for name, value in world.items():
        monkeypatch.setenv(name, value)
    with alone():
        assert not any(name in os.environ for name in world)
    assert all(os.environ[name] == value for name, value in world.items())


def _row(grid, p, batch, ms, rounds, comm="fp32"):
    return {"grid": grid, "processes": p, "batch": batch, "comm": comm, "median_ms": ms,
            "round_median_ms": rounds}  # fmt: skip


def test_efficiencies_weak_and_strong_from_medians_and_paired_by_round():
    plan = ScalingPlan([1, 2], [64], batch_per_process=2)
    rows = [
        _row(64, 1, 2, 100.0, [100.0, 120.0]),
        _row(64, 1, 4, 200.0, [200.0, 240.0]),
        _row(64, 2, 4, 125.0, [125.0, 120.0]),
        _row(64, 1, 2, 90.0, [90.0, 100.0], comm="none"),
        _row(64, 2, 4, 100.0, [100.0, 100.0], comm="independent"),
        _row(64, 2, 4, 150.0, [150.0, 132.0], comm="block"),
    ]
    one, two = efficiencies(rows, plan)
    assert one["weak_efficiency"] == one["strong_efficiency"] == 1.0
    assert two["weak_efficiency"] == pytest.approx(0.8)  # T(1, b) / T(2, 2b)
    assert two["weak_efficiency_paired"] == pytest.approx((0.8 + 1.0) / 2)
    assert two["weak_efficiency_vs_no_ddp"] == pytest.approx(90.0 / 125.0)
    assert two["independent_efficiency"] == pytest.approx(90.0 / 100.0)  # the ceiling
    assert two["weak_efficiency_vs_independent"] == pytest.approx(100.0 / 125.0)
    assert two["strong_speedup"] == pytest.approx(1.6)  # T(1, G) / T(2, G)
    assert two["strong_efficiency"] == pytest.approx(0.8)
    assert two["strong_efficiency_paired"] == pytest.approx((0.8 + 1.0) / 2)
    assert two["weak_efficiency_blocking"] == pytest.approx(100.0 / 150.0)
    assert two["poll_gain"] == pytest.approx(150.0 / 125.0)  # blocking / polled time
    assert two["poll_gain_paired"] == pytest.approx((1.2 + 1.1) / 2)
    assert "poll_gain" not in one
    waits = rep.wait_table(rows, [one, two]).splitlines()
    assert waits[2:] == ["| 64x64 | 2 | 125 | 150 | - | - | 1.20 | 1.15 | 0.80 | 0.67 |"]
    assert rep.comm_table(rows).count("\n") == 1  # no compressed all-reduce among the rows
    line = "| 64x64 | 2 | 0.80 | 0.90 | 0.72 | 0.90 | 0.80 | 1.60 | 0.80 | 0.90 |"
    assert line in rep.efficiency_table([one, two])


def _records(losses, dt, phases=None):
    phases = phases or ["adam"] * len(losses)
    return [{"step": i, "seconds": dt * (i + 1), "loss": v, "phase": ph}
            for i, (v, ph) in enumerate(zip(losses, phases, strict=True))]  # fmt: skip


def test_the_race_target_is_adams_final_loss_and_the_ratio_uses_first_crossings():
    adam = {"records": _records([5.0, 3.0, 2.0, 2.5, 2.0], 1.0)}
    monitor = race_monitor({"every": 5, "fields": 8, "target": "previous", "cap_factor": 1.5}, adam)
    assert monitor == {"every": 5, "fields": 8, "target": 2.0, "time_cap_s": 4.5}
    assert first_reached(adam["records"], 2.0)["seconds"] == 3.0  # first crossing, not the end
    route = _records([5.0, 2.5, 1.9], 0.5, ["adam", "lbfgs", "lbfgs"])
    row = race_row(
        2,
        {"monitor": adam, "steps_run": 5, "rel_l2": {"u": 0.2}},
        {"monitor": {"records": route, "target": 2.0, "stopped": "target"}, "steps_run": 3,
         "rel_l2": {"u": 0.1}},
    )  # fmt: skip
    assert row["route_reached"] and row["route_lbfgs_steps"] == 2
    assert row["time_ratio"] == pytest.approx(1.5 / 3.0)
    assert "| 2 | 2 | 5, 3.0 | 0.2 | yes | 1.5 | 2 | 0.1 | 0.50 |" in rep.race_table([row])


def test_the_race_on_a_fixed_set_trains_both_routes_on_it_and_judges_its_training_loss():
    seen = []

    def compose(overrides):
        seen.append(overrides)
        return OmegaConf.create({"seed": 7})

    plan = RacePlan([1], grid=16, batch=4, fields=2, fixed_fields=True)
    adam, route = race_cases(plan, 1, compose)
    assert all("fixed_fields=true" in overrides for overrides in seen)
    for monitor in (adam["monitor"], route["monitor"]):  # the same set judges both routes
        assert (monitor["judged_on"], monitor["fields"], monitor["seed"]) == ("training", 4, 7)
    fresh = race_cases(RacePlan([1], grid=16, batch=4, fields=2), 1, compose)[0]["monitor"]
    assert "judged_on" not in fresh and fresh["fields"] == 2  # held-out fields, as before


def test_the_training_set_judged_is_the_runs_fields_of_step_0():
    problem = TinyPoisson(grid=8, batch_size=3)
    module = SimpleNamespace(problem=problem)
    monitor = LossMonitor(every=1, fields=3, judged_on="training", seed=5)
    expected = problem.parameter_fields(5, 0, torch.arange(3))
    assert torch.equal(monitor.fields(module), expected)
    assert not torch.equal(expected, problem.parameter_fields(5, 1, torch.arange(3)))
    with pytest.raises(ValueError, match="judged_on='test'"):
        LossMonitor(every=1, fields=3, judged_on="test")


def test_synchronised_batchnorm_bytes_count_every_layer_forward_and_backward():
    model = DiffNet(1, 1, (16, 16), width=4, depth=2)
    channels = [m.num_features for m in model.modules() if hasattr(m, "num_features")]
    assert len(channels) == 2 * (1 + 2 * 2)  # two norms per block: stem, 2 down, 2 up
    assert batchnorm_sync_bytes(model) == sum(16 * (2 * c + 1) for c in channels)
    assert batchnorm_sync_bytes(DiffNet(1, 1, (16, 16), width=4, depth=2, norm="group")) == 0


def test_step_times_are_start_to_start_and_the_last_step_to_its_end():
    counter = BytesCounter()
    timer = StepTimes(counter, "cpu")
    timer.starts = [0.0, 1.0, 3.0]
    timer.last_end = 3.5
    assert timer.samples_s() == [1.0, 2.0, 0.5]


def test_the_exchange_clock_times_both_batchnorm_exchanges_per_step_and_lets_go(monkeypatch):
    """Each step's time in the layer's two exchanges is summed apart from the next step's, and
    the layer's own functions are back in place after the block (also after an error)."""
    calls = []
    monkeypatch.setattr(sync_batchnorm, "gather_ranks", lambda x: calls.append("g") or x)
    monkeypatch.setattr(sync_batchnorm, "sum_over_ranks", lambda x: calls.append("s") or x)
    originals = (sync_batchnorm.gather_ranks, sync_batchnorm.sum_over_ranks)
    clock = ExchangeClock()
    local = torch.ones(3)
    with clock.attached():
        assert sync_batchnorm.gather_ranks is not originals[0]
        sync_batchnorm.gather_ranks(local)
        sync_batchnorm.sum_over_ranks(local)
        clock.end_step()
        clock.end_step()  # a step without exchanges
    assert calls == ["g", "s"]
    assert len(clock.per_step) == 2 and clock.per_step[0] > 0 and clock.per_step[1] == 0
    assert (sync_batchnorm.gather_ranks, sync_batchnorm.sum_over_ranks) == originals
    with pytest.raises(RuntimeError), clock.attached():
        raise RuntimeError("a failed fit")
    assert (sync_batchnorm.gather_ranks, sync_batchnorm.sum_over_ranks) == originals


def test_exchange_time_is_the_ranks_mean_per_timed_step_and_none_without_synchronisation():
    """Per step the ranks' mean (both wait, each for the other), median over the rounds' timed
    steps (the warm-up left out); a case whose layer did not synchronise reports none."""

    def rank(*seconds: float) -> dict[str, list[float]]:
        return {"batchnorm_exchange_s": list(seconds)}

    rounds = [
        [rank(9.0, 0.010, 0.030), rank(9.0, 0.030, 0.050)],
        [rank(9.0, 0.0, 0.2), rank(9.0, 0.0, 0.0)],
    ]
    assert exchange_ms(rounds, warmup=1) == pytest.approx(
        1e3 * statistics.median([0.02, 0.04, 0.0, 0.1])
    )
    assert exchange_ms([[{"batchnorm_exchange_s": None}, rank(0.1)]], warmup=0) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--processes", "0,1"], "--processes"),
        (["--switch", "300"], "--switch=300 must be below --adam-steps=200"),
        (["--processes", "1,4096"], "usable cores"),
        (["--grid", "abc"], "--grid"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2(argv, message, capsys):
    assert load_script().main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_the_precision_part_runs_in_process_with_errors_against_the_reference(tmp_path, capsys):
    out = tmp_path / "precision.json"
    argv = [
        "--tiny",
        "--parts",
        "precision",
        "--precisions",
        "fp32",
        "bf16_mixed",
        "--out",
        str(out),
    ]
    assert load_script().main(argv) == 0
    assert "| bf16_mixed |" in capsys.readouterr().out
    rows = {r["name"]: r for r in json.loads(out.read_text())["precision"]["rows"]}
    for row in rows.values():
        assert row["error"] is None and row["median_ms"] > 0 and row["saved_bytes"] > 0
        assert math.isfinite(row["rel_l2"]["u"]) and row["rel_l2"]["u"] > 0
    assert rows["bf16_mixed"]["saved_bytes"] < rows["fp32"]["saved_bytes"]


@pytest.mark.slow
def test_the_smallest_configuration_on_one_and_two_processes(tmp_path):
    out = tmp_path / "tiny.json"
    assert load_script().main(["--tiny", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    rows = record["scaling"]["rows"]
    assert {r["processes"] for r in rows} == {1, 2}
    for row in rows:
        for key in ("median_ms", "samples_per_s", "allreduce_bytes_per_step", "parameters"):
            if key == "allreduce_bytes_per_step" and row["comm"] in ("none", "independent"):
                assert row[key] is None  # no DDP: nothing all-reduced
                continue
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
    fp32, fp16, bf16 = (
        next(r for r in rows if r["processes"] == 2 and r["comm"] == c)
        for c in ("fp32", "fp16", "bf16")
    )
    assert fp16["allreduce_bytes_per_step"] == bf16["allreduce_bytes_per_step"]
    assert fp16["allreduce_bytes_per_step"] * 2 == fp32["allreduce_bytes_per_step"]
    assert fp32["batchnorm_sync_bytes_per_step"] > 0
    assert fp32["batchnorm_exchange_ms_per_step"] > 0  # 2 ranks wait in the exchanges
    one = next(r for r in rows if r["processes"] == 1 and r["comm"] == "fp32")
    assert one["batchnorm_exchange_ms_per_step"] is None  # a world of one exchanges nothing
    block = next(r for r in rows if r["processes"] == 2 and r["comm"] == "block")
    assert block["batchnorm_exchange_ms_per_step"] > 0
    assert fp32["collective_wait"] == ["poll", "poll"]  # set by each rank's strategy
    assert block["collective_wait"] == ["block", "block"]
    two = next(e for e in record["scaling"]["efficiency"] if e["processes"] == 2)
    keys = ("weak_efficiency", "weak_efficiency_vs_no_ddp", "strong_efficiency", "strong_speedup",
            "independent_efficiency", "weak_efficiency_vs_independent", "poll_gain")  # fmt: skip
    assert all(two[k] > 0 for k in keys)
    for race in record["optimizers"]["rows"]:
        assert math.isfinite(race["target_loss"]) and race["adam_seconds_to_target"] > 0
        assert race["route_curve"] and math.isfinite(race["route_rel_l2"]["u"])
    assert [r["name"] for r in record["precision"]["rows"]] == ["fp32", "bf16_mixed", "mixed"]
    assert all(r["median_ms"] > 0 for r in record["precision"]["rows"])
    assert record["targets"]  # the L-BFGS ratios at least (the 256x256 target needs that grid)
    assert (tmp_path / "tiny_scaling.png").exists() and (tmp_path / "tiny_race.png").exists()
