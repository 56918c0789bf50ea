"""`malloc_hold: true` (the default): a run keeps the memory its steps free, instead of handing
it back to the kernel and faulting it in again at the next step (glibc's malloc only).

Why: torch's CPU tensors come from malloc. glibc serves a large block (above its mmap threshold,
128 KiB at start and raised as large blocks are freed, at most 32 MiB) by a fresh `mmap` and
returns the top of its heap to the kernel once more than its trim threshold is free. A training
step allocates and frees the same large activations every step, so part of them is new memory
every step: every 4 KiB page faults and is zeroed by the kernel again, and two processes
doing so at once slow each other down. `python scripts/bench_distributed.py --parts scaling
--grid 256 --processes 1,2 --comm fp32 --steps 10 --repeats 4`, DiffNet at 256 x 256, 2 fields
per process, on a 2-vCPU KVM guest, run with `malloc_hold=false` and then as shipped: one
process 525 -> 494 ms per step (4 fields: 1253 -> 996), two DDP processes 695 -> 595, two
independent runs at once 618 -> 490 ms. (`tests/test_freed_memory.py`: ten 8 MB blocks held and
freed per step fault in anew every step under glibc's defaults, hardly at all held.)
What it costs: memory a step freed stays with the process for the next one (the resident size
stays at the peak of a step, which a training loop reaches every step anyway).

Set once per process, before the model and data are built (`compose.build`, which train.py and
every benchmark process go through; `scripts/benchmark.py` sets it for all its rows, the peers'
too); thresholds only, so it changes no result. Elsewhere (macOS,
musl) there is no glibc `mallopt`, and nothing changes: `hold_freed_memory` says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: blocks below this come from the heap; glibc refuses values above its heap size on some
#: builds, so smaller ones are tried in turn
MMAP_THRESHOLDS = (1 << 30, 256 << 20, 32 << 20)
#: free memory at the heap's top kept before any is given back
TRIM_THRESHOLD = 1 << 30

_applied: str | None = None


def glibc_mallopt() -> Any:
    """glibc's `mallopt(param, value)` as a ctypes function; None without it (macOS, musl)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
    except OSError:
        return None
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def hold_freed_memory() -> str:
    """Raise glibc's mmap and trim thresholds for this process (once); what was done, for
    summary.json: "held (mmap threshold N MiB)" or why not."""
    global _applied
    if _applied is not None:
        return _applied
    mallopt = glibc_mallopt()
    if mallopt is None:
        _applied = "unavailable (no glibc mallopt)"
        return _applied
    chosen = next((t for t in MMAP_THRESHOLDS if mallopt(M_MMAP_THRESHOLD, t) == 1), None)
    if chosen is None or mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) != 1:
        _applied = "unavailable (mallopt refused the thresholds)"
        return _applied
    _applied = f"held (mmap threshold {chosen >> 20} MiB)"
    return _applied


def malloc_setting(hold: bool) -> str:
    """What a run with `malloc_hold=hold` gets, for summary.json -> malloc. Raised thresholds
    cannot be taken back (glibc's own adapt as the process runs), so a run with false after one
    with true in the same process (a sweep's jobs) says that it still runs held."""
    if hold:
        return hold_freed_memory()
    if _applied is not None and _applied.startswith("held"):
        earlier = "set by an earlier run in this process (malloc_hold=false cannot undo it)"
        return f"{_applied}: {earlier}"
    return "off (malloc_hold=false)"
