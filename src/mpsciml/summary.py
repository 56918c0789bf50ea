"""summary.json: the one file per run that reports and sweeps read.

Written atomically (temporary file + rename) so a run killed mid-write never leaves a half file
that a report would choke on.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import mpsciml


def git_commit() -> str | None:
    """The commit of the mpsciml checkout in use (with '+dirty' if it has local changes)."""
    source = Path(mpsciml.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=source,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


def environment_facts() -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
    }


def peak_memory() -> dict[str, float | None]:
    """Peak resident memory of the process, and peak CUDA allocation when on a GPU (MB)."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"peak_rss_mb": round(rss_kb / 1024, 1), "cuda_max_allocated_mb": cuda}


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(summary, handle, indent=2, default=str)
        temporary = handle.name
    os.replace(temporary, path)
