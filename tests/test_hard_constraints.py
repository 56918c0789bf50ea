"""Hard constraints (output transforms): the constrained network meets the conditions it claims
at every boundary point in every dtype, its derivatives through the transform agree between
Taylor mode and autograd, the met conditions leave the loss and the summary says so, and a
problem without a transform is refused in one line."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config
from problem_runs import precisions, tiny_problem_run

from mpsciml.config import ConfigError
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.engine import choose_pointwise_engine
from mpsciml.derivatives.taylor import TaylorDerivatives, supports_taylor
from mpsciml.models.constrained import ConstrainedModel
from mpsciml.models.fourier_mlp import FourierMLP
from mpsciml.models.mlp import MLP
from mpsciml.problems.allen_cahn import AllenCahn
from mpsciml.problems.burgers import Burgers
from mpsciml.problems.heat import Heat
from mpsciml.problems.navier_stokes import NavierStokes
from mpsciml.problems.poisson import Poisson
from mpsciml.problems.wave import Wave
from mpsciml.train import run

PROBLEMS = [Burgers, Heat, Wave]


def constrained(problem, dtype: torch.dtype = torch.float64) -> ConstrainedModel:
    torch.manual_seed(0)
    net = MLP(len(problem.input_names), 1, [16, 16]).to(dtype)
    with torch.no_grad():  # a net far from zero, so a transform that leaks N would show
        net.net[-1].bias.fill_(3.0)
    return ConstrainedModel(net, problem.output_transform().formula)


@pytest.mark.parametrize("problem_class", PROBLEMS)
def test_the_transform_meets_its_conditions_at_every_boundary_point(problem_class):
    """Residuals of the exact conditions (wave: u and u_t at t = 0) vanish to fp32 rounding
    whatever the network's dtype, since the transform runs in fp32 on exact boundary
    coordinates; the pde residual, which the network must learn, does not."""
    problem = problem_class(n_domain=64, n_boundary=64, n_initial=64, hard_constraints=True)
    conditions = problem.conditions(0)
    for dtype in (torch.float64, torch.float32, torch.float16, torch.bfloat16):
        check_conditions(problem, conditions, dtype)


def check_conditions(problem, conditions: dict, dtype: torch.dtype) -> None:
    model = constrained(problem, dtype)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    for name, condition in conditions.items():
        inputs = condition.points.to(dtype).requires_grad_(True)
        d = Derivatives(inputs, model(inputs), problem.input_names, problem.output_names)
        residual = condition.residual(d)
        values = residual.values() if isinstance(residual, dict) else [residual]
        worst = max(value.abs().max().item() for value in values)
        if name in problem.output_transform().exact:
            assert worst < tolerance, (name, dtype, worst)
        else:
            assert worst > 1e-3, (name, dtype)


@pytest.mark.parametrize("problem_class", PROBLEMS)
def test_taylor_mode_through_the_transform_equals_autograd(problem_class):
    problem = problem_class(hard_constraints=True)
    model = constrained(problem)
    assert supports_taylor(model)
    names = problem.input_names
    x = torch.rand(40, len(names), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    auto = Derivatives(x, model(x), names, problem.output_names)
    taylor = TaylorDerivatives(model, x, names, problem.output_names)
    wanted = [(n,) for n in names] + [(n, n) for n in names] + [(names[0], names[-1])]
    assert torch.equal(taylor["u"], auto["u"])
    for wrt in wanted:  # the mixed one through Taylor's autograd fallback from a stream
        torch.testing.assert_close(taylor("u", *wrt), auto("u", *wrt), rtol=1e-11, atol=1e-11)
    seeded = TaylorDerivatives(model, x, names, problem.output_names, seed=lambda k: 2.0**k)
    torch.testing.assert_close(seeded("u", names[0], names[0]), auto("u", names[0], names[0]))


def test_a_problem_without_a_transform_is_refused_naming_those_with_one():
    with pytest.raises(ValueError, match="problem allen_cahn declares no output transform") as e:
        AllenCahn(hard_constraints=True)
    assert "burgers, heat, wave" in str(e.value)


@pytest.mark.parametrize("problem_class", [NavierStokes, Poisson])
def test_every_pointwise_problem_takes_the_key_and_refuses_it_by_name(problem_class):
    """Not Hydra's "unexpected keyword argument": the problems with a transform are named."""
    with pytest.raises(ValueError, match="declares no output transform; problems that do"):
        problem_class(hard_constraints=True)


@pytest.mark.slow
def test_the_refusal_is_one_config_line(tmp_path: Path):
    cfg = compose_config([*TINY, "problem=allen_cahn", "problem.hard_constraints=true"], tmp_path)
    with pytest.raises(ConfigError, match=r"problem\.hard_constraints=true: problem allen_cahn"):
        run(cfg)


@pytest.mark.parametrize("precision", precisions("mixed"))
def test_burgers_trains_with_hard_constraints_in_every_precision(tmp_path, monkeypatch, precision):
    summary = tiny_problem_run(
        tmp_path, monkeypatch, "burgers", precision, "problem.hard_constraints=true"
    )
    assert summary["status"] == "ok" and summary["l2"]["u"] < 2
    constraints = summary["constraints"]
    assert constraints["hard_constraints"] is True
    assert sorted(constraints["dropped_conditions"]) == ["bc", "ic"]
    assert "u = -sin(pi x) + t (1 - x)(1 + x) N(x, t)" in constraints["output_transform"]
    assert set(summary["final_losses"]) == {"pde", "total"}


@pytest.mark.parametrize("precision", precisions("bf16"))
def test_wave_trains_with_hard_constraints_in_taylor_mode(tmp_path, monkeypatch, precision):
    summary = tiny_problem_run(
        tmp_path,
        monkeypatch,
        "wave",
        precision,
        "problem.hard_constraints=true",
        "derivatives=taylor",
        "problem.n_initial=8",
    )
    assert summary["status"] == "ok"
    assert summary["derivatives"] == {"requested": "taylor", "used": "taylor", "reason": None}
    assert sorted(summary["constraints"]["dropped_conditions"]) == ["bc", "ic"]


def test_a_policy_model_in_the_transform_falls_back_and_compile_refuses():
    """Fourier features keep an fp32 policy, which Taylor mode cannot run through: with a
    transform around them the engine falls back to autograd with the reason recorded, and
    compile=true, which needs Taylor mode, is refused (the factory turns it into one line)."""
    problem = Burgers(hard_constraints=True)
    model = ConstrainedModel(FourierMLP(2, 1, n_features=4), problem.output_transform().formula)
    engine = choose_pointwise_engine("taylor", model)
    assert engine.used == "autograd" and "precision policy" in engine.reason
    with pytest.raises(ValueError, match="compile=true needs Taylor-mode derivatives"):
        choose_pointwise_engine("autograd", model, compiled=True)


@pytest.mark.slow
def test_a_compiled_step_runs_through_the_transform(tmp_path, monkeypatch):
    summary = tiny_problem_run(
        tmp_path, monkeypatch, "burgers", "fp32", "problem.hard_constraints=true", "compile=true"
    )
    assert summary["status"] == "ok" and summary["compile"]["enabled"]
    assert summary["derivatives"]["used"] == "taylor"


def test_the_constrained_model_pickles_and_copies():
    """The transform is a method of the problem, not a closure: the module (and with it the
    model) must pickle, e.g. for spawned processes and deep copies."""
    problem = Wave(hard_constraints=True)
    model = constrained(problem)
    x = torch.rand(5, 2, dtype=torch.float64)
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert torch.equal(clone(x), model(x))
