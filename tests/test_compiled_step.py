"""Checks of `compile=true`: the compiled PINN step must train exactly like the eager Taylor step.

The default suite compiles with `backend="aot_eager"` (dynamo's capture and AOT autograd, no code
generation, no C++ compiler): that proves one graph without breaks, no recompiles where there
should be none, and equality to eager; each compile still costs seconds, so only two runs compile
here. The inductor run (generated C++ code) and the longer paths (Navier-Stokes, bf16_mixed,
precision switches, L-BFGS, resume) are slow tests.
"""

from __future__ import annotations

import copy
import math
import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
import torch._inductor.config
from omegaconf import DictConfig
from torch import Tensor

from mpsciml.compose import build
from mpsciml.config import ConfigError
from mpsciml.derivatives import taylor
from mpsciml.modules.compiled_loss import (
    CompiledLoss,
    check_compile_options,
    compile_options,
    resolve_cpp_wrapper,
)
from mpsciml.modules.pinn import PINNModule

AOT = ["compile=true", "compile_backend=aot_eager"]
#: the C++ compiler inductor calls on the CPU ($CXX, else its configured one), if installed
CXX = shutil.which(os.environ.get("CXX") or torch._inductor.config.cpp.cxx[-1] or "g++")
TINY_BURGERS = ["model.hidden=[8]", "problem.n_boundary=8", "problem.n_initial=8"]
TINY_NS = ["problem=navier_stokes", "model.hidden=[8]", "problem.n_boundary=16"]
TINY_NS += ["problem.n_outlet=8", "optimizer=adam"]  # the recipe's L-BFGS phase: its own test


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny networks: threads only wait for each other on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Record(pl.Callback):
    """Every step's total loss and weight gradients (of its last closure; none for a skipped
    step, whose gradients the plugin drops)."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grads: list[list[Tensor]] = []

    def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
        self.losses.append(float(module.last_terms["total"]))
        self.grads.append([p.grad.clone() for p in module.parameters() if p.grad is not None])


def train(cfg: DictConfig, prepare: Callable[[PINNModule], None] | None = None) -> dict[str, Any]:
    module, trainer, parts = build(cfg)
    if prepare is not None:
        prepare(module)
    record = Record()
    trainer.callbacks.append(record)
    trainer.fit(module, datamodule=parts["datamodule"])
    plugin = trainer.precision_plugin
    return {
        "module": module,
        "losses": record.losses,
        "grads": record.grads,
        "params": [p.detach().clone() for p in module.parameters()],
        "skips": dict(plugin.skip_reasons),
        "seeds": dict(plugin.derivative_scaler.scales) if plugin.derivative_scaler else None,
    }


def relative_error(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |a|: relative to the tensor's scale, robust near its zeros."""
    return (a - b).abs().max().item() / max(a.abs().max().item(), 1e-30)


def assert_same_training(
    eager: dict[str, Any],
    compiled: dict[str, Any],
    rel: float,
    grad_rel: float | None = None,
    grad_steps: int | None = None,
    weights: bool = True,
) -> None:
    """Losses at every step to `rel`, weight gradients at every step (the first `grad_steps`)
    to `grad_rel` (default `rel`) and the final weights to `grad_rel`, each of its scale."""
    grad_rel = rel if grad_rel is None else grad_rel
    assert len(eager["losses"]) == len(compiled["losses"]) > 0
    for step, (a, b) in enumerate(zip(eager["losses"], compiled["losses"], strict=True)):
        if not math.isfinite(a):  # a skipped step's (overflowed) loss
            assert a == b or (math.isnan(a) and math.isnan(b)), f"step {step}: {b} != eager {a}"
            continue
        assert abs(a - b) <= rel * abs(a), f"step {step}: loss {b} != eager {a}"
    steps = list(zip(eager["grads"], compiled["grads"], strict=True))[:grad_steps]
    assert sum(len(grads) for grads, _ in steps) > 0, "no step was applied"
    for step, (grads, compiled_grads) in enumerate(steps):
        assert len(grads) == len(compiled_grads), f"step {step}: skipped in one run only"
        for a, b in zip(grads, compiled_grads, strict=True):
            error = relative_error(a, b)
            assert error <= grad_rel, f"step {step}: gradient {error:.2e}"
    for a, b in zip(eager["params"], compiled["params"], strict=True):
        assert not weights or relative_error(a, b) <= grad_rel, f"weights {relative_error(a, b)}"


def test_compiled_burgers_trains_like_eager_without_recompiling_on_resampling(tiny_config):
    """fp32, fresh points every 2 steps: the same losses and gradients as the eager Taylor step
    (derivatives=autograd asked: compile runs Taylor mode, recorded), one graph, no breaks and
    no recompile when the points change (same shapes). The first step is the precision probe's
    (its forward hook needs the real forward), so the compile happens at step 1."""
    common = [*TINY_BURGERS, "trainer.max_steps=8", "resample_every=2"]
    eager = train(tiny_config(*common, "derivatives=taylor"))
    compiled = train(tiny_config(*common, *AOT, "derivatives=autograd"))
    assert_same_training(eager, compiled, rel=1e-6)
    module = compiled["module"]
    facts = module.compile_facts()
    assert facts["compile_steps"] == [1] and facts["recompiles"] == 0
    assert facts["graph_breaks"] == 0 and facts["backend"] == "aot_eager"
    assert facts["compile_seconds"] > 0 and eager["module"].compile_facts() == {"enabled": False}
    engine = module.derivative_engine
    assert (engine.requested, engine.used) == ("autograd", "taylor") and "compile" in engine.reason
    # neither a copy nor a pickle carries the compiled function: a copy compiles its own
    for clone in (copy.deepcopy(module), pickle.loads(pickle.dumps(module))):
        assert clone.compiled is not None and clone.compiled._compiled is None
        assert clone.compiled.function.__self__ is clone
    assert "compiled" not in module.state_dict() and not module.hparams


def _narrow_fp16_first_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp16 made 2^20 times narrower for the first-derivative streams: a stream entry of
    magnitude >= 2^-4 overflows (x 2^20 > 65504), the others come back exact (/ 2^20). Which
    steps overflow then depends on the seed the derivative scaler chose, as in a real overflow."""
    original = taylor.taylor_forward

    def narrow(*args: Any, **kwargs: Any) -> taylor.TaylorStreams:
        streams = original(*args, **kwargs)
        if streams.first is not None and streams.first.dtype == torch.float16:
            streams.first = streams.first * 2.0**20 / 2.0**20
        return streams

    monkeypatch.setattr(taylor, "taylor_forward", narrow)


def test_compiled_mixed_step_is_skipped_on_derivative_overflow_like_eager(tiny_config, monkeypatch):
    """Navier-Stokes in fp16 autocast with overflowing derivative streams: the same skips, the
    same backed-off seeds and the same losses as eager; the seeds are tensors, so the scaler
    moving them recompiles nothing."""
    _narrow_fp16_first_streams(monkeypatch)
    common = [*TINY_NS, "precision=mixed", "precision.init_scale=1024", "trainer.max_steps=8"]
    eager = train(tiny_config(*common))
    compiled = train(tiny_config(*common, *AOT))
    assert eager["skips"].get("derivative_overflow", 0) >= 1
    assert compiled["skips"] == eager["skips"] and compiled["seeds"] == eager["seeds"]
    assert min(compiled["seeds"].values()) < 1.0
    assert_same_training(eager, compiled, rel=1e-3)  # fp16 arithmetic, regrouped by AOT
    assert compiled["module"].compile_facts()["recompiles"] == 0


def test_compile_refusals_are_one_line(tiny_config):
    with pytest.raises(ConfigError, match=r"^compile=true needs Taylor.*model=fourier_mlp"):
        build(tiny_config("compile=true", "model=fourier_mlp"))
    with pytest.raises(ConfigError, match=r"^compile_backend='nosuch' is unknown; allowed: "):
        build(tiny_config("compile=true", "compile_backend=nosuch"))
    with pytest.raises(ConfigError, match=r"^compile_mode='fast' is unknown"):
        build(tiny_config("compile=true", "compile_mode=fast"))
    with pytest.raises(ValueError, match="inductor only"):
        check_compile_options("aot_eager", "reduce-overhead")
    with pytest.raises(ConfigError, match=r"^compile=true compiles the PINN step of pointwise"):
        build(tiny_config("compile=true", "problem=diffusion_reaction", "problem.n_train=8"))
    with pytest.raises(ConfigError, match=r"^compile_cpp_wrapper='yes' is unknown; allowed: auto"):
        build(tiny_config("compile=true", "compile_cpp_wrapper=yes"))
    with pytest.raises(ConfigError, match=r"^compile_cpp_wrapper=true applies to .*inductor only"):
        build(tiny_config(*AOT, "compile_cpp_wrapper=true"))


def test_the_cpp_wrapper_is_on_for_inductor_on_a_cpu_only_unless_asked(tiny_config):
    """auto: inductor on a CPU only (measured there); the run's compiled functions get it."""
    assert resolve_cpp_wrapper("auto", "inductor", "cpu") is True
    assert resolve_cpp_wrapper("auto", "inductor", "cuda") is False
    assert resolve_cpp_wrapper("auto", "aot_eager", "cpu") is False
    assert resolve_cpp_wrapper(True, "inductor", "cuda") is True
    assert resolve_cpp_wrapper(False, "inductor", "cpu") is False
    module, _, _ = build(tiny_config("compile=true"))  # inductor, the CPU
    assert module.compiled.cpp_wrapper and module.fused.compiled.cpp_wrapper
    assert module.compile_facts()["cpp_wrapper"] is True
    module, _, _ = build(tiny_config(*AOT))
    assert module.compile_facts()["cpp_wrapper"] is False
    module, _, _ = build(tiny_config("compile=true", "compile_cpp_wrapper=false"))
    assert not module.compiled.cpp_wrapper
    module, _, _ = build(tiny_config("compile_cpp_wrapper=yes"))  # not compiled: not read,
    assert module.compiled is None  # as compile_mode is not


def test_with_the_cpp_wrapper_a_mode_becomes_its_options():
    """torch.compile takes a mode or options, not both: the mode's options plus the wrapper."""
    assert compile_options("inductor", "max-autotune", False) == {
        "backend": "inductor",
        "mode": "max-autotune",
    }
    options = compile_options("inductor", "max-autotune-no-cudagraphs", True)["options"]
    assert options["cpp_wrapper"] is True and options["max_autotune"] is True
    assert compile_options("inductor", None, True) == {
        "backend": "inductor",
        "options": {"cpp_wrapper": True},
    }


def test_a_residual_with_mixed_partials_is_refused(tiny_config):
    module, _, _ = build(tiny_config("derivatives=taylor"))
    module._carry["pde"] = frozenset({("x",), ("x", "t")})
    with pytest.raises(ValueError, match=r"^compile=true: condition pde asks for d/dxdt"):
        module._check_compilable()


def test_compiled_loss_counts_compiles_and_is_lazy():
    calls = CompiledLoss(lambda x, k: x * k, backend="aot_eager")
    assert calls._compiled is None
    x = torch.ones(3)
    calls.begin_step(0)
    calls(x, 2.0)
    calls.end_step()
    calls.begin_step(1)
    calls(x + 1, 2.0)  # the same shapes: no compile
    calls.end_step()
    calls.begin_step(2)
    calls(x, 3.0)  # a Python number is a constant of the graph: a recompile
    calls.end_step()
    facts = calls.facts()
    assert facts["compile_steps"] == [0, 2] and facts["recompiles"] == 1
    assert facts["compile_seconds"] > 0 and facts["graph_breaks"] == 0


# ------------------------------------------------------------------ slow: longer or costlier


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16_mixed"])
def test_compiled_navier_stokes_trains_like_eager(tiny_config, precision):
    common = [*TINY_NS, f"precision={precision}", "trainer.max_steps=10"]
    eager = train(tiny_config(*common))
    compiled = train(tiny_config(*common, *AOT))
    assert_same_training(eager, compiled, rel=1e-6 if precision == "fp32" else 1e-2)
    assert compiled["module"].compile_facts()["recompiles"] == 0


@pytest.mark.slow
def test_precision_switches_and_lbfgs_recompile_a_bounded_number_of_times(tiny_config):
    """mixed, a schedule to fp32 at step 3, L-BFGS from step 6 (several closures per step):
    trains as eager does, recompiling once for the autocast change."""
    common = [
        *TINY_BURGERS,
        "precision=mixed",
        "optimizer=adam_lbfgs",
        "optimizer.switch_step=6",
        "trainer.max_steps=8",
        "+precision.schedule=[{step: 3, precision: fp32}]",
    ]
    eager = train(tiny_config(*common))
    compiled = train(tiny_config(*common, *AOT))
    # the fp16 steps' differences (the compiled backward sums a weight's gradient contributions
    # in fp32, eager autocast in its one fp16 copy: ~1e-4) are what L-BFGS then amplifies
    assert_same_training(eager, compiled, rel=1e-2, grad_rel=1e-3, grad_steps=6, weights=False)
    facts = compiled["module"].compile_facts()
    assert facts["recompiles"] <= 2 and facts["compile_steps"][0] == 1, facts


@pytest.mark.slow
def test_a_compiled_run_resumes_from_its_checkpoint(tiny_config, tmp_path):
    from mpsciml.train import run

    common = [*TINY_BURGERS, *AOT]
    straight = run(tiny_config(*common, "trainer.max_steps=6"))
    stopped = run(tiny_config(*common, "trainer.max_steps=3"))
    resumed = run(tiny_config(*common, "trainer.max_steps=6", f"resume={stopped['output_dir']}"))
    # not bitwise: the first step after the resume is the precision probe's, through autograd
    assert resumed["steps"] == 6 and resumed["compile"]["enabled"]
    assert abs(resumed["l2"]["u"] - straight["l2"]["u"]) <= 1e-6 * straight["l2"]["u"]


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="inductor needs a C++ compiler on the CPU")
@pytest.mark.parametrize("cpp_wrapper", [True, False])
def test_inductor_burgers_trains_like_eager_over_200_steps(tiny_config, cpp_wrapper):
    """Generated C++ code regroups sums (over the points, over the streams), so gradients agree
    to fp32 rounding of such sums (measured: 1e-6 to 6e-6 in the first 10 steps, losses 4e-7
    over 200 steps, weights 5e-6); later gradients are small differences of large terms and
    drift further apart relative to their own size (3e-2 at step 96), the losses do not. The
    C++ wrapper (the CPU's default) and the Python one call the same kernels."""
    common = [*TINY_BURGERS, "model.hidden=[20,20,20]", "trainer.max_steps=200"]
    eager = train(tiny_config(*common, "derivatives=taylor"))
    wrapper = f"compile_cpp_wrapper={str(cpp_wrapper).lower()}"
    compiled = train(tiny_config(*common, "compile=true", wrapper))
    assert_same_training(eager, compiled, rel=1e-6, grad_rel=2e-5, grad_steps=10)
    facts = compiled["module"].compile_facts()
    assert facts["recompiles"] == 0 and facts["cpp_wrapper"] is cpp_wrapper


@pytest.mark.slow
@pytest.mark.skipif(CXX is None, reason="inductor needs a C++ compiler on the CPU")
def test_the_cpp_wrapper_runs_the_mixed_compiled_loss_as_the_python_wrapper_does(tiny_config):
    """fp16 autocast with loss and derivative scaling: the compiled-loss step (not the fused
    one), its backward through AOT autograd; the C++ wrapper calls the same kernels, so the two
    runs train alike: losses and gradients, skips and derivative seeds over 30 steps."""
    common = [*TINY_BURGERS, "precision=mixed", "trainer.max_steps=30", "compile=true"]
    runs = [train(tiny_config(*common, f"compile_cpp_wrapper={w}")) for w in ("true", "false")]
    assert [r["module"].compile_facts()["cpp_wrapper"] for r in runs] == [True, False]
    assert runs[0]["module"].compile_facts()["fused_refusal"] == "precision is not a full one"
    assert_same_training(runs[1], runs[0], rel=1e-6, grad_rel=1e-5)
    assert runs[0]["skips"] == runs[1]["skips"] and runs[0]["seeds"] == runs[1]["seeds"]


def _pinn_step(compiled: bool) -> dict[str, Any]:
    """One closure of a Burgers PINN (33 / 7 / 9 points, split unevenly over the ranks): the
    global terms and the rank-averaged gradients, as DDP would average them."""
    from distributed_harness import one_step

    from mpsciml.data.points import CollocationPoints
    from mpsciml.problems.burgers import Burgers

    problem = Burgers(n_domain=33, n_boundary=7, n_initial=9, evaluation_grid=(8, 4))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    adam = DictConfig({"adam": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}})
    module = PINNModule(
        problem, model, adam, derivatives="taylor", compile=compiled, compile_backend="aot_eager"
    )
    datamodule = CollocationPoints(problem, seed=0, max_steps=2)
    return one_step(lambda: (module, datamodule))


def _compiled_rank(rank: int, world_size: int) -> dict[str, Any]:
    return _pinn_step(compiled=True)


@pytest.mark.slow
def test_compiled_step_under_two_ranks_is_the_one_process_step():
    """Under DDP the compiled part returns the squares and `global_means` (an all-reduce of the
    counts) runs eagerly after it: two uneven ranks give one eager process's terms and
    gradients."""
    from distributed_harness import run_ranks

    ranks = run_ranks(_compiled_rank, 2, timeout=300)
    single = _pinn_step(compiled=False)
    for result in ranks:
        for name, value in single["terms"].items():
            torch.testing.assert_close(result["terms"][name], value, rtol=1e-6, atol=1e-7)
        for got, want in zip(result["grads"], single["grads"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
