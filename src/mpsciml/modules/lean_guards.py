"""The guards the fused Adam step keeps (`compile_guards: lean`, the default).

Why: before every call of a compiled function dynamo checks its guards, the conditions under
which the compiled code is still the right one. The fused Burgers step (DeepXDE's setting) has
~720 of them, and most check what cannot change inside a run: that `torch.tanh`, `torch.func` and
our own rule tables are still the same objects, that every layer of the network still has the
same class, submodule names, parameter names and empty hook dictionaries. Each touches Python
objects that the step's kernels have just pushed out of the CPU caches, so together they cost a
noticeable part of a small PINN's step (`scripts/benchmark.py --compile --full-guards` measures
it).

What is kept, so that the compiled step is never silently stale:
- every tensor guard (dtype, shape, strides, device, requires_grad of every argument: a
  precision hand-off or a new point count recompiles as before);
- the global state (grad mode, autocast and other global flags, deterministic algorithms,
  functorch and saved-tensor hooks, torch function modes, default device, shapes);
- every value reached from the step's arguments and from the PINN module other than its
  network: the problem's coefficients (`problem.nu`), conditions, the derivatives each condition
  carries, term names and parameter names.

What is dropped: the identity of library and module-level objects (Python code does not change
inside a run) and the network's tree (`_modules`, `_parameters`, `_buffers`, hook dictionaries,
classes). The network's tensors still enter as arguments (tensor guards), and before every fused
step `supports_taylor` walks the network (layers Taylor mode knows, no forward hooks; else the
step goes through autograd), so a hooked network never reaches the compiled call. What this does
not see is a network changed in the middle of a run other than through its tensors: layers
swapped for other classes, or a plain Python attribute of a layer set anew (a constant the
compiled code baked in); `compile_guards: full` keeps every guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: the names `compile_guards` accepts
GUARD_SETTINGS = ("lean", "full")

#: guard types kept wherever they stand: tensors and the global state
KEPT_TYPES = frozenset(
    {
        "TENSOR_MATCH",
        "GLOBAL_STATE",
        "GRAD_MODE",
        "DETERMINISTIC_ALGORITHMS",
        "TORCH_FUNCTION_STATE",
        "FUNCTORCH_STACK_MATCH",
        "AUTOGRAD_SAVED_TENSORS_HOOKS",
        "DEFAULT_DEVICE",
        "SHAPE_ENV",
    }
)

#: parts of a guard's source that lie inside a network's module tree
NETWORK_PARTS = ("._modules", "._parameters", "._buffers", "_hooks")


def check_guard_setting(setting: str) -> None:
    if setting not in GUARD_SETTINGS:
        raise ValueError(
            f"compile_guards={setting!r} is unknown; allowed: {', '.join(GUARD_SETTINGS)}"
        )


class LeanGuards:
    """A `guard_filter_fn` for `torch.compile`: keeps the guards the module docstring names.

    `roots`: the sources whose values are kept (the compiled function's arguments, and
    `self.module` for a method of an object holding the PINN module); counts what it kept."""

    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = tuple(roots)
        self.kept = 0
        self.total = 0

    def keep(self, name: str, guard_type: str) -> bool:
        if guard_type in KEPT_TYPES:
            return True
        if not any(name == r or name.startswith((f"{r}.", f"{r}[")) for r in self.roots):
            return False  # globals, imports, classes: code and library objects
        # not class dictionaries, code objects, the network's tree
        return "__" not in name and not any(part in name for part in NETWORK_PARTS)

    def __call__(self, entries: Sequence[Any]) -> list[bool]:
        decisions = [self.keep(entry.name, entry.guard_type) for entry in entries]
        self.kept += sum(decisions)
        self.total += len(decisions)
        return decisions

    def facts(self) -> dict[str, int]:
        """summary.json `compile.guards`: how many guards the compiles kept, of how many."""
        return {"kept": self.kept, "total": self.total}
