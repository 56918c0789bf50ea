"""precision.compare_every: the run's gradient against the fp32 gradient of the same step.

The measure (`precision.gradient_agreement.reference_gradient`) must equal a plain fp32
backward for every kind of module (PINN, operator on sensors, data-free grid), leave p.grad
alone; the callback must divide out the loss scale (else a GradScaler run would be 65536x off),
log its values and put them in summary.json and the precision plot.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config
from hydra.utils import instantiate

from mpsciml.callbacks.gradient_agreement import GradientAgreement
from mpsciml.callbacks.precision_monitor import PrecisionMonitor
from mpsciml.factory import build_datamodule, build_model, build_module
from mpsciml.precision.gradient_agreement import BOUND_NOTE, agreement, reference_gradient
from mpsciml.train import run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def data_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))


def test_agreement_numbers():
    r = [torch.tensor([3.0, 4.0])]
    same = agreement([torch.tensor([3.0, 4.0])], r)
    assert same == {"finite": True, "grad_cosine": pytest.approx(1.0), "grad_rel_error": 0.0}
    off = agreement([torch.tensor([4.0, 3.0])], r)
    assert off["grad_cosine"] == pytest.approx(24 / 25)
    assert off["grad_rel_error"] == pytest.approx(2**0.5 / 5)
    bad = agreement([torch.tensor([float("inf"), 0.0])], r)
    assert bad == {"finite": False, "grad_cosine": None, "grad_rel_error": None}


TINY_KINDS = {
    "pinn": ["problem.n_domain=64"],
    "operator": [
        "problem=antiderivative",
        "problem.n_train=12",
        "problem.n_test=6",
        "problem.n_points=20",
    ],
    "grid": [
        "problem=poisson_grid",
        "model=diffnet",
        "problem.grid=16",
        "problem.batch_size=2",
        "problem.n_test=2",
        "model.width=4",
        "model.depth=2",
    ],
}


@pytest.mark.parametrize("kind", list(TINY_KINDS))
def test_reference_is_the_plain_fp32_gradient_and_leaves_grads_alone(tmp_path, kind):
    base = [o for o in TINY if not o.startswith("problem.n_domain")]  # a PINN's key only
    cfg = compose_config([*base, *TINY_KINDS[kind]], tmp_path)
    problem = instantiate(cfg.problem)
    module = build_module(cfg, problem, build_model(cfg.model, problem))
    datamodule = build_datamodule(cfg, problem, module)
    datamodule.setup("fit")
    batch = module.batch_in_input_dtype(next(iter(datamodule.train_dataloader())))
    params = list(module.parameters())
    module.total_loss(module.loss_terms(batch)).backward()
    plain = [p.grad.clone() for p in params]
    reference = reference_gradient(module, batch, params)
    assert all(torch.equal(p.grad, g) for p, g in zip(params, plain, strict=True))  # untouched
    record = agreement(reference, plain)
    assert record["grad_rel_error"] < 1e-5 and record["grad_cosine"] > 1 - 1e-6


def read_metrics(out_dir: Path, key: str) -> dict[int, float]:
    """{step: value} of a logged key (Lightning repeats a callback's last value on later steps
    of the same epoch: only the measured steps are compared)."""
    with open(out_dir / "metrics.csv") as handle:
        return {int(row["step"]): float(row[key]) for row in csv.DictReader(handle) if row.get(key)}


@pytest.mark.parametrize(
    ("precision", "low", "high"),
    [
        ("fp32", 0.0, 1e-6),  # the same computation: round-off only
        ("mixed", 1e-6, 0.05),  # fp16 autocast under a GradScaler: the scale divided out
        ("bf16_mixed", 1e-4, 0.5),  # bf16's 8-bit mantissa: visible, finite, below 1
        ("bf16", 1e-4, 0.5),  # bf16 weights: the reference runs on fp32 copies
    ],
)
def test_compare_every_logs_and_summarises(tiny_config, precision, low, high):
    cfg = tiny_config(f"precision={precision}", "precision.compare_every=2", "trainer.max_steps=4")
    summary = run(cfg)
    report = summary["precision"]["gradient_agreement"]
    assert report["compare_every"] == 2 and report["measurements"] == 2  # steps 0 and 2
    assert [r["step"] for r in report["history"]] == [0, 2]
    assert low <= report["grad_rel_error_max"] <= high
    assert report["grad_cosine_min"] > (1 - 1e-6 if precision == "fp32" else 0.9)
    assert report["bound"] is None and report["bound_note"] == BOUND_NOTE
    logged = read_metrics(Path(cfg.paths.output_dir), "precision/grad_rel_error")
    assert [logged[r["step"]] for r in report["history"]] == pytest.approx(
        [r["grad_rel_error"] for r in report["history"]]
    )
    if precision == "fp32":
        assert report["grad_rel_error_max"] < 1e-6


def test_agreement_is_plotted(tmp_path):
    agreement_callback = GradientAgreement(every_n_steps=10)
    agreement_callback.history = [
        {"step": step, "finite": True, "grad_cosine": 1 - 1e-4 / (step + 1), "grad_rel_error": 0.01}
        for step in (0, 10, 20)
    ]
    monitor = PrecisionMonitor(every_n_steps=10, agreement=agreement_callback)
    path = monitor.plot(tmp_path / "precision.png", "agreement only")
    assert path is not None and path.stat().st_size > 0
    assert PrecisionMonitor(every_n_steps=10).plot(tmp_path / "none.png") is None  # nothing
