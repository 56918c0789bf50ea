"""threads=auto: one thread for small networks on the CPU, else the user's or torch's choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mpsciml.config import ConfigError, validate
from mpsciml.threads import SMALL_NETWORK_PARAMETERS, TORCH_DEFAULT_THREADS, choose_threads
from mpsciml.train import run

SMALL = nn.Linear(2, 32)
LARGE = nn.Linear(1000, SMALL_NETWORK_PARAMETERS // 1000 + 1)


@pytest.fixture(autouse=True)
def no_omp_setting(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_auto_gives_a_small_network_one_thread_on_the_cpu():
    used, why = choose_threads("auto", SMALL, "cpu")
    assert used == 1 and "parameters" in why


def test_auto_leaves_large_networks_gpus_and_omp_num_threads_to_torch(monkeypatch):
    torch.set_num_threads(7)  # an earlier job of the same sweep process: not torch's default
    default = TORCH_DEFAULT_THREADS
    assert choose_threads("auto", LARGE, "cpu")[0] == default
    assert choose_threads("auto", SMALL, "cuda") == (default, "the model runs on the GPU")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert choose_threads("auto", SMALL, "cpu") == (default, "OMP_NUM_THREADS")


def test_an_explicit_number_or_null_is_obeyed():
    torch.set_num_threads(7)
    assert choose_threads(3, SMALL, "cpu") == (3, "threads set")
    assert choose_threads(None, SMALL, "cpu")[0] == TORCH_DEFAULT_THREADS


def test_a_run_records_the_threads_it_used(tiny_config):
    torch.set_num_threads(2)
    summary = run(tiny_config("threads=auto", "trainer=cpu"))
    assert summary["status"] == "ok"
    assert (summary["cpu_threads"], torch.get_num_threads()) == (1, 1)
    assert "parameters" in summary["cpu_threads_why"]


@pytest.mark.parametrize("value", ["many", 0, -2])
def test_a_bad_thread_count_is_one_line(tiny_config, value):
    with pytest.raises(ConfigError, match=r"threads=.*auto"):
        validate(tiny_config(f"threads={value}"))
