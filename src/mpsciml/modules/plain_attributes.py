"""Bookkeeping attributes a training step sets, assigned without nn.Module's registration checks.

Why: Lightning records the hook it is in by setting `_current_fx_name` on the LightningModule
before and after every hook call (18 assignments per step of a compiled PINN as shipped, counted
with cProfile), and our training step keeps its last loss terms the same way. Each goes through
`nn.Module.__setattr__`, which tests the value against parameters, submodules and buffers in
Python (its `isinstance(value, Parameter)` runs Parameter's metaclass check in Python too): about
2 us, ten times a plain assignment, which a small compiled step of 2-3 ms notices.

For the names below, which nothing registers as a parameter, submodule or buffer, and a value
of a plain type (str, None, dict, bool: never a tensor or a module), `nn.Module.__setattr__`
ends in `object.__setattr__` anyway; so that is called directly, with the same result. Any
other name or value takes nn.Module's path unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: attributes set on every step or hook call: a hook's name or None, a dict of loss tensors, a flag
PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "last_terms", "_terms_are_global"})
#: the types of those values, matched exactly (no subclass, so nothing nn.Module would register)
PLAIN_TYPES = frozenset({str, type(None), dict, bool})


class PlainAttributes(nn.Module):
    """Put before `pl.LightningModule` in a module's bases: `PLAIN_ATTRIBUTES` are assigned
    as on a plain object; everything else as nn.Module assigns it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in PLAIN_ATTRIBUTES and type(value) in PLAIN_TYPES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)
