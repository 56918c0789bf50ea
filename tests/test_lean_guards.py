"""Checks of the fused step's guard filter (`modules.lean_guards`, `compile_guards: lean`): it
drops what cannot change inside a run and keeps what can, so the compiled step is never stale.

Compiled with `aot_eager` as in tests/test_compiled_step.py (the guards are dynamo's, whatever the
backend); that the fused step still trains exactly as eager with the filter on (the default) is
tests/test_fused_adam_step.py.
"""

from __future__ import annotations

import pytest
import torch
from test_compiled_step import (
    AOT,
    TINY_BURGERS,
    _one_thread,  # noqa: F401 (autouse there and here: one thread)
    train,
)

from mpsciml.compose import build
from mpsciml.config import ConfigError
from mpsciml.modules.compiled_loss import compile_options
from mpsciml.modules.fused_adam_step import GUARD_ROOTS as ROOTS
from mpsciml.modules.lean_guards import LeanGuards


@pytest.mark.parametrize(
    ("name", "guard_type", "kept"),
    [
        ("params[0]", "TENSOR_MATCH", True),
        ("self.module._modules['model']._parameters['weight']", "TENSOR_MATCH", True),
        ("", "GLOBAL_STATE", True),
        ("", "GRAD_MODE", True),
        ("", "AUTOGRAD_SAVED_TENSORS_HOOKS", True),
        ("self.module.problem.nu", "CONSTANT_MATCH", True),
        ("self.module._carry['pde']", "CONSTANT_MATCH", True),
        ("self.module.conditions['bc'].values", "CONSTANT_MATCH", True),
        ("names[3]", "CONSTANT_MATCH", True),
        ("kernel", "CONSTANT_MATCH", True),
        ("state", "SEQUENCE_LENGTH", True),
        ("G['torch'].tanh", "BUILTIN_MATCH", False),
        ("G['adam_update_']", "CLOSURE_MATCH", False),
        ("__import__('torch').utils._pytree.SUPPORTED_NODES", "TYPE_MATCH", False),
        ("self.terms._modules", "DICT_KEYS_MATCH", False),
        ("self.module._modules['model']._forward_hooks", "EMPTY_NN_MODULE_HOOKS_DICT", False),
        ("type(self.module._modules['model'])", "CLASS_MATCH", False),
        ("dict(type(self.module.problem).__dict__)['input_names']", "CONSTANT_MATCH", False),
        ("self.module.conditions['pde'].residual.__func__", "CLOSURE_MATCH", False),
        ("paramsets", "CONSTANT_MATCH", False),  # a root's name is not a prefix of any name
    ],
)
def test_what_is_kept_and_what_is_dropped(name: str, guard_type: str, kept: bool) -> None:
    assert LeanGuards(ROOTS).keep(name, guard_type) is kept


def test_the_roots_are_the_fused_steps_arguments_and_the_module() -> None:
    """The step's argument names, read from its signature, and the PINN module."""
    arguments = ("params", "names", "state", "scalars", "weights", "points", "kernel")
    assert (*arguments, "self.module") == ROOTS


def test_the_filter_travels_in_the_options_with_a_mode_as_its_options() -> None:
    """torch.compile takes a mode or options: with a filter, a mode becomes its options."""
    lean = LeanGuards(ROOTS)
    assert compile_options("aot_eager", None, False, lean) == {
        "backend": "aot_eager",
        "options": {"guard_filter_fn": lean},
    }
    options = compile_options("inductor", "max-autotune", False, lean)["options"]
    assert options["guard_filter_fn"] is lean and options["max_autotune"] is True
    options = compile_options("inductor", None, True, lean)["options"]
    assert options == {"cpp_wrapper": True, "guard_filter_fn": lean}


def test_the_fused_step_keeps_few_guards_and_still_sees_what_can_change(tiny_config) -> None:
    """A run keeps a fraction of the guards and reports it; after training, the same step
    compiled no more, a changed coefficient of the problem (a kept value) and a new point
    count (a kept tensor guard) each recompile the step: never a stale graph."""
    module = train(tiny_config(*TINY_BURGERS, *AOT, "trainer.max_steps=4"))["module"]
    guards = module.compile_facts()["guards"]
    assert guards["loss_terms"] == "full"
    kept, total = guards["fused_step"]["kept"], guards["fused_step"]["total"]
    assert 0 < kept < total / 3, guards
    fused, optimizer = module.fused, module.optimizers().optimizer
    points = {name: c.points.to(torch.float32) for name, c in module.conditions.items()}
    compiles = fused.compiled.compiles
    fused.run(optimizer, points)
    assert fused.compiled.compiles == compiles
    module.problem.nu *= 2
    fused.run(optimizer, points)
    assert fused.compiled.compiles == compiles + 1
    fused.run(optimizer, {**points, "pde": torch.cat([points["pde"], points["pde"][:3]])})
    assert fused.compiled.compiles == compiles + 2


def test_full_keeps_every_guard_and_a_bad_setting_is_one_line(tiny_config) -> None:
    full = tiny_config(*TINY_BURGERS, *AOT, "trainer.max_steps=3", "compile_guards=full")
    module = train(full)["module"]
    assert module.compile_facts()["guards"]["fused_step"] == "full"
    assert module.fused.compiled.guard_filter is None
    with pytest.raises(ConfigError, match=r"^compile_guards='some' is unknown; allowed: lean"):
        build(tiny_config(*AOT, "compile_guards=some"))
