"""End-to-end runs through `mpsciml.train.run`: what a user gets from `python train.py`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import assert_same_final_weights

from mpsciml.config import ConfigError
from mpsciml.train import run

EXPECTED = {
    # precision: (parameter dtype, dtype a matmul produced in training, scaler ran)
    "fp32": ("float32", "float32", False),
    "mixed": ("float32", "float16", True),
}


@pytest.mark.parametrize("problem", ["burgers", "navier_stokes"])
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_each_problem_trains_and_leaves_its_outputs(tiny_config, problem, precision):
    cfg = tiny_config(f"problem={problem}", f"precision={precision}", "plots=true")
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)

    assert summary["status"] == "ok"
    assert summary["steps"] == 3
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["status"] == "ok"
    for key in (
        "precision",
        "steps",
        "wall_seconds",
        "train_seconds",
        "step_ms",
        "final_losses",
        "l2",
        "seed",
        "git_commit",
        "memory",
    ):
        assert key in on_disk, key
    fields = {"burgers": ["u"], "navier_stokes": ["u", "v", "p"]}[problem]
    assert sorted(on_disk["l2"]) == sorted(fields)
    assert all(0 < error < 10 for error in on_disk["l2"].values())
    param_dtype, matmul_dtype, scaler = EXPECTED[precision]
    assert on_disk["precision"]["param_dtype"] == param_dtype
    assert on_disk["precision"]["matmul_dtype"] == matmul_dtype
    assert on_disk["precision"]["scaler"] is scaler
    assert (out / "metrics.csv").exists()
    assert (out / "checkpoints" / "last.ckpt").exists()
    for field in fields:
        assert (out / "plots" / f"{field}.png").stat().st_size > 10_000
    terms = {
        "burgers": {"pde", "bc", "ic"},
        "navier_stokes": {
            "pde_momentum_x",
            "pde_momentum_y",
            "pde_continuity",
            "bc_u",
            "bc_v",
            "outlet",
        },
    }[problem]
    assert set(on_disk["final_losses"]) == terms | {"total"}
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {f"train/loss_{t}" for t in terms} <= set(header)


def test_training_reduces_the_error(tiny_config):
    """Not a smoke test: 300 Adam steps must beat the untrained network on Burgers."""
    before = run(tiny_config("trainer.max_steps=1", "val_every=1"))["l2"]["u"]
    after = run(tiny_config("trainer.max_steps=200", "val_every=200"))["l2"]["u"]
    assert after < 0.8 * before


def test_same_seed_same_result(tiny_config):
    first = run(tiny_config("seed=3"))["final_losses"]
    second = run(tiny_config("seed=3"))["final_losses"]
    other = run(tiny_config("seed=4"))["final_losses"]
    assert first == second
    assert first != other


@pytest.mark.parametrize(
    ("optimizer", "extra"),
    [
        ("adam_lbfgs", ["trainer.max_steps=4", "optimizer.lbfgs.max_iter=4"]),
        ("lbfgs", ["optimizer.lbfgs.max_iter=4"]),
        (
            "adam",
            [
                "+optimizer.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
                "+optimizer.scheduler._partial_=true",
                "+optimizer.scheduler.gamma=0.5",
            ],
        ),
    ],
)
def test_optimizers(tiny_config, optimizer, extra):
    cfg = tiny_config(f"optimizer={optimizer}", *extra)
    summary = run(cfg)
    assert summary["status"] == "ok"
    assert summary["steps"] == cfg.trainer.max_steps


def test_adam_then_lbfgs_switches_at_the_configured_step(tiny_config, monkeypatch):
    used: list[str] = []
    original = torch.optim.LBFGS.step

    def spy(self, closure):
        used.append("lbfgs")
        return original(self, closure)

    monkeypatch.setattr(torch.optim.LBFGS, "step", spy)
    cfg = tiny_config("optimizer=adam_lbfgs", "trainer.max_steps=5", "optimizer.switch_step=3")
    run(cfg)
    assert used == ["lbfgs", "lbfgs"]


def test_adam_lr_scheduler_is_applied(tiny_config):
    from mpsciml.compose import build

    cfg = tiny_config(
        "+optimizer.scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
        "+optimizer.scheduler._partial_=true",
        "+optimizer.scheduler.gamma=0.5",
    )
    module, trainer, parts = build(cfg)
    trainer.fit(module, datamodule=parts["datamodule"])
    assert module.optimizers().param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)


def test_loggers_csv_tensorboard_none(tiny_config):
    for logger, expected in (("tensorboard", "tensorboard"), ("none", None)):
        cfg = tiny_config(f"logger={logger}")
        summary = run(cfg)
        out = Path(cfg.paths.output_dir)
        assert summary["status"] == "ok"
        if expected:
            assert list((out / expected).rglob("events.out.tfevents.*"))


def test_wandb_offline_run_is_created_and_finished(tiny_config):
    import wandb

    cfg = tiny_config("logger=wandb", "tags=[unit]", "plots=true")
    summary = run(cfg)
    out = Path(cfg.paths.output_dir)
    runs = list((out / "wandb").glob("offline-run-*"))
    assert summary["status"] == "ok"
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))
    assert wandb.run is None  # finished, so the next job of a sweep gets its own run
    media = list(runs[0].rglob("media/images/plots/*.png"))
    assert media, "field plots are logged to W&B as images"


def test_loss_weights_by_condition_and_by_term(tiny_config):
    losses = run(tiny_config("loss_weights={bc: 0, ic: 2.5}"))["final_losses"]
    assert losses["total"] == pytest.approx(losses["pde"] + 2.5 * losses["ic"], rel=1e-5)
    ns = run(tiny_config("problem=navier_stokes", "loss_weights={pde: 0, bc_v: 3}"))
    terms = ns["final_losses"]
    expected = terms["bc_u"] + 3 * terms["bc_v"] + terms["outlet"]
    assert terms["total"] == pytest.approx(expected, rel=1e-5)


def test_taylor_derivatives_train_like_autograd(tiny_config):
    """The forward-mode path is an optimisation only: same losses as nested autograd."""
    autograd = run(tiny_config("problem=navier_stokes", "derivatives=autograd"))["final_losses"]
    taylor = run(tiny_config("problem=navier_stokes", "derivatives=taylor"))["final_losses"]
    for term, value in autograd.items():
        assert taylor[term] == pytest.approx(value, rel=1e-4, abs=1e-9), term


class _BatchRecorder(pl.Callback):
    """The `pde` points each training step received."""

    def __init__(self) -> None:
        self.points: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.points.append(batch["pde"].clone())


def _trained_points(cfg) -> list[torch.Tensor]:
    from mpsciml.compose import build

    module, trainer, parts = build(cfg)
    recorder = _BatchRecorder()
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=parts["datamodule"])
    return recorder.points


def test_resampling_moves_points_reproducibly(tiny_config):
    from mpsciml.compose import build

    steps = ("trainer.max_steps=4", "resample_every=2")
    points, again = _trained_points(tiny_config(*steps)), _trained_points(tiny_config(*steps))
    start = build(tiny_config())[0].conditions["pde"].points
    assert torch.equal(points[0], start) and torch.equal(points[1], start)
    assert not torch.equal(points[2], start) and torch.equal(points[3], points[2])
    assert all(torch.equal(a, b) for a, b in zip(points, again, strict=True))


def test_lbfgs_steps_keep_the_last_points_drawn(tiny_config):
    cfg = tiny_config(
        "optimizer=adam_lbfgs",
        "optimizer.switch_step=2",
        "optimizer.lbfgs.max_iter=2",
        "trainer.max_steps=4",
        "resample_every=1",
    )
    points = _trained_points(cfg)
    assert not torch.equal(points[1], points[0])  # Adam: fresh points every step
    assert torch.equal(points[2], points[1]) and torch.equal(points[3], points[1])


# an operator problem whose batches draw everything per step: functions, data and physics points
OPERATOR_RESUME = [
    "problem=diffusion_reaction",
    "problem.n_train=8",
    "problem.n_test=3",
    "problem.nx=21",
    "problem.nt=21",
    "problem.n_domain=16",
    "problem.functions_per_step=4",
    "problem.physics_points_per_function=5",
    "problem.supervised=true",
    "problem.data_points_per_function=7",
    "model.branch_hidden=[16]",
    "model.trunk_hidden=[16]",
    "model.latent=16",
    "++optimizer.scheduler=null",  # the recipe's decay rate depends on max_steps (3 vs 6 here)
]


@pytest.mark.parametrize("problem", ["burgers", "diffusion_reaction"])
@pytest.mark.parametrize("precision", ["fp32", "mixed"])
def test_resume_continues_exactly_where_the_run_stopped(
    tiny_config, tmp_path, monkeypatch, problem, precision
):
    """3 steps, then resume=<that folder> up to 6 steps: the same weights, optimizer moments and
    loss scale as 6 uninterrupted steps (the DataModule's loader resumes at the next step, and
    what a step trains on is seeded by the step)."""
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    common = [f"precision={precision}", *(OPERATOR_RESUME if problem != "burgers" else [])]
    straight = run(tiny_config(*common, "trainer.max_steps=6"))
    stopped = run(tiny_config(*common, "trainer.max_steps=3"))
    resumed = run(tiny_config(*common, "trainer.max_steps=6", f"resume={stopped['output_dir']}"))
    assert resumed["resumed_from"].endswith("checkpoints/last.ckpt")
    assert resumed["steps"] == 6 and resumed["l2"] == straight["l2"]
    # the record of the steps before the resume is carried over, not lost
    assert resumed["checkpoint_step"] == straight["checkpoint_step"] == 6
    for key in ("measurements", "skipped_steps", "skip_reasons"):
        assert resumed["precision"][key] == straight["precision"][key], key
    finals = assert_same_final_weights(straight, resumed)
    assert finals[0]["optimizer_states"][0]["state"][0]["exp_avg_sq"].equal(
        finals[1]["optimizer_states"][0]["state"][0]["exp_avg_sq"]
    )


def test_resume_from_a_missing_checkpoint_names_the_key(tiny_config, tmp_path):
    with pytest.raises(ConfigError, match=r"^resume=.*checkpoints/last\.ckpt"):
        run(tiny_config(f"resume={tmp_path / 'nowhere'}"))
