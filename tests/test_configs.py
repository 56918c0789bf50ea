"""Every yaml in conf/ composes and resolves; every precision records what really ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CONF_DIR, compose_config
from omegaconf import OmegaConf

from mpsciml.precision.registry import PRECISIONS
from mpsciml.train import run

GROUP_OPTIONS = sorted(
    (path.parent.name, path.stem)
    for path in CONF_DIR.glob("*/*.yaml")
    if path.parent.name not in ("hydra", "experiment")
)


def test_the_config_tree_has_the_promised_groups():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"problem", "model", "precision", "optimizer", "trainer", "logger"} <= groups
    precisions = {option for group, option in GROUP_OPTIONS if group == "precision"}
    assert precisions == set(PRECISIONS)  # one yaml per precision of the registry


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_resolves(tmp_path, group, option):
    cfg = compose_config([f"{group}={option}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 0
    for target_holder in ("problem", "model", "trainer"):
        assert "_target_" in resolved[target_holder]


EXPECTED_PRECISION = {
    # name: (parameter dtype, dtype of a matmul in training, scaler)
    "fp64": ("float64", "float64", False),
    "fp32": ("float32", "float32", False),
    "mixed": ("float32", "float16", True),
    "bf16_mixed": ("float32", "bfloat16", False),
    "fp16": ("float16", "float16", True),  # dynamic loss scaling on by default
    "bf16": ("bfloat16", "bfloat16", False),
}


@pytest.mark.parametrize("precision", list(PRECISIONS))
def test_every_precision_runs_and_records_what_ran(tiny_config, precision):
    assert precision in EXPECTED_PRECISION, f"a new precision {precision}: say what it promises"
    cfg = tiny_config(f"precision={precision}", "trainer=cpu")
    summary = run(cfg)
    recorded = json.loads((Path(cfg.paths.output_dir) / "summary.json").read_text())["precision"]
    param_dtype, matmul_dtype, scaler = EXPECTED_PRECISION[precision]
    assert summary["status"] == "ok"
    assert recorded["requested"] == precision
    assert (recorded["param_dtype"], recorded["matmul_dtype"], recorded["scaler"]) == (
        param_dtype,
        matmul_dtype,
        scaler,
    )


def test_pure_fp16_without_loss_scaling_has_no_scaler(tiny_config):
    summary = run(tiny_config("precision=fp16", "precision.loss_scaling=false"))
    assert summary["precision"]["scaler"] is False
    assert summary["precision"]["param_dtype"] == "float16"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_trainer_runs(tiny_config):
    assert run(tiny_config("trainer=gpu", "precision=mixed"))["status"] == "ok"
