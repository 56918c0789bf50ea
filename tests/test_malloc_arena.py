"""The benchmark's rows allocate from the main thread's malloc arena (`benchmark.malloc_arena`)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# a thread allocating 32 MiB tensors, then glibc's per-arena statistics ("Arena N:" lines)
CHILD = """
import ctypes, sys, threading
import torch
from mpsciml.benchmark.malloc_arena import share_one_malloc_arena
if sys.argv[1] == "share":
    assert share_one_malloc_arena()
def allocate():
    for _ in range(5):
        torch.ones(8_000_000).sum()
thread = threading.Thread(target=allocate)
thread.start()
thread.join()
ctypes.CDLL(None).malloc_stats()
"""


def arenas_used(mode: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return sum(line.startswith("Arena ") for line in result.stderr.splitlines())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_a_thread_allocates_from_the_main_arena_once_shared():
    assert arenas_used("none") > 1  # without it, the thread gets an arena of its own
    assert arenas_used("share") == 1
