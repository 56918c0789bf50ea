"""`malloc_hold`: a step's large blocks are reused instead of page-faulted in anew (glibc)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from conftest import TINY, compose_config

from mpsciml import freed_memory
from mpsciml.compose import build
from mpsciml.config import ConfigError

# five "steps", each holding ten 8 MB activations at once and freeing them at its end (after
# three steps first); prints the minor page faults of the five
CHILD = """
import resource, sys
import torch
from mpsciml.freed_memory import hold_freed_memory
if sys.argv[1] == "hold":
    print(hold_freed_memory(), file=sys.stderr)
def step():
    saved = [torch.ones(2_000_000) for _ in range(10)]
    return sum(t.sum() for t in saved)
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip()), result.stderr.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_held_memory_is_not_faulted_in_again_at_each_step() -> None:
    every_time, _ = faults("default")
    held, said = faults("hold")
    assert said.startswith("held (mmap threshold ")
    # glibc hands the freed top of its heap back, so each step faults its 80 MB in again
    assert every_time > 5 * 10_000
    assert held < every_time / 10  # ~97,500 against 0 (six at once on 2 cores)


def test_a_run_records_it_and_a_bad_value_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(freed_memory, "_applied", None)  # as in a fresh process
    _, _, parts = build(compose_config([*TINY, "malloc_hold=false"], tmp_path / "off"))
    assert parts["malloc"] == "off (malloc_hold=false)"
    with pytest.raises(ConfigError, match=r"^malloc_hold='maybe' is invalid: true or false$"):
        build(compose_config([*TINY, "malloc_hold=maybe"], tmp_path / "bad"))


def test_false_after_true_in_one_process_says_it_still_runs_held(monkeypatch) -> None:
    monkeypatch.setattr(freed_memory, "_applied", None)
    assert freed_memory.malloc_setting(False) == "off (malloc_hold=false)"
    monkeypatch.setattr(freed_memory, "_applied", "held (mmap threshold 1024 MiB)")
    assert freed_memory.malloc_setting(False).startswith("held (mmap threshold 1024 MiB): set by")
    assert freed_memory.malloc_setting(True) == "held (mmap threshold 1024 MiB)"
