"""The FNO study's report and benchmark tables: Tu et al.'s settings share precisions, so rows
are kept apart by their spectral setting, the baseline is fp32 with full spectral layers, and
the grid problems' H1 and zero-shot errors get their own columns."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from mpsciml.benchmark.fno_report import equal_size, settings_table
from mpsciml.benchmark.settings import SETTING_NAMES, spectral_settings
from mpsciml.report.aggregate import aggregate
from mpsciml.report.collect import load_runs, spectral_label
from mpsciml.report.table import error_header, markdown_table

SCHEDULE = [
    {"step": "${int_fraction:${trainer.max_steps},0.8}", "spectral_precision": "mixed"},
    {"step": "${int_fraction:${trainer.max_steps},0.95}", "spectral_precision": "full",
     "precision": "fp32"},
]  # fmt: skip


def write_run(folder: Path, precision: str, mode: str, tanh: bool, seed: int, l2: float,
              ms: float, schedule: list | None = None) -> None:  # fmt: skip
    (folder / ".hydra").mkdir(parents=True)
    config = {
        "problem": {"_target_": "mpsciml.problems.darcy.Darcy"},
        "model": {
            "_target_": "mpsciml.models.fno.FNO",
            "spectral_precision": mode,
            "stabilizer": "tanh" if tanh else None,
        },
        "precision": {"name": precision, "schedule": schedule or []},
        "trainer": {"max_steps": 100},
        "seed": seed,
    }
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {
        "status": "ok",
        "precision": {"requested": precision},
        "seed": seed,
        "steps": 100,
        "step_ms": ms,
        "l2": {"u": l2, "h1_u": 3 * l2, "zero_shot_u": 1.2 * l2, "zero_shot_h1_u": 4 * l2},
        "spectral": {"spectral_precision": "full" if schedule else mode, "ran": []},
    }
    (folder / "summary.json").write_text(json.dumps(summary))


def test_the_label_reads_the_schedule_with_its_steps_resolved():
    config = OmegaConf.to_container(
        OmegaConf.create({"model": {"spectral_precision": "half", "stabilizer": "tanh"},
                          "precision": {"schedule": SCHEDULE}, "trainer": {"max_steps": 100}})
    )  # fmt: skip
    assert spectral_label(config, None) == "half+tanh → mixed@80 → full@95"
    assert spectral_label({"model": {"spectral_precision": "full"}}, None) == "full"
    assert spectral_label({"model": {"hidden": [4]}}, None) is None  # an MLP
    assert spectral_label({}, {"spectral_precision": "mixed"}) == "mixed"  # no config kept


def test_settings_sharing_a_precision_are_rows_of_their_own(tmp_path):
    settings = [("fp32", "full", False, 10.0), ("mixed", "full", False, 20.0),
                ("mixed", "half", True, 15.0)]  # fmt: skip
    for i, (precision, mode, tanh, ms) in enumerate(settings):
        for seed in (0, 1):
            write_run(tmp_path / f"{i}{seed}", precision, mode, tanh, seed, 0.1 + i / 100, ms)
    write_run(tmp_path / "s", "mixed", "half", True, 0, 0.09, 16.0, schedule=SCHEDULE)
    rows = aggregate(load_runs([tmp_path]))
    assert [(r.precision, r.spectral, r.runs) for r in rows] == [
        ("fp32", "full", 2),
        ("mixed", "full", 2),
        ("mixed", "half+tanh", 2),
        ("mixed", "half+tanh → mixed@80 → full@95", 1),
    ]
    amp, recipe = rows[1], rows[2]
    assert amp.speedup == 0.5 and recipe.speedup == 10.0 / 15.0  # against fp32 + full
    assert abs(recipe.l2["zero_shot_u"].mean - 1.2 * 0.12) < 1e-12
    table = markdown_table(rows)
    header = table.splitlines()[0]
    assert "| spectral |" in header
    for title in ("rel. L2 u", "rel. H1 u", "zero-shot rel. L2 u", "zero-shot rel. H1 u"):
        assert f"| {title} |" in header
    assert "| mixed | half+tanh → mixed@80 → full@95 |" in table


def test_error_headers():
    assert error_header("u") == "rel. L2 u"
    assert error_header("h1_omega") == "rel. H1 omega"
    assert error_header("zero_shot_h1_u") == "zero-shot rel. H1 u"


def test_benchmark_rows_for_neuraloperator_have_the_same_size():
    base = OmegaConf.create({"model": {"_target_": "mpsciml.models.fno.FNO", "hidden_channels": 16,
                                       "n_modes": [12, 8], "lifting_channels": None,
                                       "spectral_precision": "full"}})  # fmt: skip
    settings = spectral_settings(base, ["model=fno"], list(SETTING_NAMES), reference=True)
    assert [s.name for s in settings] == [*SETTING_NAMES, *(f"neuralop_{n}" for n in SETTING_NAMES)]
    theirs = settings[len(SETTING_NAMES)].overrides
    assert theirs[0] == "model=neuralop_fno"
    assert {"model.hidden_channels=16", "model.n_modes=[12,8]", "model.lifting_channels=null"} <= (
        set(theirs)
    )
    ours_only = spectral_settings(base, ["model=neuralop_fno"], ["fp32"], reference=True)
    assert [s.name for s in ours_only] == ["fp32"]


def test_settings_table_lists_rows_that_cannot_run_here():
    rows = [
        {"name": "fp32", "label": "fp32", "median_ms": 10.0, "time_vs_fp32": 1.0,
         "saved_bytes": 2**20, "saved_vs_fp32": 1.0, "parameters": 100,
         "spectral": {"ran": [{"fft_dtype": "float32", "contraction_dtype": "float16",
                               "inverse_fft_dtype": "float32"}]}},
        {"name": "neuralop_fp32", "label": "neuraloperator: fp32", "median_ms": 12.5,
         "saved_bytes": 2**21, "parameters": 100},
        {"name": "neuralop_half_spectral", "label": "x", "skipped": "not on CPU", "error": None},
    ]  # fmt: skip
    table = settings_table(rows)
    assert "| fp32 | fp32 | 10.0 | 1.00 |" in table
    assert "fp32/fp16/fp32" in table
    assert "| neuralop_half_spectral | x | not run: not on CPU |" in table
    comparison = equal_size(rows)
    assert comparison is not None
    assert comparison["time_ours_vs_neuralop"] == 0.8
    assert comparison["saved_ours_vs_neuralop"] == 0.5


def test_benchmark_cli_on_a_tiny_fno(tmp_path, capsys, monkeypatch):
    """The FNO benchmark end to end, in-process: our rows, neuraloperator's at the same size
    (its half-spectral row listed as not run on the CPU), the CP contraction table, JSON, plot."""
    import importlib.util

    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("benchmark_script", root / "scripts/benchmark.py")
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "fno.json"
    code = script.main(
        ["problem=darcy", "model=fno", "problem.resolution=8", "problem.n_train=4",
         "problem.n_test=2", "problem.zero_shot_resolution=null", "problem.batch_size=2",
         "problem.generator.solve_grid=24", "problem.generator.modes=8",
         "model.hidden_channels=4", "model.n_modes=4", "model.n_layers=1",
         "--settings", "fp32", "amp_half_tanh", "--steps", "1", "--warmup", "0",
         "--out", str(out)]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    record = json.loads(out.read_text())
    rows = {r["name"]: r for r in record["cases"][0]["rows"]}
    assert list(rows) == ["fp32", "amp_half_tanh", "neuralop_fp32", "neuralop_amp_half_tanh"]
    assert rows["neuralop_amp_half_tanh"]["skipped"] == "not on CPU"
    assert rows["fp32"]["parameters"] == rows["neuralop_fp32"]["parameters"]
    assert rows["amp_half_tanh"]["saved_vs_fp32"] < 1
    ran = rows["amp_half_tanh"]["spectral"]["ran"][0]
    assert (ran["spectral_precision"], ran["contraction_dtype"]) == ("half", "float16")
    orders = [(r["precision"][:4], r["order"]) for r in record["contraction"]["rows"]]
    assert ("fp32", "naive") in orders and ("fp16", "cheapest") in orders
    assert record["equal_size"]["time_ours_vs_neuralop"] > 0
    assert (tmp_path / "fno_settings.png").stat().st_size > 10_000
