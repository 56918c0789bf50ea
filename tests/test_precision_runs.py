"""Whole training runs in every precision: what the precision system promises a user."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import mpsciml.derivatives.autograd
from mpsciml.precision.registry import PRECISIONS
from mpsciml.problems.burgers import Burgers
from mpsciml.train import run


def compare_mixed_with_fp32(tiny_config, steps: int, n_domain: int) -> None:
    """fp16 compute with derivative and loss scaling: finite losses, L2 within 1.5x of fp32."""
    common = [f"trainer.max_steps={steps}", f"val_every={steps}", f"problem.n_domain={n_domain}"]
    fp32 = run(tiny_config("precision=fp32", *common))
    mixed = run(tiny_config("precision=mixed", *common))
    assert mixed["status"] == "ok"
    assert all(math.isfinite(v) for v in mixed["final_losses"].values())
    assert mixed["precision"]["matmul_dtype"] == "float16"
    assert mixed["l2"]["u"] < 1.5 * fp32["l2"]["u"]
    assert mixed["l2"]["u"] < 0.9 * run(tiny_config("trainer.max_steps=1"))["l2"]["u"]


def test_mixed_trains_burgers_as_well_as_fp32(tiny_config):
    compare_mixed_with_fp32(tiny_config, steps=150, n_domain=256)


@pytest.mark.slow
def test_mixed_trains_burgers_as_well_as_fp32_long(tiny_config):
    """The same claim over 3000 steps on the paper's 2048 points, into the shock's formation."""
    compare_mixed_with_fp32(tiny_config, steps=3000, n_domain=2048)


# every precision that computes below fp32 (told by its dtypes, not by what it says of L-BFGS)
LOW_PRECISIONS = [name for name, spec in PRECISIONS.items() if spec.compute_dtype.itemsize < 4]


@pytest.mark.parametrize("precision", LOW_PRECISIONS)
def test_adam_then_lbfgs_works_in_every_precision(tiny_config, precision):
    cfg = tiny_config(
        f"precision={precision}",
        "optimizer=adam_lbfgs",
        "trainer.max_steps=4",
        "optimizer.switch_step=2",
    )
    summary = run(cfg)
    assert summary["status"] == "ok"
    assert summary["steps"] == 4
    assert summary["precision"]["switches"] == [{"step": 2, "from": precision, "to": "fp32"}]
    assert summary["precision"]["final_precision"] == "fp32"


def test_lbfgs_in_fp64_stays_fp64(tiny_config):
    summary = run(tiny_config("precision=fp64", "optimizer=lbfgs", "optimizer.lbfgs.max_iter=3"))
    assert summary["precision"]["switches"] == []
    assert summary["precision"]["param_dtype"] == "float64"


def test_precision_schedule_switches_weights_and_optimizer_state(tiny_config):
    from mpsciml.compose import build

    cfg = tiny_config(
        "precision=fp16", "trainer.max_steps=4", "precision.schedule=[{step: 2, precision: fp32}]"
    )
    module, trainer, parts = build(cfg)
    trainer.fit(module, datamodule=parts["datamodule"])
    plugin = trainer.precision_plugin
    assert plugin.switches == [{"step": 2, "from": "fp16", "to": "fp32"}]
    assert all(p.dtype == torch.float32 for p in module.parameters())
    adam = module.optimizers()
    states = [s for s in adam.optimizer.state.values()]
    assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)
    assert plugin.fp16_scaler is None and plugin.autocast_dtype is None


def test_overflowing_derivatives_skip_the_step_and_back_off_their_seed(tiny_config, monkeypatch):
    original = mpsciml.derivatives.autograd.gradient

    def overflow_unless_scaled(output, inputs, seed=1.0):
        result = original(output, inputs, seed)
        return result * float("inf") if seed > 0.3 else result

    monkeypatch.setattr(mpsciml.derivatives.autograd, "gradient", overflow_unless_scaled)
    summary = run(tiny_config("precision=mixed", "trainer.max_steps=5"))
    facts = summary["precision"]
    assert facts["skip_reasons"].get("derivative_overflow") == 2  # seeds 1 -> 0.5 -> 0.25
    assert facts["derivative_seeds"] == {"1": 0.25, "2": 0.25} or facts["derivative_seeds"] == {
        1: 0.25,
        2: 0.25,
    }
    assert summary["status"] == "ok"


def test_a_run_that_cannot_recover_ends_diverged_with_a_finite_checkpoint(tiny_config, monkeypatch):
    monkeypatch.setattr(Burgers, "pde", lambda self, d: d("u", "t") * float("nan"))
    cfg = tiny_config(
        "precision=mixed", "trainer.max_steps=50", "precision.max_consecutive_skips=5"
    )
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    assert summary["status"] == "diverged"
    assert summary["steps"] < 50  # stopped early instead of burning the remaining steps
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in checkpoint["state_dict"].values())
    # the summary says which step the kept (finite) checkpoint is from
    assert summary["checkpoint_step"] == checkpoint["global_step"]


def test_finite_checkpoint_refuses_nan_weights(tiny_config, monkeypatch):
    from mpsciml.callbacks.finite_checkpoint import FiniteCheckpoint
    from mpsciml.compose import build

    module, trainer, parts = build(tiny_config("trainer.max_steps=1"))
    trainer.fit(module, datamodule=parts["datamodule"])
    checkpoint = next(c for c in trainer.callbacks if isinstance(c, FiniteCheckpoint))
    target = Path(trainer.default_root_dir) / "nan.ckpt"
    with torch.no_grad():
        next(module.parameters()).fill_(float("nan"))
    checkpoint._save_checkpoint(trainer, str(target))
    assert not target.exists()


def test_diagnostics_are_logged_and_plotted(tiny_config):
    cfg = tiny_config(
        "precision=fp16", "trainer.max_steps=6", "precision.diagnostics_every=2", "plots=true"
    )
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    facts = summary["precision"]
    assert facts["measurements"] == 3
    assert 0.0 <= facts["mean_lost_update_fraction"] <= 1.0
    assert (out / "plots" / "precision.png").exists()
    header = (out / "metrics.csv").read_text().splitlines()[0]
    for key in (
        "precision/loss_scale",
        "precision/lost_update_fraction",
        "precision/grad_underflow_fraction",
        "precision/skipped_steps",
    ):
        assert key in header
