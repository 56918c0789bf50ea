"""Where a bare step's time goes: matrix multiplications against everything else.

Why: compiling a small PINN's step removes most of the Python and small-operator work; what is
left is matmuls and the compiled elementwise kernels. Where matmuls dominate (Navier-Stokes'
100-wide network), the step can only get faster with faster matmuls, and how fast this machine
multiplies matrices of the network's shapes (a width-20 MLP multiplies 2540 x 20 by 20 x 20: a
shape no BLAS library is tuned for) bounds it, not the framework. This module measures that, so
the benchmark can say it with numbers instead of guessing:

- `matmul_share(step)`: the step unprofiled, then under `torch.profiler`; the matmul operators'
  time (the leaf operators that do the arithmetic: mm, addmm, bmm, baddbmm, ...; their own time
  on the CPU, their kernels' time on CUDA), their count and floating-point operations per step
  (the profiler's own count from the shapes), their share of the step and their rate. The
  profiler slows every operator, the many small ones of an eager step most, so the share is a
  bracket: of the profiled step (too low) to the unprofiled step (too high).
- `large_matmul_gflops()`: the rate of one large square matmul on this device and thread
  count, what the same hardware reaches when the shape suits it.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from mpsciml.benchmark.timing import cuda_synchronize

#: the operators that do matrix arithmetic themselves (F.linear and matmul dispatch to these)
MATMUL_OPS = frozenset(
    {
        "aten::mm",
        "aten::addmm",
        "aten::_addmm_activation",
        "aten::bmm",
        "aten::baddbmm",
        "aten::mv",
        "aten::addmv",
        "aten::dot",
    }
)


#: the side of the square matmul whose rate the rows are compared with
LARGE_MATMUL_SIZE = 1024
#: Kineto's log level that silences its native start/stop lines ("USDT: ... profiler_start"),
#: which torch 2.13 prints to stderr around every profile, read when it logs
KINETO_QUIET = "6"


@contextlib.contextmanager
def quiet_kineto() -> Iterator[None]:
    """Kineto's start/stop lines off while profiling (they would interleave with the benchmark's
    table on the terminal); a level the user set is kept, and the variable is restored."""
    before = os.environ.get("KINETO_LOG_LEVEL")
    if before is None:
        os.environ["KINETO_LOG_LEVEL"] = KINETO_QUIET
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KINETO_LOG_LEVEL", None)


def matmul_share(
    step: Callable[[], object], steps: int = 10, warmup: int = 2, device: str = "cpu"
) -> dict[str, Any]:
    """Run `step` `warmup` times, `steps` times unprofiled, then `steps` times under the
    profiler; per step: both wall times, the matmul operators' time, calls and GFLOP, their
    share of either wall time and their rate (GFLOP/s; None where no matmul ran)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    for _ in range(warmup):
        step()
    cuda_synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    cuda_synchronize()
    unprofiled = time.perf_counter() - started
    activities = [ProfilerActivity.CPU]
    on_cuda = device.startswith("cuda")
    if on_cuda:
        activities.append(ProfilerActivity.CUDA)
    with quiet_kineto(), profile(activities=activities, with_flops=True) as profiler:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        cuda_synchronize()
        wall = time.perf_counter() - started
    matmul_us, flops, calls = 0.0, 0, 0
    for event in profiler.key_averages():
        if event.key not in MATMUL_OPS:
            continue
        # CPU: the operator's own time (its copies and views excluded); CUDA: its kernels' time
        matmul_us += event.self_device_time_total if on_cuda else event.self_cpu_time_total
        flops += int(event.flops or 0)
        calls += event.count
    matmul_s = matmul_us * 1e-6
    return {
        "steps": steps,
        "step_ms": unprofiled / steps * 1e3,
        "profiled_step_ms": wall / steps * 1e3,
        "matmul_ms": matmul_s / steps * 1e3,
        # bracketed: the profiler slows the other operators more (too low a share of the
        # profiled step) and adds a little to each matmul (too high a share of the unprofiled)
        "matmul_share": matmul_s / wall if wall > 0 else None,
        "matmul_share_of_unprofiled": min(matmul_s / unprofiled, 1.0) if unprofiled > 0 else None,
        "matmul_calls": calls / steps,
        "matmul_gflop": flops / steps / 1e9,
        "matmul_gflops": flops / matmul_s / 1e9 if matmul_s > 0 and flops else None,
    }


def large_matmul_gflops(
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = LARGE_MATMUL_SIZE,
    repeats: int = 5,
) -> float:
    """GFLOP/s of the fastest of `repeats` size x size matmuls (after one untimed): the rate the
    same device and threads reach on a shape that suits them."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(device, dtype)
    b = torch.randn(size, size, generator=generator).to(device, dtype)
    torch.mm(a, b)
    cuda_synchronize()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        cuda_synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def profile_rows(
    steps_by_row: dict[str, Callable[[], object]], device: str, steps: int = 10
) -> dict[str, Any] | None:
    """`matmul_share` of each row's step (the bare rows: a step is one call, nothing else runs
    meanwhile) and this device's large-matmul rate, for the benchmark's JSON and its notes;
    None with no row. Run after the timed steps: the extra steps train the rows' copies on."""
    if not steps_by_row:
        return None
    rows = {name: matmul_share(step, steps, device=device) for name, step in steps_by_row.items()}
    return {
        "steps": steps,
        "rows": rows,
        "large_matmul_gflops": large_matmul_gflops(device),
        "large_matmul": (
            f"one {LARGE_MATMUL_SIZE} x {LARGE_MATMUL_SIZE} fp32 matmul on the same threads"
        ),
    }


def notes(profiled: dict[str, Any] | None) -> list[str]:
    """One line per profiled row: what share of its step the matmuls take and at what rate,
    against the large matmul's rate."""
    if not profiled:
        return []
    peak = profiled["large_matmul_gflops"]
    lines = [
        f"where a bare step's time goes (torch.profiler, {profiled['steps']} steps each; "
        f"{profiled['large_matmul']}: {peak:.0f} GFLOP/s)"
    ]
    for name, row in profiled["rows"].items():
        if not row["matmul_calls"]:  # a step without matmuls, or none the profiler can see
            lines.append(
                f"  {name}: no matmul operator recorded in its step ({row['step_ms']:.2f} ms "
                "unprofiled); a compiled step with inductor's C++ wrapper calls its kernels "
                "without torch's operator dispatch, which the profiler watches"
            )
            continue
        rate = row["matmul_gflops"]
        low, high = row["matmul_share"] or 0.0, row["matmul_share_of_unprofiled"] or 0.0
        lines.append(
            f"  {name}: matmuls {row['matmul_ms']:.2f} ms per step, {100 * low:.0f}% of the "
            f"profiled step ({row['profiled_step_ms']:.2f} ms) to {100 * high:.0f}% of the "
            f"unprofiled one ({row['step_ms']:.2f} ms); "
            f"{row['matmul_calls']:.0f} calls, {row['matmul_gflop'] * 1e3:.1f} MFLOP"
            + (
                f", at {rate:.1f} GFLOP/s = {rate / peak:.2f}x the large matmul's rate"
                if rate
                else ""
            )
        )
    return lines
