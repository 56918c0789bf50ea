"""The benchmark's matmul profile: exact counts on steps whose matmuls are known.

Times are never asserted (a shared machine makes them noise); calls and floating-point
operations are exact, and the share must be a fraction of the step."""

from __future__ import annotations

import os

import pytest
import torch

from mpsciml.benchmark.matmul_share import (
    large_matmul_gflops,
    matmul_share,
    notes,
    profile_rows,
    quiet_kineto,
)

M, K, N = 64, 32, 16


def one_matmul_step() -> torch.Tensor:
    """One forward mm (M x K @ K x N) and, in backward, one mm for the weight's gradient
    (K x M @ M x N): 2 calls, 2 * (2 M K N) flops; plus elementwise work that is not a matmul."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=generator)
    weight = torch.randn(K, N, generator=generator, requires_grad=True)
    loss = (x @ weight).tanh().square().mean()
    loss.backward()
    return loss


def test_matmul_calls_and_flops_of_a_known_step_are_exact():
    profiled = matmul_share(one_matmul_step, steps=3, warmup=1)
    assert profiled["steps"] == 3
    assert profiled["matmul_calls"] == 2
    assert profiled["matmul_gflop"] == pytest.approx(2 * (2 * M * K * N) / 1e9, rel=1e-12)
    assert 0 < profiled["matmul_share"] < 1 and 0 < profiled["matmul_share_of_unprofiled"] <= 1
    assert 0 < profiled["matmul_ms"] < profiled["profiled_step_ms"]
    assert profiled["step_ms"] > 0
    assert profiled["matmul_gflops"] > 0


def test_a_step_without_matmuls_has_none():
    def elementwise() -> torch.Tensor:
        return torch.linspace(0, 1, 1000).exp().sum()

    profiled = matmul_share(elementwise, steps=2)
    assert profiled["matmul_calls"] == 0 and profiled["matmul_gflop"] == 0
    assert profiled["matmul_share"] == 0 and profiled["matmul_share_of_unprofiled"] == 0
    assert profiled["matmul_gflops"] is None
    lines = notes(
        {
            "steps": 2,
            "rows": {"pointwise": profiled},
            "large_matmul_gflops": 9.0,
            "large_matmul": "one",
        }
    )
    assert (
        lines[1].startswith("  pointwise: no matmul operator recorded")
        and "0 calls" not in lines[1]
    )


def test_bad_step_count_is_refused():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        matmul_share(one_matmul_step, steps=0)


def test_rows_notes_name_every_row_and_the_large_matmul_rate():
    profiled = profile_rows({"known": one_matmul_step}, "cpu", steps=2)
    assert profiled is not None and set(profiled["rows"]) == {"known"}
    assert profiled["large_matmul_gflops"] > 0
    lines = notes(profiled)
    assert len(lines) == 2 and "GFLOP/s" in lines[0] and lines[1].lstrip().startswith("known:")
    assert "2 calls" in lines[1]
    assert profile_rows({}, "cpu") is None and notes(None) == []


def test_large_matmul_rate_is_its_flops_over_its_time():
    rate = large_matmul_gflops(size=64, repeats=2)
    assert 0 < rate < 1e5  # 2 * 64^3 flops in more than a few nanoseconds


def test_profiling_prints_nothing_of_its_own(capfd, monkeypatch):
    """Kineto's native start/stop lines ("USDT: ... profiler_start") would land between the
    benchmark's table and notes: silenced while profiling, the environment put back after."""
    monkeypatch.delenv("KINETO_LOG_LEVEL", raising=False)
    matmul_share(one_matmul_step, steps=1, warmup=0)
    assert "profiler_start" not in capfd.readouterr().err
    assert "KINETO_LOG_LEVEL" not in os.environ
    monkeypatch.setenv("KINETO_LOG_LEVEL", "2")  # the user's own level is theirs
    with quiet_kineto():
        assert os.environ["KINETO_LOG_LEVEL"] == "2"
    assert os.environ["KINETO_LOG_LEVEL"] == "2"
