"""One malloc arena for the whole benchmark process, so a row's thread allocates as a
`python train.py` process's main thread does.

Why: every benchmark row runs in its own thread (`runner.run_interleaved`), and glibc gives each
new thread its own malloc arena. A thread arena grows in heaps of at most 64 MiB and hands
blocks that do not fit back to the kernel, so a step that allocates tens of MiB of activations
(the Navier-Stokes network in Taylor mode) page-faults its memory anew on every step, in that
thread only. Measured on the Navier-Stokes comparison (2-core AMD EPYC Zen 5, one thread): the
fused compiled row 69.5 ms per step in its thread against 49 ms in the main thread, peak RSS
1035 MiB; with one arena 50.7 ms and 707 MiB. The main thread's arena grows without that limit:
with every thread sharing it (glibc's `M_ARENA_MAX` = 1, as `MALLOC_ARENA_MAX=1` in the
environment would set it), every row allocates as a training run does. The rows never allocate
at the same time (one holds the baton), so sharing the arena's lock costs nothing.
"""

from __future__ import annotations

from mpsciml.freed_memory import glibc_mallopt

M_ARENA_MAX = -8  # glibc's malloc.h


def share_one_malloc_arena() -> bool:
    """Make threads started from now on allocate from the main thread's arena (glibc only);
    True where that was set, False where the C library has no `mallopt` (macOS, musl)."""
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    return mallopt(M_ARENA_MAX, 1) == 1
