"""W&B online without network: a few seconds to notice, one warning, the run goes on offline;
or one line before training with `logger.wandb.require_online=true`."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from mpsciml import wandb_logger
from mpsciml.config import ConfigError
from mpsciml.train import run
from mpsciml.wandb_logger import online_problem

FAKE_KEY = "0" * 40


def closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_online(monkeypatch):
    """WANDB_MODE=online with a key, pointed at a server that refuses connections."""
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)


def test_unreachable_server_falls_back_offline_within_seconds(
    tiny_config, unreachable_online, caplog
):
    started = time.time()
    with caplog.at_level(logging.WARNING, logger="mpsciml.wandb_logger"):
        summary = run(tiny_config("logger=wandb"))
    assert summary["status"] == "ok"  # it waited 90-230 s, then failed with a traceback
    assert summary["wandb"]["run_dir"].startswith("wandb/offline-run-")
    warnings = [r for r in caplog.records if r.name == "mpsciml.wandb_logger"]
    assert len(warnings) == 1 and "cannot be reached" in warnings[0].getMessage()
    assert warnings[0].created - started < 10


def test_require_online_stops_before_training_with_one_line(tiny_config, unreachable_online):
    cfg = tiny_config("logger=wandb", "logger.wandb.require_online=true")
    with pytest.raises(ConfigError, match=r"^logger\.wandb\.require_online=true, but http://"):
        run(cfg)
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists()


def test_the_probe_gives_up_in_seconds_when_the_network_hangs(monkeypatch):
    """A name lookup or connect that hangs (no route, dropped packets) is not waited for."""
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)

    def hanging_connect(*args: object, **kwargs: object) -> socket.socket:
        """Hangs, then times out as a real connect would (the probe's thread outlives the
        test; returning None would make it raise in that thread, a traceback in the log)."""
        time.sleep(30)
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", hanging_connect)
    started = time.perf_counter()
    assert "cannot be reached within 1 s" in online_problem(timeout=1.0)
    assert time.perf_counter() - started < 3


def test_no_api_key_is_a_reason_to_run_offline(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
    assert online_problem().startswith("no API key for https://api.wandb.ai")


@pytest.mark.parametrize("mode", [None, "offline"])
def test_an_offline_run_never_probes_the_network(tiny_config, monkeypatch, mode):
    """The default (offline) pays nothing for the probe: it is never called."""
    if mode is None:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    else:
        monkeypatch.setenv("WANDB_MODE", mode)

    def probe(*args, **kwargs):
        raise AssertionError("offline W&B probed the network")

    monkeypatch.setattr(wandb_logger, "online_problem", probe)
    cfg = tiny_config("logger=wandb")
    wandb_logger.offline_if_unreachable(cfg)
    assert cfg.logger.wandb.offline is True
    if mode is not None:  # wandb obeys WANDB_MODE=offline even over logger.wandb.offline=false
        wandb_logger.offline_if_unreachable(
            tiny_config("logger=wandb", "logger.wandb.offline=false")
        )
