"""Peak memory of one measured step: the process's resident set and, on CUDA, the allocator.

All precisions share one process, so the plain `ru_maxrss` would be the peak of the whole
benchmark. On Linux writing "5" to /proc/self/clear_refs resets the kernel's high-water mark
(VmHWM) to the current RSS, which gives a per-step peak: the resident memory of everything
alive (all runners' modules) plus this step's transient working set. Where that file cannot be
written, the process peak is reported and `rss_peak_scope` says so.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

import torch

_STATUS, _CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def process_peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


class PeakMemory:
    """``start()`` before a step, ``stop()`` after it: RSS before/peak and the CUDA peak (MiB)."""

    def __init__(self) -> None:
        self.result: dict[str, Any] = {}
        self._rss_before: int | None = None
        self._scope = "process"

    def start(self) -> None:
        self._rss_before = _status_kb("VmRSS")
        try:
            _CLEAR_REFS.write_text("5")
            self._scope = "step"
        except OSError:
            self._scope = "process"
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def stop(self) -> dict[str, Any]:
        cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
            cuda = torch.cuda.max_memory_allocated() / 2**20
        hwm = _status_kb("VmHWM") if self._scope == "step" else None
        self.result = {
            "rss_before_mb": None if self._rss_before is None else self._rss_before / 1024,
            "rss_peak_mb": hwm / 1024 if hwm is not None else process_peak_rss_mb(),
            "rss_peak_scope": self._scope,
            "cuda_max_allocated_mb": cuda,
        }
        return self.result
