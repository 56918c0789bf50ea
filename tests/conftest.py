"""Shared test helpers: compose the real config tree with Hydra's compose API, tiny and offline."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mpsciml.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
register_resolvers()

# Small enough that a run takes seconds, large enough to exercise every code path.
TINY = [
    "trainer.max_steps=3",
    "val_every=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "logger=csv",
    "optimizer=adam",  # recipes may finish with L-BFGS (burgers_mlp does); tests choose explicitly
    "problem.n_domain=64",
    "plots=false",  # ~3 s per run; the tests of plots ask for them
]


def compose_config(overrides: list[str], output_dir: Path) -> DictConfig:
    """The config `python train.py <overrides>` would run, with its output in `output_dir`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        del cfg.hydra  # a real job's config has no hydra node either (it lives in HydraConfig)
    return cfg


@pytest.fixture
def tiny_config(tmp_path: Path) -> Callable[..., DictConfig]:
    """compose_config with the TINY overrides first, so a test's own overrides win."""

    counter = iter(range(1_000_000))

    def make(*overrides: str) -> DictConfig:
        return compose_config([*TINY, *overrides], tmp_path / f"run{next(counter)}")

    return make


def load_generate_data_script(monkeypatch: pytest.MonkeyPatch) -> Any:
    """scripts/generate_data.py as a module (it is a script, not part of the package); registered
    in sys.modules for the test's duration, since its dataclasses look their module up there."""
    spec = importlib.util.spec_from_file_location(
        "generate_data", ROOT / "scripts" / "generate_data.py"
    )
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "generate_data", script)
    spec.loader.exec_module(script)
    return script


def final_checkpoints(*summaries: dict[str, Any]) -> list[dict[str, Any]]:
    """The last.ckpt of each run, by its summary (optimizer state and all)."""
    return [
        torch.load(Path(s["output_dir"]) / "checkpoints" / "last.ckpt", weights_only=False)
        for s in summaries
    ]


def assert_same_final_weights(straight: dict[str, Any], resumed: dict[str, Any]) -> list[dict]:
    """A resumed run ends with bitwise the weights of the run that never stopped; returns both
    checkpoints for further checks."""
    finals = final_checkpoints(straight, resumed)
    for name, value in finals[0]["state_dict"].items():
        torch.testing.assert_close(finals[1]["state_dict"][name], value, rtol=0, atol=0)
    return finals
