"""Periodic inputs: the network is exactly periodic (value and derivatives, in both derivative
engines), the embedding is computed in fp32 whatever the network's dtype, it composes with
Fourier features, Allen-Cahn's boundary condition leaves the loss with it (recorded), and bad
options are one line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import TINY, compose_config
from problem_runs import precisions, tiny_problem_run

from mpsciml.config import ConfigError
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.taylor import TaylorDerivatives, supports_taylor
from mpsciml.models.fourier_mlp import FourierMLP
from mpsciml.models.mlp import MLP
from mpsciml.models.periodic import PeriodicEmbedding, resolve_periodic
from mpsciml.precision.policy import cast_module, find_policies, input_dtype
from mpsciml.problems.allen_cahn import AllenCahn
from mpsciml.problems.burgers import Burgers
from mpsciml.train import run

NAMES = (("x", "t"), ("u",))


def seam_points(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The same times at x = -1 and x = 1 (period 2)."""
    t = torch.linspace(0, 1, 7, dtype=dtype)
    left = torch.stack([torch.full_like(t, -1.0), t], dim=-1)
    right = torch.stack([torch.full_like(t, 1.0), t], dim=-1)
    return left, right


def derivative_set(model, points, engine):
    inputs = points.clone().requires_grad_(True)
    if engine == "taylor":
        return TaylorDerivatives(model, inputs, *NAMES)
    return Derivatives(inputs, model(inputs), *NAMES)


@pytest.mark.parametrize("engine", ["autograd", "taylor"])
@pytest.mark.parametrize("model_class", [MLP, FourierMLP])
def test_the_network_is_exactly_periodic(engine, model_class):
    """u, u_x, u_xx and u_t agree bitwise at x = -1 and x = 1: the coordinate is wrapped mod
    the period before the phase, so both ends see the same features."""
    torch.manual_seed(0)
    model = model_class(2, 1, hidden=[16, 16], periodic={0: 2.0}, harmonics=3).double()
    if model_class is FourierMLP and engine == "taylor":
        assert not supports_taylor(model)  # the feature layer's fp32 policy: autograd only
        return
    left, right = (derivative_set(model, p, engine) for p in seam_points())
    for wrt in [(), ("x",), ("x", "x"), ("t",)]:
        assert torch.equal(left("u", *wrt), right("u", *wrt)), wrt
    # not trivially: a point inside differs, and the plain network is not periodic
    inside = torch.tensor([[0.3, 0.5]], dtype=torch.float64)
    assert not torch.equal(model(inside), model(seam_points()[0][3:4]))
    plain = MLP(2, 1, hidden=[16, 16]).double()
    assert not torch.allclose(plain(seam_points()[0]), plain(seam_points()[1]))


def test_taylor_mode_through_the_embedding_equals_autograd():
    torch.manual_seed(1)
    model = MLP(2, 1, hidden=[16, 16], periodic={0: 2.0}, harmonics=2).double()
    assert supports_taylor(model)
    x = torch.rand(30, 2, dtype=torch.float64) * 4 - 2  # across several periods
    auto, taylor = derivative_set(model, x, "autograd"), derivative_set(model, x, "taylor")
    for wrt in [("x",), ("t",), ("x", "x"), ("t", "t"), ("x", "t")]:
        torch.testing.assert_close(taylor("u", *wrt), auto("u", *wrt), rtol=1e-11, atol=1e-11)


def test_the_embedding_is_computed_in_fp32_from_half_inputs():
    """fp16 phases 2 pi h x / P near 2 pi h are off by ~4e-3 h; the fp32 embedding is only off
    by the rounding of its fp16 result (2^-11 relative)."""
    embedding = PeriodicEmbedding(1, {0: 2.0}, harmonics=4)
    x = torch.linspace(-1, 1, 999, dtype=torch.float16).unsqueeze(-1)
    features = embedding(x)
    assert features.dtype == torch.float16 and features.shape == (999, 8)
    exact = embedding(x.double())
    assert (features.double() - exact).abs().max() < 2**-11
    phase = (2 * math.pi * 4 / 2.0) * torch.remainder(x, 2.0)  # the same in fp16 throughout
    assert (torch.cos(phase).double() - exact[:, 6:7]).abs().max() > 2e-3


def test_fourier_features_of_periodic_inputs_keep_their_fp32_policy():
    """In a pure fp16 run the coordinates still reach the embedding in fp32: it sits inside the
    feature layer, whose policy keeps it (and the matrix B that sets the input dtype) fp32."""
    model = FourierMLP(2, 1, n_features=8, periodic={0: 2.0})
    policies = find_policies(model)
    assert list(policies) == ["features"]
    cast_module(model, torch.float16, policies, torch.float32)
    assert input_dtype(model) == torch.float32
    assert model.mlp.net[0].weight.dtype == torch.float16


def test_names_resolve_and_bad_options_are_one_line():
    problem = AllenCahn()
    assert resolve_periodic("problem", problem) == {0: 2.0}
    assert resolve_periodic({"t": 1.0}, problem) == {1: 1.0}
    with pytest.raises(ValueError, match=r"model.periodic.z: no such input; inputs are x, t"):
        resolve_periodic({"z": 2.0}, problem)
    with pytest.raises(ValueError, match="problem burgers declares no periodic inputs"):
        resolve_periodic("problem", Burgers())
    with pytest.raises(ValueError, match=r"period of input 0 is -1\.0"):
        MLP(2, 1, periodic={0: -1.0})
    with pytest.raises(ValueError, match=r"model\.harmonics=0"):
        MLP(2, 1, periodic={0: 2.0}, harmonics=0)


@pytest.mark.parametrize("precision", precisions("fp16"))
def test_allen_cahn_trains_with_periodic_inputs_in_every_precision(
    tmp_path, monkeypatch, precision
):
    """With model.periodic=problem the network is periodic in x, so the boundary condition
    leaves the loss, recorded with its reason; Taylor mode runs through the embedding."""
    summary = tiny_problem_run(
        tmp_path,
        monkeypatch,
        "allen_cahn",
        precision,
        "model.periodic=problem",
        "derivatives=taylor",
        "problem.resolution=64",
        "problem.dt=0.01",
        "problem.n_initial=16",
    )
    assert summary["status"] == "ok"
    assert summary["derivatives"]["used"] == "taylor"
    constraints = summary["constraints"]
    assert constraints["periodic_inputs"] == {"x": 2.0}
    assert list(constraints["dropped_conditions"]) == ["bc"]
    assert "periodic in x (period 2.0)" in constraints["dropped_conditions"]["bc"]
    assert set(summary["final_losses"]) == {"pde", "ic", "total"}


@pytest.mark.slow
def test_a_periodic_input_with_another_period_keeps_the_condition(tmp_path: Path):
    """Periodic in x with period 4 is not the problem's periodicity: bc stays a loss term."""
    cfg = compose_config(
        [*TINY, "problem=allen_cahn", "model.periodic={x: 4.0}", "problem.resolution=64"],
        tmp_path,
    )
    summary = run(cfg)
    assert summary["constraints"]["dropped_conditions"] == {}
    assert "bc" in summary["final_losses"]


@pytest.mark.slow
def test_an_unknown_periodic_input_is_one_config_line(tmp_path: Path):
    cfg = compose_config([*TINY, "problem=burgers", "model.periodic={z: 2.0}"], tmp_path)
    with pytest.raises(ConfigError, match=r"model\.periodic\.z: no such input"):
        run(cfg)
