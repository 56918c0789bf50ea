"""model=diffnet: the U-Net's shapes and options, its skips, the grid check, and that every
precision runs it forward and backward with finite values and BatchNorm kept in fp32."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from mpsciml.contract import ModelKind
from mpsciml.models.diffnet import DiffNet, check_grid, halvings
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.registry import PRECISIONS


def test_it_maps_grids_to_grids_in_one_to_three_dimensions() -> None:
    for grid in [(16,), (16, 8), (4, 8, 4)]:
        model = DiffNet(in_channels=2, out_channels=3, grid=grid, width=4, depth=2)
        assert model(torch.randn(2, 2, *grid)).shape == (2, 3, *grid)
    assert DiffNet.accepts == (ModelKind.GRID_OPERATOR,)


def test_width_depth_and_max_width_set_the_levels() -> None:
    model = DiffNet(1, 1, (32, 32), width=4, depth=4, max_width=16)
    assert model.widths == [4, 8, 16, 16, 16]
    assert len(model.encoder) == len(model.decoder) == 4
    shallow = DiffNet(1, 1, (6, 10), width=4, depth=0)  # no halving: any grid
    assert shallow(torch.randn(1, 1, 6, 10)).shape == (1, 1, 6, 10)


@pytest.mark.parametrize(
    "option",
    [{"downsample": "avg"}, {"downsample": "conv"}, {"upsample": "nearest"}, {"norm": "group"},
     {"norm": "none"}, {"padding_mode": "circular"}, {"kernel_size": 5},
     {"positional_embedding": "nodes"}, {"activation": "gelu"}],
)  # fmt: skip
def test_every_option_runs(option: dict) -> None:
    model = DiffNet(1, 2, (16, 16), width=4, depth=2, **option)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 2, 16, 16)


def test_the_finest_skip_carries_detail_the_bottleneck_cannot() -> None:
    """A one-point change of the input moves the output at that point through the level-0 skip;
    cutting that skip (zeroing its channels in the decoder's first convolution) changes the
    output, so the skip is wired in."""
    torch.manual_seed(0)
    model = DiffNet(1, 1, (16, 16), width=4, depth=2).eval()
    x = torch.randn(1, 1, 16, 16)
    before = model(x)
    first_conv = model.decoder[0][0]
    skip_channels = model.widths[0]
    with torch.no_grad():
        first_conv.weight[:, -skip_channels:] = 0  # concat order: [upsampled, skip]
    assert not torch.allclose(model(x), before)


def test_a_grid_that_cannot_halve_depth_times_is_one_line_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"model.depth=4 .* 2\^4=16; grid \[50, 64\]") as info:
        DiffNet(1, 1, (50, 64), depth=4)
    message = str(info.value)
    assert "\n" not in message and "model.depth<=1" in message and "48, 64" in message
    assert check_grid((48, 64), 4) == (48, 64) and halvings(48) == 4
    model = DiffNet(1, 1, (16, 16), width=2, depth=2)
    with pytest.raises(ValueError, match=r"model\.depth=2"):
        model(torch.randn(1, 1, 18, 16))  # at forward time too


@pytest.mark.parametrize(
    "bad",
    [{"width": 0}, {"depth": -1}, {"depth": 1.5}, {"kernel_size": 4}, {"norm": "layer"},
     {"activation": "swish"}, {"downsample": "stride"}, {"positional_embedding": "corners"}],
)  # fmt: skip
def test_bad_options_are_one_line_naming_the_key(bad: dict) -> None:
    with pytest.raises(ValueError, match=rf"model\.{next(iter(bad))}") as info:
        DiffNet(1, 1, (16, 16), **bad)
    assert "\n" not in str(info.value)


def test_without_full_precision_output_the_output_is_in_the_networks_dtype() -> None:
    model = DiffNet(1, 1, (8, 8), width=2, depth=1, full_precision_output=False)
    SciMLPrecision("bf16", "cpu").convert_module(model)
    assert model(torch.randn(2, 1, 8, 8, dtype=torch.bfloat16)).dtype == torch.bfloat16


def test_the_yaml_builds_the_model() -> None:
    cfg = OmegaConf.load("conf/model/diffnet.yaml")
    cfg.depth = 2
    from hydra.utils import instantiate

    model = instantiate(cfg, in_channels=1, out_channels=1, grid=(16, 16))
    assert isinstance(model, DiffNet)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_runs_forward_and_backward_with_fp32_batchnorm(precision: str) -> None:
    """The precision plugin casts the model as a run does; BatchNorm declares the fp32 policy,
    so its weights and running statistics stay fp32 (fp64 in fp64) in every precision."""
    torch.manual_seed(0)
    model = DiffNet(1, 1, (16, 16), width=4, depth=2)
    plugin = SciMLPrecision(precision, "cpu")
    holder = nn.ModuleDict({"model": model})
    plugin.convert_module(holder)
    full = torch.float64 if precision == "fp64" else torch.float32
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(
        t.dtype == full for m in norms for t in (m.weight, m.running_mean, m.running_var)
    )
    dtype = model.stem[0].weight.dtype
    x = torch.randn(4, 1, 16, 16, dtype=dtype)
    with plugin.forward_context():
        out = model(x)
    # the head runs in full precision and its output is not rounded back (stencils need it)
    assert out.dtype == full and model.head.weight.dtype == full
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert all(torch.isfinite(m.running_var).all() for m in norms)
