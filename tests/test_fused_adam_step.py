"""Checks of the fused compiled step (`modules.fused_adam_step`): the Taylor forward, the weight
gradient and Adam's update in one compiled call must train exactly as the eager step does, skip
what the plugin skips, and stand aside where a step needs the gradient before the update.

Compiled with `aot_eager` as in tests/test_compiled_step.py (capture and AOT autograd, no C++).
"""

from __future__ import annotations

import copy
import math
import pickle
from types import SimpleNamespace

import pytest
import torch
from test_compiled_step import (
    AOT,
    TINY_BURGERS,
    _one_thread,  # noqa: F401 (autouse there and here: one thread)
    assert_same_training,
    train,
)

from mpsciml.compose import build
from mpsciml.modules import fused_adam_step
from mpsciml.modules.fused_adam_step import adam_scalars, adam_update_

SCHEDULER = (
    "optimizer.scheduler={_target_: torch.optim.lr_scheduler.ExponentialLR, _partial_: true,"
    " gamma: 0.8}"
)


@pytest.mark.parametrize("implementation", ["for-loop", "fused"])
def test_adam_update_is_torch_adam(implementation: str) -> None:
    """Ten steps with a learning rate that moves (as a scheduler moves it): the weights are
    torch's Adam's to the bit (evaluated eagerly, op by op); a step not applied leaves the
    count, both moments and the weights exactly as they were."""
    torch.manual_seed(0)
    shapes = [(5, 3), (3,)]
    ours = [torch.randn(shape) for shape in shapes]
    theirs = [p.clone().requires_grad_(True) for p in ours]
    options = {"fused": True} if implementation == "fused" else {"foreach": False}
    adam = torch.optim.Adam(theirs, lr=3e-3, betas=(0.8, 0.95), eps=1e-6, **options)
    state = [(torch.zeros(()), torch.zeros_like(p), torch.zeros_like(p)) for p in ours]
    for step in range(10):
        lr = 3e-3 * 0.9**step
        adam.param_groups[0]["lr"] = lr
        grads = [torch.randn(shape) * 10.0**-step for shape in shapes]
        for param, grad in zip(theirs, grads, strict=True):
            param.grad = grad.clone()
        adam.step()
        kernel = implementation == "fused"
        values = adam_scalars(lr, (0.8, 0.95), 1e-6, float(state[0][0]), kernel)
        scalars = torch.tensor(values, dtype=torch.float64)
        adam_update_(ours, grads, state, scalars, torch.tensor(True), kernel)
        for mine, torch_param in zip(ours, theirs, strict=True):
            assert torch.equal(mine, torch_param.detach()), f"step {step}: {mine - torch_param}"
    for (count, avg, sq), param in zip(state, theirs, strict=True):
        torch_state = adam.state[param]
        assert float(count) == float(torch_state["step"]) == 10.0
        torch.testing.assert_close(avg, torch_state["exp_avg"], rtol=1e-6, atol=0)
        torch.testing.assert_close(sq, torch_state["exp_avg_sq"], rtol=1e-6, atol=0)
    before = [t.clone() for t in [*ours, *(x for s in state for x in s)]]
    nan_grads = [torch.full(shape, math.nan) for shape in shapes]
    scalars = torch.tensor(adam_scalars(1e-3, (0.8, 0.95), 1e-6, 10.0, False), dtype=torch.float64)
    adam_update_(ours, nan_grads, state, scalars, torch.tensor(False))
    after = [*ours, *(x for s in state for x in s)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def whole_gradient_errors(eager: dict, fused: dict) -> list[float]:
    """Per applied step: |g_fused - g_eager| / |g_eager| over all weights at once (2-norms)."""
    errors = []
    for grads, fused_grads in zip(eager["grads"], fused["grads"], strict=True):
        if not grads:  # a skipped step: no gradient kept
            continue
        a = torch.cat([g.flatten() for g in grads])
        b = torch.cat([g.flatten() for g in fused_grads])
        errors.append(float((a - b).norm() / a.norm()))
    return errors


@pytest.mark.parametrize("adam_fused", ["false", "null"])
def test_the_fused_step_trains_like_eager(tiny_config, adam_fused: str) -> None:
    """fp32 Burgers with a moving learning rate and the precision monitor measuring every third
    step, with torch's for-loop Adam and with its fused kernel (the default): every step after
    the precision probe's is fused, in one graph compiled once, and the losses (1e-6), the
    whole gradient (1e-6), weights, Adam's state and the monitor's measurements are the eager
    Taylor step's. The update is torch's to the bit (above), but AOT autograd's decompositions
    (lerp, where) round some weight's last bit differently in some steps; the output bias's
    gradient, one sum of cancelling terms, turns that into ~2e-6 of its own size within 8
    steps, so per tensor 1e-5. A copy or a pickle carries no compiled function."""
    common = [*TINY_BURGERS, "trainer.max_steps=8", SCHEDULER, "precision.diagnostics_every=3"]
    common.append(f"optimizer.adam.fused={adam_fused}")
    eager = train(tiny_config(*common, "derivatives=taylor"))
    fused = train(tiny_config(*common, *AOT))
    assert_same_training(eager, fused, rel=1e-6, grad_rel=1e-5)
    assert max(whole_gradient_errors(eager, fused)) <= 1e-6
    module = fused["module"]
    facts = module.compile_facts()
    assert facts["fused_steps"] == 7 and facts["fused_refusal"] is None, facts
    assert facts["compile_steps"] == [1] and facts["recompiles"] == 0, facts
    assert facts["graph_breaks"] == 0 and module.compiled.compiles == 0  # no unfused step
    states = [r["module"].optimizers().optimizer.state_dict()["state"] for r in (eager, fused)]
    for index, eager_state in states[0].items():
        assert float(states[1][index]["step"]) == float(eager_state["step"]) == 8.0
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(states[1][index][key], eager_state[key], rtol=1e-5, atol=0)
    measured = [r["module"].trainer.precision_plugin.last_measurement for r in (eager, fused)]
    assert measured[0].keys() == measured[1].keys() >= {"lost_update_fraction", "grad_nonfinite"}
    assert measured[0] == pytest.approx(measured[1], rel=1e-6, abs=1e-9)
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert clone.fused is not None and clone.fused.compiled._compiled is None
        assert clone.fused.module is clone and clone.fused.terms.pinn is clone


def test_a_nonfinite_step_is_skipped_as_eager_skips_it(tiny_config) -> None:
    """A NaN collocation point at step 4: the fused step leaves weights and Adam's state alone
    and the plugin counts the skip, as in the eager step; training then goes on alike."""

    def poison(module) -> None:
        def points(batch):
            if module.global_step != 4:
                return batch
            batch = dict(batch)
            batch["pde"] = batch["pde"].clone()
            batch["pde"][0, 0] = math.nan
            return batch

        module.adapt_points = points

    common = [*TINY_BURGERS, "trainer.max_steps=7"]
    eager = train(tiny_config(*common, "derivatives=taylor"), prepare=poison)
    fused = train(tiny_config(*common, *AOT), prepare=poison)
    assert eager["skips"] == fused["skips"] == {"gradient_overflow": 1}
    assert math.isnan(eager["losses"][4]) and math.isnan(fused["losses"][4])
    assert_same_training(eager, fused, rel=1e-6, grad_rel=1e-5)  # as above
    assert max(whole_gradient_errors(eager, fused)) <= 1e-6
    assert fused["module"].compile_facts()["fused_steps"] == 6
    states = [r["module"].optimizers().optimizer.state_dict()["state"] for r in (eager, fused)]
    for index, eager_state in states[0].items():  # 7 steps, one of them skipped
        assert float(states[1][index]["step"]) == float(eager_state["step"]) == 6.0


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (["precision.compare_every=2"], "GradientAgreement.on_before_optimizer_step"),
        (["precision=bf16_mixed"], "precision is not a full one"),
    ],
)
def test_a_step_that_needs_the_gradient_is_not_fused(tiny_config, overrides, refusal) -> None:
    """The compiled-loss step runs instead (and compiles), and the run says why."""
    fused = train(tiny_config(*TINY_BURGERS, *AOT, *overrides))
    facts = fused["module"].compile_facts()
    assert facts["fused_steps"] == 0 and refusal in facts["fused_refusal"], facts
    assert fused["module"].compiled.compiles >= 1


def test_what_the_formula_does_not_implement_is_refused(tiny_config, monkeypatch) -> None:
    """Adam options the fused update does not implement, another optimizer (L-BFGS's phase),
    clipping, several processes: refused in one phrase each, before anything compiles."""
    module, _, _ = build(tiny_config(*TINY_BURGERS, *AOT))
    assert module.fused is not None
    params = list(module.parameters())
    trainer = SimpleNamespace(gradient_clip_val=None, callbacks=[])
    plugin = SimpleNamespace(
        spec=SimpleNamespace(is_full=True),
        autocast_dtype=None,
        grad_scaler=None,
        fp16_scaler=None,
        derivative_scaler=None,
    )
    assert module.fused.refusal(torch.optim.Adam(params), trainer, plugin) == ""
    cases = {
        "Adam's weight_decay=0.1": torch.optim.Adam(params, weight_decay=0.1),
        "Adam's amsgrad=True": torch.optim.Adam(params, amsgrad=True),
        "Adam's maximize=True": torch.optim.Adam(params, maximize=True),
        "AdamW is not torch.optim.Adam": torch.optim.AdamW(params),
        "LBFGS is not torch.optim.Adam": torch.optim.LBFGS(params),
        "Adam trains a tensor that is not the module's parameter": torch.optim.Adam(
            [torch.zeros(2, requires_grad=True)]
        ),
    }
    for reason, optimizer in cases.items():
        assert module.fused.refusal(optimizer, trainer, plugin) == reason
    clipping = SimpleNamespace(gradient_clip_val=1.0, callbacks=[])
    assert module.fused.refusal(torch.optim.Adam(params), clipping, plugin) == "gradient clipping"
    monkeypatch.setattr(fused_adam_step, "world_size", lambda: 2)
    refusal = module.fused.refusal(torch.optim.Adam(params), trainer, plugin)
    assert refusal.startswith("several processes")
