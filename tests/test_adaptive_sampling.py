"""Adaptive collocation (`sampling.adaptive=rar|rad`): settings, selection, DDP, resume."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import assert_same_final_weights
from distributed_harness import one_step, run_ranks
from omegaconf import OmegaConf
from torch import nn

from mpsciml.callbacks.adaptive_sampling import attach_adaptive_sampling, plot_adaptive_points
from mpsciml.config import ConfigError, validate
from mpsciml.contract import ModelKind
from mpsciml.data import adaptive_points
from mpsciml.data.adaptive_points import (
    AdaptivePoints,
    rad_choice,
    rad_probabilities,
    rar_choice,
    residual_magnitudes,
)
from mpsciml.data.adaptive_settings import AdaptiveSettings, adaptive_settings
from mpsciml.data.points import CollocationPoints
from mpsciml.distributed.integrity import rank, world_size
from mpsciml.factory import build_datamodule
from mpsciml.modules.pinn import PINNModule
from mpsciml.problems.burgers import Burgers
from mpsciml.train import run

ROOT = Path(__file__).resolve().parents[1]
ADAM = OmegaConf.create({"adam": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}})


def burgers() -> Burgers:
    return Burgers(n_domain=33, n_boundary=7, n_initial=9, evaluation_grid=(8, 4))


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)
    )


def sampler(method: str, problem: Burgers | None = None, **settings: Any) -> AdaptivePoints:
    problem = problem or burgers()
    chosen = AdaptiveSettings(method, **{"every": 2, "n_candidates": 66, "n_add": 7, **settings})
    return AdaptivePoints(chosen, problem, seed=0, conditions=problem.conditions(0))


def run_config(method: str, candidates: int) -> Any:
    """The keys `attach_adaptive_sampling` reads, for an Adam-only run without pictures."""
    sampling = {"adaptive": method, "every": 2, "n_candidates": candidates, "n_add": 7}
    return OmegaConf.create(
        {
            "sampling": sampling,
            "seed": 0,
            "optimizer": {"adam": {}},
            "plots": False,
            "paths": {"output_dir": "unused"},
        }
    )


# ------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("block", "match"),
    [
        ({"adaptive": "rae"}, r"^sampling\.adaptive='rae' .*allowed: null, rar, rad$"),
        ({"adaptive": "rar", "every": 0}, r"^sampling\.every=0 is invalid"),
        ({"adaptive": "rar", "n_add": 2.5}, r"^sampling\.n_add=2\.5 is invalid"),
        ({"adaptive": "rad", "k": -1}, r"^sampling\.k=-1 is invalid: must be a number >= 0"),
        ({"adaptive": "rad", "c": math.inf}, r"^sampling\.c=inf is invalid"),
        ({"adaptive": "rad", "conditions": []}, r"^sampling\.conditions=\[\] must be"),
        ({"adaptive": "rad", "kk": 1}, r"^sampling\.kk is not a setting"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(block, match):
    with pytest.raises(ValueError, match=match):
        adaptive_settings({"sampling": block})


def test_nonsense_combinations_are_refused():
    with pytest.raises(ValueError, match=r"rad redraws the points itself; resample_every"):
        adaptive_settings({"sampling": {"adaptive": "rad"}, "resample_every": 10})
    with pytest.raises(ValueError, match=r"rar changes the point count.*compile=true"):
        adaptive_settings({"sampling": {"adaptive": "rar"}, "compile": True})
    # RAR adds to whatever the step drew, so it combines with resampling; RAD keeps its count
    assert adaptive_settings({"sampling": {"adaptive": "rar"}, "resample_every": 10}) is not None
    assert adaptive_settings({"sampling": {"adaptive": "rad"}, "compile": True}) is not None
    assert adaptive_settings({"sampling": {"adaptive": None}}) is None


def test_an_unknown_condition_or_too_few_candidates_is_refused():
    with pytest.raises(ValueError, match=r"names 'interior'.*conditions: pde, bc, ic"):
        sampler("rar", conditions=("interior",))
    with pytest.raises(ValueError, match=r"n_candidates=20 is fewer than the 33 points RAD"):
        sampler("rad", n_candidates=20)


def test_an_unknown_method_is_refused_by_the_config_check(tiny_config):
    with pytest.raises(ConfigError, match=r"^sampling\.adaptive='rae' .*null, rar, rad$"):
        validate(tiny_config("sampling.adaptive=rae"))


def test_only_a_pinn_problem_adapts_and_a_fixed_run_reports_its_points():
    cfg = OmegaConf.create(
        {"sampling": {"adaptive": "rar"}, "problem": {"_target_": "p.Antiderivative"}}
    )
    operator = SimpleNamespace(model_kind=ModelKind.SENSOR_OPERATOR)
    with pytest.raises(ConfigError, match=r"^sampling\.adaptive=rar moves a PINN's collocation"):
        build_datamodule(cfg, operator, None)  # type: ignore[arg-type]
    module = SimpleNamespace(summary_parts={})
    fixed = OmegaConf.create({"sampling": {"adaptive": None}, "resample_every": 4})
    attach_adaptive_sampling(fixed, burgers(), module)
    assert module.summary_parts["sampling"]() == {"method": None, "resample_every": 4}


@pytest.mark.slow
def test_cli_unknown_method_exits_2_with_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "train.py", "sampling.adaptive=rae", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "sampling.adaptive='rae'" in result.stderr and "Traceback" not in result.stderr


# ----------------------------------------------------------------- selection
def test_rar_takes_the_largest_and_rad_follows_wu_et_al():
    magnitudes = torch.tensor([0.1, 3.0, 0.0, 3.0, 2.0], dtype=torch.float64)
    assert rar_choice(magnitudes, 3).tolist() == [1, 3, 4]  # ties: the earlier candidate first
    p = rad_probabilities(magnitudes, k=2.0, c=0.5)
    weights = magnitudes**2
    torch.testing.assert_close(p, weights / weights.mean() + 0.5)
    # c = 0: a zero residual keeps a tiny weight, so RAD can still draw distinct points
    assert (rad_probabilities(magnitudes, k=1.0, c=0.0) > 0).all()
    draws = [rad_choice(magnitudes, 4, 1.0, 0.0, torch.Generator().manual_seed(3)) for _ in "ab"]
    assert draws[0].equal(draws[1]) and len(set(draws[0].tolist())) == 4


def test_an_update_is_a_function_of_seed_step_and_weights():
    first, second = sampler("rad"), sampler("rad")
    model = mlp()
    for s in (first, second):
        s.update(2, model, torch.device("cpu"))
    assert first.points["pde"].equal(second.points["pde"]) and len(first.points["pde"]) == 33
    later = sampler("rad")
    later.update(4, model, torch.device("cpu"))  # another step: other candidates
    assert not later.points["pde"].equal(first.points["pde"])
    rar = sampler("rar")
    rar.update(2, model, torch.device("cpu"))
    rar.update(4, model, torch.device("cpu"))
    assert rar.count("pde") == 33 + 14 and [u["step"] for u in rar.updates] == [2, 4]


def test_updates_stop_where_lbfgs_takes_over():
    problem = burgers()
    settings = AdaptiveSettings("rar", every=2)
    points = AdaptivePoints(settings, problem, 0, problem.conditions(0), freeze_at=5)
    assert [s for s in range(9) if points.is_update_step(s)] == [2, 4]


def test_residuals_are_full_precision_whatever_the_weights_and_chunking(monkeypatch):
    """A pure-fp16 run's weights give the same selection residuals as their fp32 values
    (the copy is made in fp32), and chunks do not change them."""
    problem = burgers()
    condition = problem.conditions(0)["pde"]
    points = problem.domain.interior(50, "sobol", 1)
    names = (problem.input_names, problem.output_names)
    low = mlp().half()
    cpu = torch.device("cpu")
    reference = residual_magnitudes(mlp().half().float(), condition, points, names, cpu)
    assert reference.dtype == torch.float64
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a surrounding autocast is switched off
        got = residual_magnitudes(low, condition, points, names, torch.device("cpu"))
    assert got.equal(reference)
    assert all(p.dtype == torch.float16 for p in low.parameters())  # the weights are untouched
    monkeypatch.setattr(adaptive_points, "EVAL_CHUNK", 7)
    torch.testing.assert_close(
        residual_magnitudes(low, condition, points, names, torch.device("cpu")), reference
    )


def test_the_batch_gets_the_points_appended_or_replaced_in_its_dtype():
    batch = {"pde": torch.zeros(33, 2, dtype=torch.float16), "bc": torch.ones(7, 2)}
    rar, rad = sampler("rar"), sampler("rad")
    assert rar.batch_points(batch) is batch  # before the first update: as drawn
    for s in (rar, rad):
        s.update(2, mlp(), torch.device("cpu"))
    extended, replaced = rar.batch_points(batch), rad.batch_points(batch)
    assert extended["pde"].shape == (40, 2) and extended["pde"].dtype == torch.float16
    assert extended["pde"][33:].equal(rar.points["pde"].half()) and extended["bc"] is batch["bc"]
    assert replaced["pde"].equal(rad.points["pde"].half())
    assert rar.batch_points(batch)["pde"] is extended["pde"]  # cast once per update


def test_a_module_with_adaptive_points_pickles():
    """The precision probe copies the module: its adaptive points and reports must come along."""
    problem = burgers()
    module = PINNModule(problem, mlp(), ADAM, seed=0)
    attach_adaptive_sampling(run_config("rar", 66), problem, module)
    module.strategy_callbacks[0].sampler.update(2, module.model, torch.device("cpu"))
    copied = pickle.loads(pickle.dumps(module))
    assert copied.summary_parts["sampling"]() == module.summary_parts["sampling"]()
    drawn = {"pde": problem.conditions(0)["pde"].points}
    assert copied.adapt_points(drawn)["pde"].equal(module.adapt_points(drawn)["pde"])


@pytest.mark.slow
def test_the_picture_shows_where_the_points_went(tmp_path):
    rar = sampler("rar")
    rar.update(2, mlp(), torch.device("cpu"))
    drawn = {name: c.points for name, c in burgers().conditions(0).items()}
    path = plot_adaptive_points(rar, drawn, burgers(), tmp_path / "adaptive_points.png")
    assert path is not None and path.stat().st_size > 10_000


# ------------------------------------------------------------------------ DDP
def _adapted_step(method: str) -> dict[str, Any]:
    """One update at step 2 and one closure on the adapted points (1 or 2 processes)."""
    problem = burgers()
    module = PINNModule(problem, mlp(), ADAM, seed=0)
    attach_adaptive_sampling(run_config(method, 101), problem, module)
    points = module.strategy_callbacks[0].sampler
    points.update(2, module.model, torch.device("cpu"))
    result = one_step(lambda: (module, CollocationPoints(problem, seed=0, max_steps=2)))
    result["chosen"] = points.points["pde"]
    datamodule = CollocationPoints(problem, seed=0, max_steps=2)
    datamodule.trainer = SimpleNamespace(world_size=world_size(), global_rank=rank())
    drawn = next(iter(datamodule.train_dataloader()))  # one_step's "sizes" are these
    result["share"] = len(points.batch_points(drawn)["pde"])
    return result


def _ddp_worker(rank: int, world: int) -> dict[str, Any]:
    return {method: _adapted_step(method) for method in ("rar", "rad")}


def test_every_rank_selects_the_same_points_and_trains_on_its_share():
    ranks = run_ranks(_ddp_worker, 2, timeout=180)
    for method in ("rar", "rad"):
        single = _adapted_step(method)
        assert ranks[0][method]["chosen"].equal(ranks[1][method]["chosen"])
        assert ranks[0][method]["chosen"].equal(single["chosen"])
        # pde points: RAR 33 + 7 = (17 + 4) + (16 + 3); RAD 33 = 17 + 16
        shares = [r[method]["share"] for r in ranks]
        assert shares == ([21, 19] if method == "rar" else [17, 16])
        assert single["share"] == sum(shares)
        for name, value in single["terms"].items():
            torch.testing.assert_close(ranks[0][method]["terms"][name], value)
        for mine, theirs in zip(ranks[0][method]["grads"], single["grads"], strict=True):
            torch.testing.assert_close(mine, theirs)


# --------------------------------------------------------------- whole runs
def untimed(sampling: dict[str, Any]) -> dict[str, Any]:
    """summary.json `sampling` without the wall times of the updates."""
    last = {k: v for k, v in sampling["last_update"].items() if k != "seconds"}
    return {**sampling, "update_seconds": None, "last_update": last}


def test_resume_continues_the_adaptive_points_exactly(tiny_config):
    """6 steps with updates at 2 and 4 against 4 steps + resume to 6: the update at step 4 runs
    right after the resume, on the restored weights and with the points of step 2 restored."""
    common = [
        "precision=mixed",
        "sampling.adaptive=rar",
        "sampling.every=2",
        "sampling.n_candidates=200",
        "sampling.n_add=5",
    ]
    straight = run(tiny_config(*common, "trainer.max_steps=6"))
    stopped = run(tiny_config(*common, "trainer.max_steps=4"))
    resumed = run(tiny_config(*common, "trainer.max_steps=6", f"resume={stopped['output_dir']}"))
    assert stopped["sampling"]["update_steps"] == [2]
    assert untimed(resumed["sampling"]) == untimed(straight["sampling"])
    assert straight["sampling"]["update_steps"] == [2, 4]
    assert straight["sampling"]["final_points"] == {"pde": 64 + 10}
    assert resumed["l2"] == straight["l2"]
    assert_same_final_weights(straight, resumed)


@pytest.mark.slow
def test_rad_compiles_once(tiny_config):
    """RAD keeps the point count, so the compiled step never recompiles for its updates."""
    summary = run(
        tiny_config(
            "sampling.adaptive=rad",
            "sampling.every=1",
            "sampling.n_candidates=100",
            "compile=true",
            "compile_backend=aot_eager",
            "trainer.max_steps=4",
        )
    )
    assert summary["sampling"]["update_steps"] == [1, 2, 3]
    assert summary["compile"]["recompiles"] == 0
