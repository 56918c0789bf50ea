"""summary.json: the one file per run that reports and sweeps read.

Written atomically (temporary file + rename) so a run killed mid-write never leaves a half file
that a report would choke on, with the permissions of any other file the run writes (the umask's,
usually 0644), so others on shared storage can read it, and as strict JSON: a nan or inf (a
diverged run) is written `null` and its key listed in `non_finite`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig

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


def task_overrides() -> list[str] | None:
    """The command-line overrides that made this run (Hydra's task overrides), so a sweep run
    again into the same folder can tell that a finished job is the same job (None outside Hydra).
    """
    if not HydraConfig.initialized():
        return None
    return [str(override) for override in HydraConfig.get().overrides.task]


def environment_facts() -> dict[str, Any]:
    return {
        "overrides": task_overrides(),
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


def strict_json(value: Any, key: str = "") -> tuple[Any, list[str]]:
    """`value` with every nan/inf float replaced by None, and the dotted keys where that happened.

    Python's json writes bare `NaN`/`Infinity`, which is not JSON: other parsers (Node's, jq)
    reject the whole file of a diverged run.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None, [key]
    if isinstance(value, dict):
        pairs = [(k, strict_json(v, f"{key}.{k}" if key else str(k))) for k, v in value.items()]
        return {k: v for k, (v, _) in pairs}, [bad for _, (_, keys) in pairs for bad in keys]
    if isinstance(value, list | tuple):
        items = [strict_json(v, f"{key}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [bad for _, keys in items for bad in keys]
    return value, []


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cleaned, non_finite = strict_json(summary)
    if non_finite:
        cleaned["non_finite"] = non_finite
    text = json.dumps(cleaned, indent=2, default=str, allow_nan=False)
    # os.open applies the umask like every other file the run writes (tempfile would give 0600)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    os.replace(temporary, path)


def read_summary(out_dir: Path) -> dict[str, Any]:
    """The summary.json a run left in `out_dir`, or {} where there is none (or it is unreadable)."""
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}
