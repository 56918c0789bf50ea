"""Every yaml in conf/ composes and resolves, every problem, model and experiment in conf/ runs
(found by globbing, never listed here), recipes reach their pair and only it, and every precision
records what really ran."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import CONF_DIR, TINY, compose_config
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import OmegaConf

from mpsciml.contract import ModelKind
from mpsciml.precision.registry import AUTO, PRECISIONS
from mpsciml.train import run

# recipes are not chosen on their own: the pair (problem, model) picks one (tests below)
GROUP_OPTIONS = sorted(
    (path.parent.name, path.stem)
    for path in CONF_DIR.glob("*/*.yaml")
    if path.parent.name not in ("hydra", "experiment", "recipe")
)


def test_the_config_tree_has_the_promised_groups():
    groups = {group for group, _ in GROUP_OPTIONS}
    assert {"problem", "model", "precision", "optimizer", "trainer", "logger"} <= groups
    precisions = {option for group, option in GROUP_OPTIONS if group == "precision"}
    # one yaml per precision of the registry, and auto (which picks one of them by measuring)
    assert precisions == set(PRECISIONS) | {AUTO}


@pytest.mark.parametrize(("group", "option"), GROUP_OPTIONS)
def test_every_option_composes_and_resolves(tmp_path, group, option):
    cfg = compose_config([f"{group}={option}"], tmp_path)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["seed"] == 0
    for target_holder in ("problem", "model", "trainer"):
        assert "_target_" in resolved[target_holder]


def options(group: str) -> list[str]:
    """The options of a config group, as Hydra's --help lists them: the yamls in conf/<group>/."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def problem_kind(problem: str) -> ModelKind:
    """The kind of model conf/problem/<problem>.yaml asks for (its class's `model_kind`)."""
    target = OmegaConf.load(CONF_DIR / "problem" / f"{problem}.yaml").problem._target_
    return get_class(target).model_kind


def model_accepts(model: str) -> tuple[ModelKind, ...]:
    """The kinds conf/model/<model>.yaml's class declares in `accepts` (none: no declaration)."""
    target = OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")._target_
    return tuple(getattr(get_class(target), "accepts", ()))


def leaves(node: object, prefix: str = "") -> Iterator[tuple[str, object]]:
    """(dotted key, value) of every leaf of a nested dict."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), node


# -------------------------------------------------------------------- recipes
@pytest.mark.parametrize("recipe", options("recipe"))
def test_every_recipe_reaches_its_pair_with_all_its_values(tmp_path, recipe):
    """A recipe applies to exactly one pair, named <problem>_<model>; a misspelt one would never
    apply (the default is optional), so the name must match options that exist and fit."""
    pairs = [(p, m) for p in options("problem") for m in options("model") if recipe == f"{p}_{m}"]
    assert len(pairs) == 1, f"recipe/{recipe}.yaml names no <problem>_<model> pair of conf/"
    problem, model = pairs[0]
    assert problem_kind(problem) in model_accepts(model), f"{model} cannot solve {problem}"
    cfg = compose_config([f"problem={problem}", f"model={model}"], tmp_path)
    assert HydraConfig.get().runtime.choices["recipe"] == recipe
    composed = dict(leaves(OmegaConf.to_container(cfg)))  # unresolved: ${...} as written
    written = recipe_values(recipe)
    assert written, f"recipe/{recipe}.yaml sets nothing: this test would check nothing"
    for key, value in written.items():
        assert composed[key] == value, key


def recipe_values(recipe: str) -> dict[str, Any]:
    """The leaves a recipe sets: those of the recipes it includes (its `defaults`, in order;
    options of other groups such as /optimizer/... are not followed), then its own, which win
    (a neuralop_fno recipe is the fno one by inclusion)."""
    written = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "recipe" / f"{recipe}.yaml"))
    values: dict[str, Any] = {}
    for included in written.pop("defaults", []):
        if isinstance(included, str) and included != "_self_" and "/" not in included:
            values.update(recipe_values(included))  # another recipe (not a group's option)
    values.update((key, value) for key, value in leaves(written) if key)
    return values


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("problem", options("problem"))
def test_a_pair_receives_only_its_model_keys(tmp_path, problem, model):
    """problem=X model=Y: the model node holds the keys of conf/model/Y.yaml and nothing meant for
    another model (such as navier_stokes' MLP widths for a DeepONet), whether or not they fit."""
    cfg = compose_config([f"problem={problem}", f"model={model}"], tmp_path)
    expected = set(OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml"))
    assert set(cfg.model) == expected


def test_a_recipe_uses_the_lbfgs_settings_of_the_adam_lbfgs_option(tmp_path):
    """Recipes cannot choose optimizer=adam_lbfgs (no group overrides in an interpolated config),
    so those that finish with L-BFGS include its values (`/optimizer/adam_lbfgs@optimizer`):
    the recipe's L-BFGS is the option's, and choosing the option on top changes nothing in it."""
    finishing = 0
    for problem in options("problem"):
        lbfgs = compose_config([f"problem={problem}"], tmp_path).optimizer.lbfgs
        if lbfgs is not None:
            option = compose_config([f"problem={problem}", "optimizer=adam_lbfgs"], tmp_path)
            assert lbfgs == option.optimizer.lbfgs, problem
            finishing += 1
    assert finishing, "no recipe finishes with L-BFGS any more: this test checks nothing"


def test_an_optimizer_option_chooses_the_phases_and_keeps_the_recipes_adam(tmp_path):
    def optimizer(*overrides: str) -> dict:
        cfg = compose_config(list(overrides), tmp_path)
        return OmegaConf.to_container(cfg.optimizer, resolve=True)

    recipe = optimizer("problem=burgers")  # the recipe: Adam for 95% of 4000 steps, then L-BFGS
    assert recipe["lbfgs"] is not None and recipe["switch_step"] == 3800
    adam_only = optimizer("problem=burgers", "optimizer=adam")
    assert adam_only["lbfgs"] is None and adam_only["adam"] == recipe["adam"]
    both = optimizer("problem=burgers", "optimizer=adam_lbfgs")  # the option's own switch, 80%
    assert both["lbfgs"] == recipe["lbfgs"] and both["switch_step"] == 3200
    tuned = optimizer("problem=diffusion_reaction")  # Adam 3e-3 with a decay, no L-BFGS
    assert optimizer("problem=diffusion_reaction", "optimizer=adam") == tuned
    lbfgs_only = optimizer("problem=diffusion_reaction", "optimizer=lbfgs")
    assert lbfgs_only["adam"] is None and lbfgs_only["scheduler"] is None
    assert lbfgs_only["lbfgs"] == recipe["lbfgs"]
    base = optimizer("problem=burgers", "model=deeponet")  # a pair without a recipe
    assert base["adam"]["lr"] == 1e-3 and base["lbfgs"] is None and base["scheduler"] is None


# ------------------------------------------------------------- runs by discovery
# Keys a run shrinks where its config has them, so that any problem, model or experiment in conf/
# runs in seconds without a line here naming it.
SHRINK = {
    "problem.n_domain": 32,
    "problem.n_boundary": 8,
    "problem.n_initial": 8,
    "problem.n_outlet": 8,
    "problem.n_train": 8,
    "problem.n_test": 3,
    "problem.n_points": 16,
    "problem.functions_per_step": 4,
    "problem.nx": 21,
    "problem.nt": 21,
    "problem.resolution": 16,  # grid problems (darcy, ns_vorticity, ...): points per side
    "problem.zero_shot_resolution": 32,
    "problem.n_zero_shot": 2,
    "problem.grid": 16,  # data-free grid problems (poisson_grid, burgers_grid): nodes per side
    "problem.batch_size": 4,
    "model.hidden": [16, 16],
    "model.branch_hidden": [16],
    "model.trunk_hidden": [16],
    "model.latent": 16,
    "model.n_features": 8,
    "model.hidden_channels": 8,  # FNOs
    "model.n_modes": 4,
    "model.width": 4,  # diffnet
    "optimizer.lbfgs.max_iter": 3,
}
# conftest's TINY but the optimizer and the points, which each config keeps or SHRINK sets
RUN = [o for o in TINY if not o.startswith(("optimizer=", "problem."))]


@pytest.fixture
def tiny_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., dict]:
    """Compose with RUN first, shrink what the config has, run it; its summary."""
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))

    def go(*overrides: str) -> dict:
        cfg = compose_config([*RUN, *overrides], tmp_path / "run")
        for key, value in SHRINK.items():
            if OmegaConf.select(cfg, key) is not None:
                OmegaConf.update(cfg, key, value)
        optimizer = cfg.optimizer
        if optimizer.adam is not None and optimizer.lbfgs is not None:
            optimizer.switch_step = min(optimizer.switch_step, cfg.trainer.max_steps - 1)
        return run(cfg)

    return go


@pytest.mark.parametrize("problem", options("problem"))
def test_every_problem_runs_with_its_default_model(tiny_run, problem):
    assert tiny_run(f"problem={problem}")["status"] == "ok"


@pytest.mark.parametrize("model", options("model"))
def test_every_model_runs_on_a_problem_it_accepts(tiny_run, model):
    accepts = model_accepts(model)
    fitting = [p for p in options("problem") if problem_kind(p) in accepts]
    if not fitting:
        kinds = ", ".join(accepts) or "nothing (no `accepts`)"
        pytest.skip(f"model={model} accepts {kinds}; no problem in conf/ asks for that")
    assert tiny_run(f"problem={fitting[0]}", f"model={model}")["status"] == "ok"


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_runs(tiny_run, experiment):
    """One job of each (a sweep such as precision_study composes its first job without -m)."""
    assert tiny_run(f"experiment={experiment}")["status"] == "ok"


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
