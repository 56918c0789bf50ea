"""Move or cast a batch only when it is new.

A PINN with fixed collocation points trains on the same tensors every step, and so does an
operator problem that takes every function without drawing points; the DataModules then hand
out the very same tensor objects each step. Copying them to the GPU and casting them to the
model's dtype again every step would cost a host-device copy (a synchronisation) per step that
keeping the data on the module used to avoid. `SameBatchMemo` remembers one conversion and
returns it again for a batch made of the same tensor objects (held, so their ids cannot be
reused) under the same key (device, dtype).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor


def tensor_leaves(batch: Any) -> list[Tensor]:
    """The tensors of a nested dict/list/tuple batch, in a fixed order."""
    if isinstance(batch, Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [leaf for key in batch for leaf in tensor_leaves(batch[key])]
    if isinstance(batch, list | tuple):
        return [leaf for item in batch for leaf in tensor_leaves(item)]
    return []


class SameBatchMemo:
    """The last conversion of a batch, reused while the batch is made of the same tensors."""

    def __init__(self) -> None:
        self._sources: list[Tensor] = []
        self._key: Any = None
        self._result: Any = None

    def __call__(self, batch: Any, key: Any, convert: Callable[[Any], Any]) -> Any:
        leaves = tensor_leaves(batch)
        same = (
            bool(leaves)
            and key == self._key
            and len(leaves) == len(self._sources)
            and all(new is old for new, old in zip(leaves, self._sources, strict=True))
        )
        if not same:
            self._result = convert(batch)
            self._sources, self._key = leaves, key
        return self._result
