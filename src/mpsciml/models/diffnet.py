"""DiffNet's network (Botelho et al. 2020): a convolutional encoder-decoder with skip connections
(a U-Net) mapping fields on a grid to fields on the same grid, in 1, 2 or 3 dimensions.

    x (N, in_channels, *grid)
      [+ grid coordinates in [0, 1], d channels]                          positional_embedding
      -> stem: ConvBlock(in -> width)                                       level 0, grid
      -> depth x [downsample by 2, ConvBlock(w_{i-1} -> w_i)]               level i, grid / 2^i
      -> depth x [upsample by 2, concat the skip of level i-1, ConvBlock(w_i + w_{i-1} -> w_{i-1})]
      -> head: 1x1 convolution width -> out_channels (no norm, no activation)
    -> (N, out_channels, *grid)

    ConvBlock = 2 x [conv (same padding) -> norm -> act];  w_i = min(width 2^i, max_width)

Why this shape: the solution of an elliptic or transport PDE at a point depends on the parameter
field far away, which a stack of 3x3 convolutions at one resolution reaches only after ~grid/2
layers; each downsampling doubles the receptive field, and the skips hand the fine detail of
each level straight to the decoder, so the output keeps the input's resolution. The output
resolution is the grid the network is given (`grid`, the problem's training grid: 64x64, 256x256,
1024x1024, ... or 1-D/3-D), and any grid that halves `depth` times runs at forward time.

Upsampling is interpolation (linear/bilinear/trilinear) followed by the block's convolutions,
not a transposed convolution: a stride-2 transposed convolution leaves a checkerboard pattern
whose second differences a residual loss sees as large errors.

Precision: the BatchNorm layers declare precision_policy "fp32" (`precision.policy`): in pure
fp16/bf16 runs their affine parameters and running statistics stay fp32 (a running variance
accumulated in fp16 rounds away the momentum's small updates, and bf16 keeps 3 digits), they
normalise in fp32 with autocast off and hand the activation back in the network's dtype. The
convolutions take the run's precision, except the head: with `full_precision_output` (default)
its weights stay fp32 (policy "fp32", fp64 in fp64 runs) and it returns its output in that
precision instead of rounding it back to fp16/bf16. A residual loss differentiates the output
twice on the grid, which multiplies its rounding by 1/h^2: an output rounded to bf16 (3 digits)
has a Laplacian error of order 1 at 64x64 (scripts/bench_stencil_precision.py), so the output
must not be rounded; the last hidden activations still are. Nothing here knows the PDE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional

from mpsciml.contract import ModelKind
from mpsciml.models.fno import embedding_layout, grid_coordinates
from mpsciml.models.mlp import ACTIVATIONS

#: normalisation after each convolution: batch (DiffNet's), group (per-sample, no batch
#: statistics: no train/eval difference and nothing to synchronise under DDP), or none
NORMS = ("batch", "group", "none")
#: how a level is halved: max pooling, average pooling, or a learnt stride-2 convolution
DOWNSAMPLING = ("max", "avg", "conv")
#: how a level is doubled: multilinear interpolation or nearest neighbour, each then convolved
UPSAMPLING = ("linear", "nearest")
PADDING_MODES = ("zeros", "replicate", "reflect", "circular")

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_LINEAR_MODE = {1: "linear", 2: "bilinear", 3: "trilinear"}


def _integer(name: str, value: Any, minimum: int) -> int:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
    if not ok or value < minimum:
        raise ValueError(f"model.{name}={value!r} must be an integer >= {minimum}")
    return int(value)


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"model.{name}={value!r} is unknown; allowed: {', '.join(allowed)}")
    return str(value)


def halvings(n: int) -> int:
    """How many times n can be halved exactly (the 2-adic valuation of n)."""
    count = 0
    while n > 0 and n % 2 == 0:
        n //= 2
        count += 1
    return count


def check_grid(grid: Sequence[int], depth: int) -> tuple[int, ...]:
    """The grid, if every dimension halves `depth` times; else one line naming model.depth, the
    grid and what would fit (the deepest depth for this grid, the nearest grids for this depth)."""
    grid = tuple(int(n) for n in grid)
    factor = 2**depth
    if all(n % factor == 0 for n in grid):
        return grid
    deepest = min(halvings(n) for n in grid)
    nearest = sorted(
        {m for n in grid for m in (n // factor * factor, -(-n // factor) * factor) if m}
    )
    raise ValueError(
        f"model.depth={depth} halves the grid {depth} times, so every dimension must be a "
        f"multiple of 2^{depth}={factor}; grid {list(grid)} is not: use model.depth<={deepest} "
        f"or a grid of multiples of {factor} (e.g. {', '.join(map(str, nearest))})"
    )


class ConvBlock(nn.Sequential):
    """Two (convolution -> norm -> activation) layers at one resolution."""

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: str,
        activation: str,
        padding_mode: str,
    ) -> None:
        layers: list[nn.Module] = []
        for fan_in in (in_channels, out_channels):
            layers.append(
                _CONV[dims](
                    fan_in,
                    out_channels,
                    kernel_size,
                    padding=kernel_size // 2,
                    padding_mode=padding_mode,
                    bias=norm == "none",  # a norm's shift makes a bias redundant
                )
            )
            if norm != "none":
                layers.append(_norm(dims, norm, out_channels))
            layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)


def _norm(dims: int, norm: str, channels: int) -> nn.Module:
    if norm == "group":
        return nn.GroupNorm(min(8, channels), channels)
    layer = _BATCH_NORM[dims](channels)
    layer.precision_policy = "fp32"  # statistics and normalisation in full precision
    return layer


class DiffNet(nn.Module):
    """U-Net encoder-decoder, (N, in_channels, *grid) -> (N, out_channels, *grid)."""

    accepts: ClassVar[tuple[ModelKind, ...]] = (ModelKind.GRID_OPERATOR,)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: Sequence[int],
        width: int = 16,
        depth: int = 3,
        max_width: int = 256,
        kernel_size: int = 3,
        activation: str = "relu",
        norm: str = "batch",
        downsample: str = "max",
        upsample: str = "linear",
        padding_mode: str = "zeros",
        positional_embedding: bool | str | None = None,
        full_precision_output: bool = True,
    ) -> None:
        super().__init__()
        dims = len(grid)
        if dims not in _CONV:
            raise ValueError(f"DiffNet runs on 1-, 2- or 3-D grids; got grid {list(grid)}")
        width = _integer("width", width, 1)
        depth = _integer("depth", depth, 0)
        max_width = _integer("max_width", max_width, 1)
        kernel_size = _integer("kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"model.kernel_size={kernel_size} must be odd (same padding)")
        _choice("activation", activation, list(ACTIVATIONS))
        self.norm = _choice("norm", norm, NORMS)
        self.downsample = _choice("downsample", downsample, DOWNSAMPLING)
        self.upsample = _choice("upsample", upsample, UPSAMPLING)
        _choice("padding_mode", padding_mode, PADDING_MODES)
        self.embedding = embedding_layout(positional_embedding)
        self.grid = check_grid(grid, depth)
        self.dims, self.depth = dims, depth
        widths = [min(width * 2**level, max_width) for level in range(depth + 1)]
        self.widths = widths

        def block(fan_in: int, fan_out: int) -> ConvBlock:
            return ConvBlock(dims, fan_in, fan_out, kernel_size, norm, activation, padding_mode)

        # registration order: the stem's first convolution holds the network's first floating
        # tensor, so `precision.policy.input_dtype` reads the run's dtype there (not a norm's)
        self.stem = block(in_channels + (dims if self.embedding else 0), widths[0])
        self.pools = nn.ModuleList(
            _CONV[dims](widths[i], widths[i], 2, stride=2)
            if downsample == "conv"
            else nn.Identity()
            for i in range(depth)
        )
        self.encoder = nn.ModuleList(block(widths[i], widths[i + 1]) for i in range(depth))
        self.decoder = nn.ModuleList(
            block(widths[i + 1] + widths[i], widths[i]) for i in range(depth)
        )
        self.head = _CONV[dims](widths[0], out_channels, 1)
        self.full_precision_output = bool(full_precision_output)
        if self.full_precision_output:
            self.head.precision_policy = "fp32"  # its weights stay full precision

    def forward(self, x: Tensor) -> Tensor:
        check_grid(x.shape[2:], self.depth)
        if self.embedding is not None:
            coordinates = grid_coordinates(x.shape[2:], x, self.embedding)
            x = torch.cat([x, coordinates.expand(x.shape[0], -1, *x.shape[2:])], dim=1)
        skips = []
        x = self.stem(x)
        for pool, block in zip(self.pools, self.encoder, strict=True):
            skips.append(x)
            x = block(self._down(pool, x))
        for level in reversed(range(self.depth)):
            skip = skips[level]
            x = self._up(x, skip.shape[2:])
            x = self.decoder[level](torch.cat([x, skip.to(x.dtype)], dim=1))
        return self._head(x) if self.full_precision_output else self.head(x)

    def _head(self, x: Tensor) -> Tensor:
        """The 1x1 head in its weights' full precision with autocast off, its output left there:
        called on the weights directly, not through the layer's policy hooks, which would round
        the output back to the network's dtype (see the module docstring)."""
        weight, bias = self.head.weight, self.head.bias
        dtype = torch.promote_types(weight.dtype, torch.float32)
        convolve = getattr(functional, f"conv{self.dims}d")
        with torch.autocast(x.device.type, enabled=False):
            return convolve(x.to(dtype), weight.to(dtype), bias.to(dtype))

    def _down(self, pool: nn.Module, x: Tensor) -> Tensor:
        if self.downsample == "conv":
            return pool(x)
        return getattr(functional, f"{self.downsample}_pool{self.dims}d")(x, 2)

    def _up(self, x: Tensor, size: torch.Size) -> Tensor:
        if self.upsample == "nearest":
            return functional.interpolate(x, size=tuple(size), mode="nearest")
        mode = _LINEAR_MODE[self.dims]
        return functional.interpolate(x, size=tuple(size), mode=mode, align_corners=False)
