"""Lightning's WandbLogger, with `log_model` that also works offline (our default).

Lightning refuses `log_model` together with `offline=True`, assuming an artifact needs the
network; wandb in fact keeps an offline run's artifacts in its run folder and `wandb sync`
uploads them with the rest. So this logger takes `log_model` over: the final checkpoint
(`checkpoints/last.ckpt`, never non-finite thanks to FiniteCheckpoint) is logged as the artifact
`model-<run id>` by `log_final_checkpoint`, which `finish_wandb` calls before it finishes the
run. That also covers diverged runs, whose last finite state is the most useful file they leave
(Lightning logs checkpoints only after a successful fit).

Online W&B must never hold training hostage: with no network wandb waited 90-230 s and then
failed the run. `offline_if_unreachable` looks first (an API key, a TCP connect to the server
within PROBE_SECONDS) and, if W&B cannot be reached, runs offline with one warning (`wandb sync`
uploads the run later), or, with `logger.wandb.require_online=true`, stops before training with
one line.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig
from pytorch_lightning.loggers import WandbLogger as LightningWandbLogger

from mpsciml.config import ConfigError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
PROBE_SECONDS = 3.0
# WANDB_MODE values with which wandb never contacts the server (dryrun: Lightning's offline)
LOCAL_MODES = ("offline", "dryrun", "disabled")


class WandbLogger(LightningWandbLogger):
    def __init__(
        self,
        *args: Any,
        log_model: bool | str = False,
        require_online: bool = False,  # used before the logger is built: offline_if_unreachable
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, log_model=False, **kwargs)
        # Lightning always passes `anonymous` (None unless asked) to wandb.init, and wandb 0.31
        # warns on every run that the setting has no effect: leave it out.
        self._wandb_init.pop("anonymous", None)
        self.log_final_model = bool(log_model)

    def log_final_checkpoint(self, path: Path, metadata: dict[str, Any]) -> str | None:
        """Log `path` as this run's model artifact (when `log_model` is on); returns its name."""
        if not self.log_final_model or not path.is_file():
            return None
        import wandb

        name = f"model-{self.experiment.id}"
        artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
        artifact.add_file(str(path), name="model.ckpt")
        self.experiment.log_artifact(artifact, aliases=["latest"])
        return name


def offline_if_unreachable(cfg: DictConfig) -> None:
    """Before the loggers are built: if the config asks for online W&B that cannot be reached,
    switch `logger.wandb.offline` on with one warning, or raise a one-line ConfigError when
    `logger.wandb.require_online` is set."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg is None or wandb_cfg.get("offline", True):
        return
    if os.environ.get("WANDB_MODE") in LOCAL_MODES:  # wandb obeys it over offline=false
        return
    problem = online_problem()
    if problem is None:
        return
    if wandb_cfg.get("require_online", False):
        raise ConfigError(
            f"logger.wandb.require_online=true, but {problem} "
            "(set it false to run offline and `wandb sync` later)"
        )
    log.warning(
        "W&B runs offline: %s; `wandb sync <run folder>/wandb/offline-run-*` later", problem
    )
    wandb_cfg.offline = True


def online_problem(timeout: float = PROBE_SECONDS) -> str | None:
    """Why W&B cannot be used online right now (no API key, server not reachable), else None."""
    base_url = os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL
    host = urlsplit(base_url).hostname or ""
    if not os.environ.get("WANDB_API_KEY") and not netrc_login(host):
        return f"no API key for {base_url} (WANDB_API_KEY or `wandb login`)"
    target = probe_target(base_url)
    if not reachable(*target, timeout=timeout):
        via = "" if target[0] == host else f" through the proxy {target[0]}:{target[1]}"
        return f"{base_url} cannot be reached{via} within {timeout:g} s"
    return None


def netrc_login(host: str) -> bool:
    """True if ~/.netrc (or $NETRC) holds a login for `host`, where `wandb login` puts the key."""
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def probe_target(base_url: str) -> tuple[str, int]:
    """The host and port a connection to `base_url` goes to first: the proxy, if one applies."""
    url = urlsplit(base_url)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and not urllib.request.proxy_bypass(url.hostname or ""):
        url = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return url.hostname or "", url.port or (443 if url.scheme == "https" else 80)


def reachable(host: str, port: int, timeout: float) -> bool:
    """A TCP connect within `timeout` seconds, name lookup included (which the socket's own
    timeout does not bound, hence the thread)."""
    result: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])
