"""scripts/bench_stencil_precision.py: the table and JSON of how much stencils lose in half."""

from __future__ import annotations

import importlib.util
import json

from conftest import ROOT


def test_the_benchmark_writes_rows_whose_half_error_grows_like_one_over_h_squared(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_stencil_precision", ROOT / "scripts" / "bench_stencil_precision.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "precision.json"
    script.main(["--sizes", "17", "33", "--out", str(out)])
    assert "| 33^2 | bf16 field, fp32 stencil |" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    pick = {(r["size"], r["assembly"]): r for r in rows}
    small, large = (pick[(n, "bf16 field, fp32 stencil")]["laplacian"] for n in (17, 33))
    assert 2.5 < large / small < 6.5  # eps / h^2: four times per halving of h (noise: loose)
    assert pick[(33, "fp32 in fp32")]["laplacian"] < 1e-4 < large
    assert pick[(33, "discretisation (fp64 vs exact)")]["laplacian"] < 5e-3
    assert out.with_suffix(".png").stat().st_size > 10_000  # errors against the grid size
