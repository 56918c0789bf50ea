"""The pictures of scripts/bench_distributed.py's record (`benchmark.distributed_plots`)."""

from __future__ import annotations

from pathlib import Path

from mpsciml.benchmark.distributed_plots import _series, plot_race, plot_scaling, write_plots

MACHINE = {"cpu": "Test CPU", "cuda": None, "threads_per_process": 1}


def scaling_row(processes: int, comm: str, samples: float, **kind) -> dict:
    return {"grid": 64, "processes": processes, "comm": comm, "samples_per_s": samples,
            "median_ms": 1000 * 2 * processes / samples, "weak": False, "strong": False,
            "batchnorm_exchange_ms_per_step": None, **kind}  # fmt: skip


def scaling_record() -> dict:
    rows = [
        scaling_row(1, "fp32", 4.0, weak=True),
        scaling_row(1, "fp32", 3.5, strong=True),
        scaling_row(1, "none", 4.4),
        scaling_row(2, "fp32", 6.4, weak=True, strong=True, batchnorm_exchange_ms_per_step=90.0),
        scaling_row(2, "fp16", 6.6, weak=True, strong=True),
        scaling_row(2, "independent", 7.2),
    ]
    efficiency = [{"grid": 64, "processes": 2, "weak_efficiency": 0.8}]
    return {"rows": rows, "efficiency": efficiency}


def race_record() -> dict:
    adam = [{"step": s, "seconds": 0.1 * s, "loss": 1.0 / s, "phase": "adam"} for s in (1, 2, 4)]
    route = [*adam[:2], {"step": 3, "seconds": 0.25, "loss": 0.2, "phase": "lbfgs"}]
    return {"rows": [{"processes": 1, "target_loss": 0.25, "adam_curve": adam,
                      "route_curve": route, "time_ratio": 0.62}]}  # fmt: skip


def test_series_pick_fp32_gradients_and_the_independent_runs_by_processes():
    rows = scaling_record()["rows"]
    assert [r["samples_per_s"] for r in _series(rows, 64, "weak")] == [4.0, 6.4]
    assert [r["samples_per_s"] for r in _series(rows, 64, "strong")] == [3.5, 6.4]
    assert [r["processes"] for r in _series(rows, 64, "independent")] == [2]
    assert _series(rows, 128, "weak") == []


def test_the_record_gives_a_scaling_and_a_race_picture_beside_its_json(tmp_path):
    record = {"machine": MACHINE, "scaling": scaling_record(), "optimizers": race_record()}
    written = write_plots(record, tmp_path / "bench.json")
    assert written == [tmp_path / "bench_scaling.png", tmp_path / "bench_race.png"]
    for path in written:
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000


def test_nothing_to_draw_gives_no_picture(tmp_path):
    one_count = {"rows": [scaling_row(1, "fp32", 4.0, weak=True)], "efficiency": []}
    assert plot_scaling(one_count, tmp_path / "s.png", "t") is None
    assert plot_race({"rows": []}, tmp_path / "r.png", "t") is None
    assert write_plots({"machine": MACHINE}, Path(tmp_path / "x.json")) == []
    assert not list(tmp_path.iterdir())
