"""The benchmark's bar chart of a case's rows (`benchmark.rows_plot`)."""

from __future__ import annotations

from mpsciml.benchmark.rows_plot import bar_label, plot_rows, rows_title


def row(name: str, kind: str, ms: float, **extra) -> dict:
    return {"name": name, "kind": kind, "median_ms": ms, "q1_ms": 0.9 * ms, "q3_ms": 1.2 * ms,
            "error": None, **extra}  # fmt: skip


def record(*cases: dict) -> dict:
    machine = {"cpu": "Test CPU", "cuda": None, "threads": 1}
    return {"problem": "burgers", "machine": machine, "cases": list(cases)}


def case(rows: list[dict], floor: dict | None = None) -> dict:
    return {"points": 64, "hidden": [8, 8], "rows": rows, "lightning_loop": floor}


def test_one_case_gives_a_chart_with_the_floor_and_the_rows_not_run(tmp_path):
    rows = [
        row("fp32", "lightning", 7.0, x_bare_eager_paired=1.1),
        row("lightning_loop", "loop", 0.3),
        row("bare_fused", "bare", 3.0),
        row("deepxde_fp32", "peer", 7.2),
        {"name": "pina_fp32", "kind": "peer", "skipped": "not installed", "error": None},
    ]
    floor = {"floor_ms": 3.3, "reference": "bare_fused"}
    path = plot_rows([case(rows, floor)], tmp_path / "bench_rows.png", "title")
    assert path == tmp_path / "bench_rows.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert path.stat().st_size > 10_000


def test_no_chart_for_several_sizes_or_rows_without_a_time(tmp_path):
    one = case([row("fp32", "lightning", 1.0)])
    assert plot_rows([one, one], tmp_path / "a.png", "t") is None
    failed = case([{"name": "fp32", "kind": "lightning", "error": "boom"}])
    assert plot_rows([failed], tmp_path / "b.png", "t") is None
    assert not list(tmp_path.iterdir())


def test_bar_labels_give_the_ratio_the_row_has():
    assert bar_label(row("a", "lightning", 7.06, x_bare_eager_paired=1.1)) == (
        "7.06 ms  (1.10x bare eager, paired)"
    )
    assert bar_label(row("a", "lightning", 2.0, x_bare_eager=0.5)) == "2 ms  (0.50x bare eager)"
    assert bar_label(row("a", "lightning", 2.0, time_vs_fp32=0.5)) == "2 ms  (0.50x fp32)"
    assert bar_label(row("loop", "loop", 0.334, x_bare_eager_paired=0.05)) == "0.334 ms"


def test_the_title_says_problem_size_and_machine():
    title = rows_title(record(case([row("fp32", "lightning", 1.0)])))
    assert (
        title
        == "burgers (64 points, hidden [8, 8]): time per training step | Test CPU, 1 thread(s)"
    )
