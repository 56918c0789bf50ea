"""Gradient communication in low precision: `trainer.comm_precision=fp16|bf16` (null: fp32).

DDP all-reduces the gradients in buckets after every backward; a communication hook may compress
a bucket before it goes on the wire. torch's built-in hooks (`default_hooks.fp16_compress_hook`,
`bf16_compress_hook`) cast the bucket to 16 bits, all-reduce the halves and cast the average
back: half the bytes per step, at the cost of rounding every gradient to 16 bits once (fp16
keeps 11 significant bits but overflows beyond 65504 and flushes below ~6e-8; bf16 keeps fp32's
range with 8 bits). The optimiser still sees full-precision tensors.

What this module gives:
- `comm_hook(name)`: the keyword arguments of Lightning's `DDPStrategy` (`ddp_comm_state`,
  `ddp_comm_hook`), or None for fp32 (DDP's own all-reduce).
  Lightning's DDPStrategy registers hooks on CUDA only (`_register_ddp_hooks`) although DDP
  on gloo runs them; `distributed.launch.SciMLDDPStrategy` registers them on every device.
- `BytesCounter` + `counting_hook`: the bytes each step puts into the all-reduce (the bucket's
  elements times the wire dtype's size), for the benchmark.

On a CPU build torch refuses to register `bf16_compress_hook` by its name (it asks for CUDA +
NCCL >= 2.10), but gloo all-reduces bf16 tensors; the counting wrapper (a function of another
name) is what gets registered here, so bf16 runs on gloo too.

No `from __future__ import annotations` here: DDP checks a hook's annotations against the real
`dist.GradBucket` and `torch.futures.Future[torch.Tensor]`, and string annotations fail it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

#: trainer.comm_precision -> (torch's hook, the dtype on the wire)
COMM_PRECISIONS: dict[str, tuple[Callable[..., Any], torch.dtype]] = {
    "fp16": (default_hooks.fp16_compress_hook, torch.float16),
    "bf16": (default_hooks.bf16_compress_hook, torch.bfloat16),
}

Hook = Callable[[Any, dist.GradBucket], torch.futures.Future[torch.Tensor]]


@dataclass
class BytesCounter:
    """Bytes this rank handed to the gradient all-reduce, and the buckets, since `reset`; with
    `end_step` after each step, `per_step` holds each step's bytes (what the benchmark reports)."""

    bytes: int = 0
    buckets: int = 0
    per_step: list[int] = field(default_factory=list)
    _mark: int = 0

    def reset(self) -> None:
        self.bytes, self.buckets, self.per_step, self._mark = 0, 0, [], 0

    def end_step(self) -> None:
        self.per_step.append(self.bytes - self._mark)
        self._mark = self.bytes


def check_comm_precision(name: str | None) -> None:
    if name is not None and name not in COMM_PRECISIONS:
        allowed = ", ".join(["null", *COMM_PRECISIONS])
        raise ValueError(f"trainer.comm_precision={name} is not one of: {allowed}")


def wire_dtype(name: str | None) -> torch.dtype | None:
    """The dtype gradients travel in (None: the gradients' own)."""
    check_comm_precision(name)
    return None if name is None else COMM_PRECISIONS[name][1]


def counting_hook(inner: Hook, counter: BytesCounter, dtype: torch.dtype | None) -> Hook:
    """`inner`, after adding the bucket's size on the wire (its elements in `dtype`, or in the
    bucket's own dtype) to `counter`."""

    def count_then_reduce(
        state: Any, bucket: dist.GradBucket
    ) -> torch.futures.Future[torch.Tensor]:
        buffer = bucket.buffer()
        size = (dtype or buffer.dtype).itemsize
        counter.bytes += buffer.numel() * size
        counter.buckets += 1
        return inner(state, bucket)

    return count_then_reduce


def comm_hook(name: str | None, counter: BytesCounter | None = None) -> dict[str, Any] | None:
    """`DDPStrategy(**comm_hook(name))` for `trainer.comm_precision=name`; None for null (fp32,
    DDP's built-in all-reduce) unless bytes are counted, then DDP's all-reduce as a hook.
    The state is None: torch's hooks then use the default (world) process group."""
    check_comm_precision(name)
    if name is None and counter is None:
        return None
    hook, dtype = (default_hooks.allreduce_hook, None) if name is None else COMM_PRECISIONS[name]
    if counter is not None or dtype is torch.bfloat16:
        hook = counting_hook(hook, counter or BytesCounter(), dtype)
    return {"ddp_comm_state": None, "ddp_comm_hook": hook}
