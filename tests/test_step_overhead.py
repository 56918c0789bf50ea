"""The framework's per-step overhead (issue 15): what a step does besides the step.

No timing is asserted here (a shared CI machine cannot time fairly); what is asserted is what
makes the step cheap and must stay true: no `self.log` on steps Lightning does not write, a
progress bar that reads the loss the step kept (one `.item()` per redraw) and shows it, Adam's
fused implementation where it computes what the loop computes, equal to the loop, and the
one-kernel gradient check that still skips a non-finite step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger

from mpsciml.callbacks.progress import LossProgressBar
from mpsciml.callbacks.step_timer import StepTimer
from mpsciml.compose import build
from mpsciml.modules.optimizer_impl import adam_keywords, implementation
from mpsciml.precision.loss_scaler import DynamicLossScaler, unscale_and_check
from mpsciml.problems.burgers import Burgers

FORCE_LOOP = "++optimizer.adam.fused=false"  # ++: whether or not conf/ has the key yet


@pytest.fixture(autouse=True)
def one_thread():
    """As `threads: auto` gives these tiny networks in a real run (train.run): two OpenMP threads
    on a busy 2-core machine can make each tiny step 10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Record(pl.Callback):
    """After every step (and after the bar, which comes first in the list): the step, the loss
    the step kept and what the bar holds."""

    def __init__(self, bar: LossProgressBar | None = None) -> None:
        self.bar = bar
        self.rows: list[tuple[int, float, float | None]] = []

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        shown = self.bar.loss if self.bar is not None else None
        self.rows.append((trainer.global_step, float(module.last_terms["total"]), shown))


def fit_with_bar(tiny_config, tmp_path: Path, steps: int, log_every: int, refresh: int, *extra):
    """A run's module and data from compose, trained by a Trainer with our bar (compose adds
    it for `trainer.enable_progress_bar=true`; built here so the test owns the callbacks)."""
    module, built, parts = build(tiny_config(f"trainer.max_steps={steps}", *extra))
    plugin = built.precision_plugin  # the run's own, as compose made it
    bar = LossProgressBar(refresh_rate=refresh)
    record = Record(bar)
    calls: list[tuple[str, int]] = []
    real_log = module.log

    def counted_log(name: str, *args: Any, **kwargs: Any) -> None:
        calls.append((name, module.trainer.global_step))
        real_log(name, *args, **kwargs)

    module.log = counted_log  # type: ignore[method-assign]
    trainer = pl.Trainer(
        max_steps=steps,
        log_every_n_steps=log_every,
        callbacks=[StepTimer(), bar, record],
        logger=CSVLogger(tmp_path / "logs"),
        plugins=[plugin],
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        inference_mode=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=parts["datamodule"])
    return module, bar, record, calls


def test_with_the_bar_on_values_are_logged_only_on_written_steps(tiny_config, tmp_path):
    module, _, _, calls = fit_with_bar(tiny_config, tmp_path, 10, 5, 3)
    assert calls, "nothing was logged at all"
    assert {step for _, step in calls} == {5, 10}  # log_every_n_steps=5: steps 5 and 10 only
    names = {name for name, _ in calls}
    assert {"train/loss", "perf/step_ms"} <= names
    assert {f"train/loss_{t}" for t in module.term_names} <= names


def test_the_bar_shows_the_loss_the_step_kept_read_once_per_redraw(tiny_config, tmp_path):
    module, bar, record, _ = fit_with_bar(tiny_config, tmp_path, 10, 10, 3)
    redraws = [(step, loss, shown) for step, loss, shown in record.rows if step % 3 == 0]
    assert [step for step, _, _ in redraws] == [3, 6, 9]
    assert all(shown == loss for _, loss, shown in redraws)  # the value of that very step
    assert bar.loss_reads == 4  # steps 3, 6, 9 and the epoch's last, 10
    assert bar.loss == record.rows[-1][1]
    # between redraws the bar keeps the last value it read: it did not read the loss again
    assert record.rows[3][2] == record.rows[2][1]
    assert bar.get_metrics(module.trainer, module)["loss"] == bar.loss
    assert "loss=" in str(bar.train_progress_bar)


def test_a_refresh_rate_below_one_is_refused():
    with pytest.raises(ValueError, match="refresh_rate=0"):
        LossProgressBar(refresh_rate=0)


def test_unscale_and_check_finds_every_non_finite_and_leaves_finite_gradients_alone():
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        grads = [torch.linspace(-3, 3, 7, dtype=dtype), torch.ones(2, 3, dtype=dtype)]
        before = [g.clone() for g in grads]
        assert unscale_and_check(grads) is True
        assert all(torch.equal(g, b) for g, b in zip(grads, before, strict=True))
        for bad in (float("inf"), -float("inf"), float("nan")):
            broken = [g.clone() for g in grads]
            broken[1][1, 2] = bad
            assert unscale_and_check(broken) is False, (dtype, bad)
    assert unscale_and_check([]) is True
    mixed = [torch.ones(3), torch.ones(3, dtype=torch.float16), torch.ones(2, dtype=torch.cfloat)]
    assert unscale_and_check(mixed) is True
    mixed[2][1] = complex(0.0, float("nan"))
    assert unscale_and_check(mixed) is False
    halves = [torch.full((4,), 2.0, dtype=torch.float16)]
    assert unscale_and_check(halves, 0.25) and torch.equal(
        halves[0], torch.full_like(halves[0], 0.5)
    )


def test_the_fp16_scaler_does_not_divide_an_overflowed_step():
    scaler = DynamicLossScaler(init_scale=4.0)
    weight = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))
    weight.grad = torch.tensor([8.0, float("inf"), 2.0], dtype=torch.float16)
    assert scaler.unscale_([weight]) is False
    assert weight.grad[0] == 8.0  # untouched, as before: the step is skipped anyway
    weight.grad = torch.tensor([8.0, 4.0, 2.0], dtype=torch.float16)
    assert scaler.unscale_([weight]) is True
    assert weight.grad.tolist() == [2.0, 1.0, 0.5]


class Weights(pl.Callback):
    """The weights after every step, and a switch that poisons the batch of one step."""

    def __init__(self, poison_batch: int) -> None:
        self.poison_batch = poison_batch
        self.poisoned = False
        self.after: list[list[torch.Tensor]] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, idx: int) -> None:
        self.poisoned = idx == self.poison_batch

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any) -> None:
        self.after.append([p.detach().clone() for p in module.parameters()])


def poison_pde(monkeypatch: pytest.MonkeyPatch, weights: Weights, value: float) -> None:
    """Burgers' PDE residual times `value` (inf, nan) on the batch `weights` poisons."""
    original = Burgers.pde

    def pde(self, d):
        residual = original(self, d)
        return residual * value if weights.poisoned else residual

    monkeypatch.setattr(Burgers, "pde", pde)


def test_an_fp32_step_with_a_nan_gradient_is_skipped_and_changes_nothing(tiny_config, monkeypatch):
    weights = Weights(poison_batch=1)
    poison_pde(monkeypatch, weights, float("nan"))
    module, trainer, parts = build(tiny_config("trainer.max_steps=3", "precision=fp32"))
    trainer.callbacks.append(weights)
    trainer.fit(module, datamodule=parts["datamodule"])
    assert trainer.precision_plugin.skip_reasons == {"gradient_overflow": 1}
    first, second, third = weights.after
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))  # skipped
    assert not all(torch.equal(a, b) for a, b in zip(second, third, strict=True))  # and on


def weights_after(tiny_config, *overrides: str) -> tuple[list[torch.Tensor], Any, Any]:
    quiet = ("trainer.max_steps=20", "val_every=20", "trainer.log_every_n_steps=20", "logger=none")
    module, trainer, parts = build(tiny_config(*quiet, *overrides))
    trainer.fit(module, datamodule=parts["datamodule"])
    return [p.detach().clone() for p in module.parameters()], module, trainer


def test_fused_adam_is_chosen_for_fp32_and_trains_like_the_loop(tiny_config):
    fused, module, _ = weights_after(tiny_config)
    loop, looped, _ = weights_after(tiny_config, FORCE_LOOP)
    assert module.optimizer_impl == "fused"
    assert module.optimizers().optimizer.param_groups[0]["fused"] is True
    assert looped.optimizer_impl == "for-loop"  # torch's CPU default: the previous behaviour
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_under_mixed_precision_fused_adam_skips_with_the_grad_scaler_like_the_loop(
    tiny_config, monkeypatch
):
    """GradScaler hands a fused optimizer its scale and found-inf flag instead of checking
    itself: an overflowing step must still be skipped (and the scale halved) exactly as with
    the loop, and the other steps equal."""
    weights = Weights(poison_batch=3)
    poison_pde(monkeypatch, weights, float("inf"))
    runs = []
    for extra in ((), (FORCE_LOOP,)):
        module, trainer, parts = build(
            tiny_config("trainer.max_steps=10", "val_every=10", "precision=mixed", *extra)
        )
        trainer.callbacks.append(weights)
        trainer.fit(module, datamodule=parts["datamodule"])
        runs.append((weights.after[-1], module, trainer.precision_plugin))
        assert all(torch.equal(a, b) for a, b in zip(*weights.after[2:4], strict=True))
        weights.after = []
    (fused, module, plugin), (loop, looped, loop_plugin) = runs
    assert (module.optimizer_impl, looped.optimizer_impl) == ("fused", "for-loop")
    assert plugin.skip_reasons == loop_plugin.skip_reasons == {"gradient_overflow": 1}
    assert plugin.loss_scale == loop_plugin.loss_scale == 2.0**15
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_half_weights_keep_foreach_and_a_switch_casts_fused_state(tiny_config):
    """Pure fp16/bf16 weights: foreach (fused would compute the update in fp32, another
    training). A schedule from fp32 to bf16 weights keeps the fused Adam chosen at the start,
    its state cast with the weights, and it keeps training."""
    params = [torch.zeros(3, dtype=torch.float16, requires_grad=True)]
    assert adam_keywords(params, None, None) == {"fused": None, "foreach": True}
    assert adam_keywords(params, True, None)["fused"] is True  # asked for: given
    assert adam_keywords([torch.zeros(1, requires_grad=True)], None, False)["foreach"] is False
    _, module, trainer = weights_after(
        tiny_config, "precision=fp32", "precision.schedule=[{step: 10, precision: bf16}]"
    )
    adam = module.optimizers().optimizer
    assert implementation(adam) == "fused"
    assert trainer.precision_plugin.switches == [{"step": 10, "from": "fp32", "to": "bf16"}]
    states = list(adam.state.values())
    assert states and all(s["exp_avg"].dtype == torch.bfloat16 for s in states)
    assert all(p.dtype == torch.bfloat16 and torch.isfinite(p).all() for p in module.parameters())
    assert all(int(s["step"]) == 20 for s in states)  # it stepped on after the switch
    assert module.input_dtype() == torch.bfloat16  # the batch follows the cast weights


def test_the_total_loss_is_bitwise_the_weighted_sum_from_zero(tiny_config):
    """`total_loss` skips the multiplications by 1 and the start at 0.0: nothing changes."""
    module, _, _ = build(tiny_config("loss_weights={ic: 2.5}"))
    torch.manual_seed(0)
    terms = {name: torch.rand((), requires_grad=True) for name in module.term_names}
    total = module.total_loss(terms)
    reference = sum((module.loss_weights[n] * v for n, v in terms.items()), start=0.0)
    assert torch.equal(total, reference)
    grads = torch.autograd.grad(total, list(terms.values()))
    expected = torch.autograd.grad(reference, list(terms.values()))
    assert all(torch.equal(a, b) for a, b in zip(grads, expected, strict=True))
