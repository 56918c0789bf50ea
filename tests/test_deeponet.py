"""Checks of `mpsciml.models.deeponet`: DeepONet in both forward forms, and POD-DeepONet.

The aligned (Cartesian-product) form is an optimisation of the pointwise form, so the two must
agree on every (function, point) pair. A physics-informed DeepONet differentiates the output
w.r.t. the trunk coordinates, so those derivatives are compared with finite differences in
float64. The POD trunk must represent its training data exactly when it keeps every mode, and the
precision experiments need the network to compute in the autocast dtype.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import Tensor, nn

from mpsciml.models.deeponet import MULTI_OUTPUT, DeepONet, PODBasis

CONF = Path(__file__).resolve().parents[1] / "conf" / "model" / "deeponet.yaml"
SMALL = {"branch_hidden": (16, 16), "trunk_hidden": (16, 16)}


def _net(out: int = 1, multi_output: str = "split", **kwargs) -> DeepONet:
    torch.manual_seed(0)
    return DeepONet(5, 2, out, **{**SMALL, **kwargs}, multi_output=multi_output)


@pytest.mark.parametrize("multi_output", MULTI_OUTPUT)
@pytest.mark.parametrize("out", [1, 3])
def test_shapes_of_both_forms(out: int, multi_output: str) -> None:
    """Pointwise (B, m), (B, d) -> (B, out); aligned (N, m), (P, d) -> (N, P, out)."""
    net = _net(out, multi_output)
    assert net(torch.rand(7, 5), torch.rand(7, 2)).shape == (7, out)
    assert net.forward_aligned(torch.rand(4, 5), torch.rand(9, 2)).shape == (4, 9, out)
    assert net(torch.rand(0, 5), torch.rand(0, 2)).shape == (0, out)


@pytest.mark.parametrize("multi_output", MULTI_OUTPUT)
@pytest.mark.parametrize("out", [1, 2])
def test_aligned_equals_pointwise_on_all_pairs(out: int, multi_output: str) -> None:
    """forward_aligned(v, y)[n, p] == forward(v[n], y[p]) for every pair (fp32, 1e-6)."""
    net = _net(out, multi_output)
    with torch.no_grad():
        net.bias.copy_(torch.randn(out))
    v, y = torch.randn(6, 5), torch.rand(11, 2)
    aligned = net.forward_aligned(v, y)
    pairs = net(v.repeat_interleave(11, dim=0), y.repeat(6, 1)).reshape(6, 11, out)
    torch.testing.assert_close(aligned, pairs, rtol=1e-6, atol=1e-6)


def test_split_gives_each_output_its_own_slice() -> None:
    """With "split", zeroing output 1's slice of the branch leaves output 0 untouched."""
    net = _net(2, "split")
    v, y = torch.randn(4, 5), torch.rand(4, 2)
    before = net(v, y).detach()
    last = net.branch.net[-1]
    assert last.out_features == 2 * 16  # latent defaults to branch_hidden[-1]
    with torch.no_grad():
        last.weight[16:] = 0
        last.bias[16:] = 0
    after = net(v, y).detach()
    torch.testing.assert_close(after[:, 0], before[:, 0])
    torch.testing.assert_close(after[:, 1], torch.zeros(4))  # bias starts at zero


@pytest.mark.parametrize(
    ("multi_output", "branch_width", "trunk_width"),
    [("split", 24, 24), ("shared_trunk", 24, 8), ("shared_branch", 8, 24)],
)
def test_strategy_sets_latent_widths(
    multi_output: str, branch_width: int, trunk_width: int
) -> None:
    net = _net(3, multi_output, latent=8)
    trunk_last = [m for m in net.trunk.modules() if isinstance(m, nn.Linear)][-1]
    assert (net.branch.net[-1].out_features, trunk_last.out_features) == (
        branch_width,
        trunk_width,
    )


def test_deepxde_layer_sizes_and_trunk_activation_last() -> None:
    """DeepXDE's [m, 40, 40] = branch_hidden=[40], latent=40; the trunk output is activated."""
    net = DeepONet(100, 1, branch_hidden=[40], trunk_hidden=[40], latent=40)
    assert [m.out_features for m in net.branch.net if isinstance(m, nn.Linear)] == [40, 40]
    assert isinstance(net.trunk[-1], nn.Tanh)
    basis = net.trunk(torch.randn(50, 1) * 10)
    assert basis.abs().max() < 1  # a bounded basis for tanh
    plain = DeepONet(100, 1, branch_hidden=[40], trunk_hidden=[40], trunk_activation_last=False)
    assert isinstance(plain.trunk.net[-1], nn.Linear)


def test_gradient_wrt_trunk_input_matches_finite_differences() -> None:
    """du/dy by autograd (create_graph) == central differences, float64, to 1e-6."""
    net = _net(2).double()
    v = torch.randn(8, 5, dtype=torch.float64)
    y = torch.rand(8, 2, dtype=torch.float64, requires_grad=True)
    u = net(v, y)
    for o in range(2):
        (grad,) = torch.autograd.grad(u[:, o].sum(), y, create_graph=True)
        for j in range(2):
            h = torch.zeros_like(y).detach()
            h[:, j] = 1e-5
            fd = (net(v, y.detach() + h)[:, o] - net(v, y.detach() - h)[:, o]) / 2e-5
            torch.testing.assert_close(grad[:, j], fd.detach(), rtol=0, atol=1e-6)


def test_second_derivative_wrt_trunk_input() -> None:
    """u_yy through create_graph equals central differences of the autograd u_y (float64)."""
    net = _net(1).double()
    v = torch.randn(8, 5, dtype=torch.float64)

    def u_y(y: Tensor, create_graph: bool) -> Tensor:
        (grad,) = torch.autograd.grad(net(v, y).sum(), y, create_graph=create_graph)
        return grad[:, 0]

    y = torch.rand(8, 2, dtype=torch.float64, requires_grad=True)
    (u_yy,) = torch.autograd.grad(u_y(y, True).sum(), y)
    h = torch.zeros_like(y).detach()
    h[:, 0] = 1e-5
    plus = u_y((y.detach() + h).requires_grad_(), False)
    minus = u_y((y.detach() - h).requires_grad_(), False)
    torch.testing.assert_close(u_yy[:, 0], (plus - minus) / 2e-5, rtol=0, atol=1e-6)
    assert u_yy.abs().max() > 1e-3  # tanh gives a non-trivial second derivative


def test_aligned_form_is_differentiable_per_function() -> None:
    """Gradients of forward_aligned(v, y)[n] w.r.t. y equal the pointwise ones for function n."""
    net = _net(1).double()
    v = torch.randn(3, 5, dtype=torch.float64)
    y = torch.rand(6, 2, dtype=torch.float64, requires_grad=True)
    (aligned,) = torch.autograd.grad(net.forward_aligned(v, y)[1].sum(), y)
    y2 = y.detach().clone().requires_grad_()
    (pointwise,) = torch.autograd.grad(net(v[1:2].expand(6, 5), y2).sum(), y2)
    torch.testing.assert_close(aligned, pointwise)


def _low_rank_data(n: int = 12, p: int = 30, rank: int = 4, out: int = 1) -> Tensor:
    """N functions on P points whose centred data has exactly the given rank (float64)."""
    g = torch.Generator().manual_seed(3)
    x = torch.linspace(0, 1, p, dtype=torch.float64)
    shapes = torch.stack([torch.sin((k + 1) * torch.pi * x) for k in range(rank)])  # (r, P)
    weights = torch.randn(n, rank, out, generator=g, dtype=torch.float64)
    weights = weights - weights.mean(dim=0)  # centred coefficients: rank stays exactly r
    return 2.0 + x[None, :, None] + torch.einsum("nro,rp->npo", weights, shapes)


@pytest.mark.parametrize("out", [1, 2])
def test_pod_reproduces_training_data_when_it_keeps_every_mode(out: int) -> None:
    """n_modes = rank: reconstruct(project(u)) == u, and a branch that outputs the coefficients
    makes forward_aligned return the training data exactly."""
    data = _low_rank_data(out=out)
    pod = PODBasis(data if out > 1 else data[..., 0], n_modes=4)
    assert pod.modes.shape == (30, 4, out) and pod.mean.shape == (30, out)
    torch.testing.assert_close(pod.reconstruct(pod.project(data)), data, rtol=0, atol=1e-10)
    # Lu et al. scaling: modes orthogonal with mean square 1 over the grid.
    gram = torch.einsum("pko,pjo->okj", pod.modes, pod.modes) / 30
    torch.testing.assert_close(gram, torch.eye(4, dtype=torch.float64).expand(out, 4, 4))
    net = DeepONet.with_pod_trunk(data, n_modes=4, n_sensors=4 * out, branch_hidden=[8])
    net.branch = nn.Identity()  # the branch output *is* the coefficients
    torch.testing.assert_close(net.forward_aligned(pod.project(data)), data, rtol=0, atol=1e-10)
    # Fewer modes than the rank cannot reproduce the data.
    fewer = PODBasis(data, n_modes=2)
    assert (fewer.reconstruct(fewer.project(data)) - data).abs().max() > 1e-3


def test_pod_model_trains() -> None:
    """Adam on a POD-DeepONet lowers the loss on synthetic antiderivative data."""
    torch.manual_seed(4)
    x = torch.linspace(0, 1, 25)
    v = torch.randn(64, 3) @ torch.stack([torch.cos(k * torch.pi * x) for k in range(3)])
    u = torch.cumulative_trapezoid(v, x, dim=1)
    u = torch.cat([torch.zeros(64, 1), u], dim=1)  # (64, 25), u(0) = 0
    net = DeepONet.with_pod_trunk(u, n_modes=5, n_sensors=25, branch_hidden=[32, 32])
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = (net.forward_aligned(v, x[:, None]) - u[..., None]).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_pod_model_only_answers_on_its_grid() -> None:
    grid = torch.linspace(0, 1, 30, dtype=torch.float64)[:, None]
    net = DeepONet.with_pod_trunk(_low_rank_data(), 3, n_sensors=5, grid=grid).double()
    v = torch.randn(2, 5, dtype=torch.float64)
    assert net.forward_aligned(v).shape == net.forward_aligned(v, grid).shape == (2, 30, 1)
    with pytest.raises(ValueError, match="POD grid"):
        net.forward_aligned(v, grid[:20])
    with pytest.raises(ValueError, match="POD grid"):
        net.forward_aligned(v, grid + 0.1)
    with pytest.raises(ValueError, match="forward_aligned"):
        net(v, grid[:2])
    state = net.state_dict()
    assert {"pod.mean", "pod.modes", "pod.grid"} <= set(state)
    assert all(t.dtype == torch.float64 for t in state.values())


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"branch_hidden": ()}, "model.branch_hidden"),
        ({"branch_hidden": (16, 0)}, "model.branch_hidden"),
        ({"trunk_hidden": []}, "model.trunk_hidden"),
        ({"trunk_hidden": (-3,)}, "model.trunk_hidden"),
        ({"latent": 0}, "model.latent"),
        ({"latent": 2.5}, "model.latent"),
        ({"n_sensors": 0}, "model.n_sensors"),
        ({"coord_dim": 0}, "model.coord_dim"),
        ({"out_features": 0}, "model.out_features"),
        ({"multi_output": "independent"}, "model.multi_output"),
        ({"activation": "swish"}, "model.activation"),
        ({"init": "xavier"}, "model.init"),
    ],
)
def test_invalid_arguments_name_the_key(kwargs: dict, key: str) -> None:
    args = {"n_sensors": 5, "coord_dim": 2, **SMALL, **kwargs}
    with pytest.raises(ValueError, match=key.replace(".", r"\.") + "="):
        DeepONet(**args)


def test_invalid_pod_and_input_shapes_raise() -> None:
    data = _low_rank_data()
    with pytest.raises(ValueError, match=r"model\.n_modes="):
        PODBasis(data, n_modes=31)
    with pytest.raises(ValueError, match=r"model\.n_modes="):
        PODBasis(data, n_modes=0)
    with pytest.raises(ValueError, match="train_outputs"):
        PODBasis(torch.rand(30), n_modes=1)
    net = _net(1)
    with pytest.raises(ValueError, match="branch_input"):
        net(torch.rand(4, 6), torch.rand(4, 2))
    with pytest.raises(ValueError, match="trunk_input"):
        net.forward_aligned(torch.rand(4, 5), torch.rand(4, 3))
    with pytest.raises(ValueError, match="same B"):
        net(torch.rand(4, 5), torch.rand(3, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_computes_in_the_low_precision_dtype(dtype: torch.dtype) -> None:
    """Under CPU autocast both forms, and the POD model, output the autocast dtype, and
    derivatives w.r.t. the fp32 trunk input still flow."""
    net = _net(2)
    v, y = torch.randn(4, 5), torch.rand(4, 2, requires_grad=True)
    pod_net = DeepONet.with_pod_trunk(_low_rank_data().float(), 3, n_sensors=5)
    with torch.autocast("cpu", dtype=dtype):
        pointwise, aligned = net(v, y), net.forward_aligned(v, y)
        pod = pod_net.forward_aligned(v)
    assert pointwise.dtype == aligned.dtype == pod.dtype == dtype
    (grad,) = torch.autograd.grad(pointwise.float().sum(), y)
    assert grad.dtype == torch.float32 and torch.isfinite(grad).all()
    torch.testing.assert_close(pointwise.float(), net(v, y).detach(), rtol=0.05, atol=0.05)


def test_float64_model_computes_in_float64() -> None:
    net = _net(2).double()
    out = net.forward_aligned(torch.randn(3, 5, dtype=torch.float64), torch.rand(4, 2).double())
    assert out.dtype == torch.float64


def test_yaml_composes_into_the_deepxde_antiderivative_network() -> None:
    """conf/model/deeponet.yaml + the problem's sizes builds DeepXDE's antiderivative net."""
    from mpsciml.factory import build_model
    from mpsciml.problems.antiderivative import Antiderivative

    cfg = OmegaConf.load(CONF)
    assert cfg._target_ == "mpsciml.models.deeponet.DeepONet"
    assert cfg.pod_modes is None  # a learned trunk unless asked
    net = build_model(cfg, Antiderivative())
    assert isinstance(net, DeepONet) and net.latent == 40
    assert net.forward_aligned(torch.rand(2, 100), torch.rand(10, 1)).shape == (2, 10, 1)
