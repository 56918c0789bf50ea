"""Bytes of the tensors autograd saves for backward: the memory mixed precision halves.

Activation memory of a training step is what autograd keeps alive between forward and backward.
A `saved_tensors_hooks` pack hook sees every tensor as it is saved; several saved tensors can
share one storage (a view, an op saving its own output that the next op saves as its input),
so each distinct storage is counted once, with its full size. The meter keeps a reference to
every storage it counted until it exits: then no counted storage can be freed and its address
reused by a later one within the measurement, so the count is exact. Use it on one step and not
on a timed one (the references can raise the step's peak memory a little).
"""

from __future__ import annotations

from collections import Counter
from types import TracebackType
from typing import Any

import torch
from torch import Tensor


class SavedTensorMeter:
    """Context manager: ``with SavedTensorMeter() as meter: loss = f(x)``, then
    ``meter.total_bytes`` and ``meter.bytes_by_dtype`` (e.g. {'float16': 1024})."""

    def __init__(self) -> None:
        self._storages: dict[tuple[str, int], Any] = {}
        self.bytes_by_dtype: Counter[str] = Counter()
        self.saved_tensors = 0
        self._hooks: torch.autograd.graph.saved_tensors_hooks | None = None

    def _pack(self, tensor: Tensor) -> Tensor:
        self.saved_tensors += 1
        storage = tensor.untyped_storage()
        key = (str(tensor.device), storage.data_ptr())
        if key not in self._storages:
            self._storages[key] = storage
            self.bytes_by_dtype[str(tensor.dtype).removeprefix("torch.")] += storage.nbytes()
        return tensor

    @staticmethod
    def _unpack(tensor: Tensor) -> Tensor:
        return tensor

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_dtype.values())

    def __enter__(self) -> SavedTensorMeter:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._hooks is not None
        self._hooks.__exit__(kind, value, traceback)
        self._hooks = None
        self._storages.clear()  # the counts stay; the storages may be freed now
