"""Bookkeeping attributes skip nn.Module's checks and land where nn.Module would put them."""

from __future__ import annotations

from collections import Counter, OrderedDict

import torch
from torch import nn

from mpsciml.compose import build
from mpsciml.modules.plain_attributes import PLAIN_ATTRIBUTES

PLAIN_VALUES = ("training_step", None, {"total": torch.ones(())}, True, False)


def registered(module: nn.Module) -> tuple[set[str], ...]:
    return set(module._parameters), set(module._buffers), set(module._modules)


def test_a_fit_sets_them_without_nn_modules_setattr(tiny_config, monkeypatch):
    module, trainer, parts = build(tiny_config())
    seen: Counter[str] = Counter()
    setattr_of_nn = nn.Module.__setattr__

    def counting(self: nn.Module, name: str, value: object) -> None:
        if self is module:
            seen[name] += 1
        setattr_of_nn(self, name, value)

    monkeypatch.setattr(nn.Module, "__setattr__", counting)
    module.diverged = False  # any other name still goes through nn.Module's
    assert seen["diverged"] == 1
    trainer.fit(module, datamodule=parts["datamodule"])
    assert trainer.global_step == 3 and "total" in module.last_terms
    assert not PLAIN_ATTRIBUTES & set(seen), seen  # Lightning named dozens of hooks meanwhile


def test_plain_values_land_where_nn_module_puts_them(tiny_config):
    fast, _, _ = build(tiny_config())
    slow, _, _ = build(tiny_config())
    for name in sorted(PLAIN_ATTRIBUTES):
        for value in PLAIN_VALUES:
            setattr(fast, name, value)
            nn.Module.__setattr__(slow, name, value)
            assert vars(fast)[name] is value and vars(slow)[name] is value
            assert getattr(fast, name) is value
    assert registered(fast) == registered(slow)


def test_a_tensor_module_or_dict_subclass_takes_nn_modules_path(tiny_config):
    module, _, _ = build(tiny_config())
    parameter, layer = nn.Parameter(torch.zeros(2)), nn.Linear(1, 1)
    module._terms_are_global = parameter
    module.last_terms = layer
    assert module._parameters["_terms_are_global"] is parameter
    assert module._modules["last_terms"] is layer
    assert "last_terms" not in vars(module) and "_terms_are_global" not in vars(module)
    ordered = OrderedDict(total=torch.ones(()))
    del module._modules["last_terms"]
    module.last_terms = ordered
    assert vars(module)["last_terms"] is ordered
