"""Fourier neural operator (Li et al., ICLR 2021) with a spectral precision of its own (Tu et al.,
ICLR 2024), for fields on 1-D, 2-D or 3-D grids.

    x (N, in_channels, *spatial)
      [+ grid coordinates in [0, 1], d channels]               positional_embedding
      -> lifting: pointwise, (in + d) -> lifting_channels -> hidden (two layers, activation
         between; one layer when lifting_channels = 0)
      -> n_layers Fourier blocks: v <- act(W v + K(s(v))), K the spectral convolution on the
         lowest n_modes, W a pointwise linear skip, s = tanh (stabilizer) or identity; no
         activation after the last block
      -> projection: pointwise, hidden -> projection_channels -> out_channels (two layers)
    -> (N, out_channels, *spatial)

Pointwise layers are batched matmuls over the flattened grid (N, C, prod(spatial)), one code
path for every d (`Pointwise`). Nothing here knows the PDE; any spatial size runs (zero-shot
resolution), the training `grid` only validates n_modes and lets `check_device` plan the FFT.

Precision: the spectral layers declare precision_policy "own" and follow `spectral_precision`
(full | mixed | half, rules in `spectral_plan`); the rest of the network takes the run's
precision (autocast, converted weights) from the precision plugin. tanh sits outside the spectral
layers, so under autocast it runs in the autocast dtype and its output, bounded by 1, is what the
spectral layer transforms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mpsciml.contract import ModelKind
from mpsciml.models.mlp import ACTIVATIONS
from mpsciml.models.spectral_conv import SpectralConv
from mpsciml.models.spectral_plan import check_mode, plan_spectral

STABILIZERS = (None, "tanh")


def _positive_int(name: str, value: Any) -> int:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value == int(value)
    if not ok or value < 1:
        raise ValueError(f"model.{name}={value!r} must be an integer >= 1")
    return int(value)


def check_n_modes(n_modes: int | Sequence[int], grid: Sequence[int]) -> tuple[int, ...]:
    """n_modes per spatial dim, validated against the training grid: 1 <= n_modes <= grid per
    dim (n modes hold frequencies -n//2 .. (n-1)//2, which a grid of n points resolves; on the
    last, rfft, dim this keeps n//2 + 1 <= grid//2 + 1 non-negative frequencies)."""
    grid = tuple(int(g) for g in grid)
    if isinstance(n_modes, int | float) and not isinstance(n_modes, bool):
        modes = (n_modes,) * len(grid)
    else:
        modes = tuple(n_modes)
    if len(modes) != len(grid):
        raise ValueError(
            f"model.n_modes={list(modes)} has {len(modes)} entries for a {len(grid)}-D grid "
            f"{grid}: give one int or {len(grid)} ints"
        )
    for m in modes:
        _positive_int("n_modes", m)
    modes = tuple(int(m) for m in modes)
    if any(m > g for m, g in zip(modes, grid, strict=True)):
        raise ValueError(
            f"model.n_modes={list(modes)} is too large for the training grid {grid}: at most "
            f"{list(grid)} (one per dimension)"
        )
    return modes


class Pointwise(nn.Module):
    """A linear map over channels at every grid point: (N, in, P) -> (N, out, P).

    Why not Conv1d(kernel_size=1): on the CPU its (mkldnn) backward is 2-3x slower than one
    batched matmul (baddbmm, measured at N=20, 32 -> 64 channels, P=32*32, one thread), and the
    pointwise layers are most of an FNO step. baddbmm is on autocast's lower-precision list like
    conv, so mixed runs treat it the same. Init as Conv1d/Linear: U(-1/sqrt(in), 1/sqrt(in)).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_channels)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-bound, bound))
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight.expand(x.shape[0], -1, -1)  # a view: one weight for every sample
        return torch.baddbmm(self.bias[:, None], weight, x)


def pointwise(in_channels: int, out_channels: int) -> Pointwise:
    return Pointwise(in_channels, out_channels)


#: where the samples of a grid of n points sit in [0, 1], by layout: the coordinate of point i
COORDINATE_LAYOUTS = {
    "periodic": lambda i, n: i / n,  # x_i = i / n (neuraloperator's GridEmbedding too)
    "cells": lambda i, n: (i + 0.5) / n,  # cell centres
    "nodes": lambda i, n: i / (n - 1) if n > 1 else 0.0 * i,  # both walls included
}


def embedding_layout(positional_embedding: bool | str) -> str | None:
    """`model.positional_embedding` as a layout: true is "periodic"; false/null is none; a
    layout name says where the samples sit so that a point keeps its coordinate at every
    resolution (zero-shot): periodic x_i = i/n, cells (i + 1/2)/n, nodes i/(n - 1)."""
    if positional_embedding is True:
        return "periodic"
    if positional_embedding is False or positional_embedding is None:
        return None
    if positional_embedding in COORDINATE_LAYOUTS:
        return str(positional_embedding)
    raise ValueError(
        f"model.positional_embedding={positional_embedding!r} is invalid; allowed: true, false, "
        f"{', '.join(COORDINATE_LAYOUTS)}"
    )


def grid_coordinates(spatial: Sequence[int], like: Tensor, layout: str = "periodic") -> Tensor:
    """(1, d, *spatial): channel k holds coordinate k of each point in [0, 1] (see
    COORDINATE_LAYOUTS), in `like`'s dtype and device."""
    position = COORDINATE_LAYOUTS[layout]
    axes = [position(torch.arange(n, dtype=like.dtype, device=like.device), n) for n in spatial]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(mesh).unsqueeze(0)


class _Tanh(torch.autograd.Function):
    """tanh that keeps its input for backward instead of its output (torch's keeps the output).

    Why: in a Fourier block the input v is kept anyway (the pointwise skip's matmul saves it), so
    saving v costs nothing, whereas tanh's own output would be one more activation per block:
    ~15% of an AMP FNO step's saved bytes. Backward recomputes tanh(v), a cheap elementwise op.
    """

    @staticmethod
    def forward(ctx: Any, v: Tensor) -> Tensor:
        ctx.save_for_backward(v)
        return torch.tanh(v)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (v,) = ctx.saved_tensors
        return grad * (1 - torch.tanh(v).square())


def stabilize(v: Tensor) -> Tensor:
    """tanh(v), the stabilizer of Tu et al.: |tanh| <= 1 bounds the FFT's coefficients."""
    return _Tanh.apply(v)


class FNOBlock(nn.Module):
    """v (N, C, *spatial) -> act(W v + K(s(v))) of the same shape (activation optional)."""

    def __init__(self, spectral: SpectralConv, activation: nn.Module | None, tanh: bool):
        super().__init__()
        channels = spectral.out_channels
        self.spectral = spectral
        self.skip = pointwise(channels, channels)
        self.activation = activation
        self.tanh = tanh

    def forward(self, v: Tensor) -> Tensor:
        u = stabilize(v) if self.tanh else v
        out = self.spectral(u)
        out = out + self.skip(v.flatten(2)).view_as(out)
        return self.activation(out) if self.activation is not None else out


class FNO(nn.Module):
    """Fourier neural operator: x (N, in_channels, *spatial) -> (N, out_channels, *spatial).

    Sizes from the problem (GRID_OPERATOR): in_channels, out_channels, grid (training grid).
    Options (conf/model/fno.yaml): hidden_channels, n_modes (int or one per dim), n_layers,
    activation, factorization ("dense" | "cp") and rank, spectral_precision, stabilizer
    (None | "tanh"), positional_embedding (bool or a layout, `embedding_layout`), pad_to_pow2,
    lifting_channels (None: 2 * hidden; 0: a single lifting layer), projection_channels (None:
    2 * hidden).
    """

    accepts: ClassVar[tuple[ModelKind, ...]] = (ModelKind.GRID_OPERATOR,)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: Sequence[int],
        hidden_channels: int = 32,
        n_modes: int | Sequence[int] = 12,
        n_layers: int = 4,
        activation: str = "gelu",
        factorization: str = "dense",
        rank: float | int = 0.05,
        spectral_precision: str = "full",
        stabilizer: str | None = None,
        positional_embedding: bool | str = True,
        pad_to_pow2: bool = False,
        lifting_channels: int | None = None,
        projection_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        if not 1 <= len(self.grid) <= 3:
            raise ValueError(f"FNO: grid {self.grid} must have 1, 2 or 3 dimensions")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}"
            )
        if stabilizer not in STABILIZERS:
            raise ValueError(f"model.stabilizer={stabilizer!r} is unknown; allowed: null, tanh")
        hidden = _positive_int("hidden_channels", hidden_channels)
        n_layers = _positive_int("n_layers", n_layers)
        self.n_modes = check_n_modes(n_modes, self.grid)
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.embedding = embedding_layout(positional_embedding)
        self.stabilizer = stabilizer
        self.pad_to_pow2 = bool(pad_to_pow2)
        lifting = 2 * hidden if lifting_channels is None else int(lifting_channels)
        projection = 2 * hidden if projection_channels is None else int(projection_channels)
        if lifting < 0:
            raise ValueError(f"model.lifting_channels={lifting_channels!r} must be >= 0 or null")
        _positive_int("projection_channels", projection)

        lift_in = self.in_channels + (len(self.grid) if self.embedding else 0)
        act = ACTIVATIONS[activation]
        if lifting:
            self.lifting = nn.Sequential(
                pointwise(lift_in, lifting), act(), pointwise(lifting, hidden)
            )
        else:
            self.lifting = nn.Sequential(pointwise(lift_in, hidden))
        self.blocks = nn.ModuleList(
            FNOBlock(
                SpectralConv(
                    hidden,
                    hidden,
                    self.n_modes,
                    factorization,
                    rank,
                    spectral_precision,
                    self.pad_to_pow2,
                ),
                act() if i < n_layers - 1 else None,
                tanh=stabilizer == "tanh",
            )
            for i in range(n_layers)
        )
        self.projection = nn.Sequential(
            pointwise(hidden, projection), act(), pointwise(projection, self.out_channels)
        )
        self.spectral_precision = check_mode(spectral_precision)

    def spectral_layers(self) -> list[SpectralConv]:
        return [block.spectral for block in self.blocks]

    def forward(self, x: Tensor) -> Tensor:
        d = len(self.grid)
        if x.ndim != d + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"FNO: input shape {tuple(x.shape)}; expected (N, {self.in_channels}, "
                f"{d} spatial sizes)"
            )
        spatial = tuple(x.shape[2:])
        if self.embedding:
            coords = grid_coordinates(spatial, x, self.embedding).expand(x.shape[0], -1, *spatial)
            x = torch.cat([x, coords], dim=1)
        v = self.lifting(x.flatten(2)).unflatten(2, spatial)
        for block in self.blocks:
            v = block(v)
        return self.projection(v.flatten(2)).unflatten(2, spatial)

    # ------------------------------------------------------ SpectralPrecisionControl
    def set_spectral_precision(self, mode: str) -> None:
        """Switch every spectral layer (a precision schedule's hook); ValueError if unknown."""
        self.spectral_precision = check_mode(mode)
        for layer in self.spectral_layers():
            layer.set_spectral_precision(mode)

    def spectral_report(self) -> dict[str, Any]:
        """{"spectral_precision": the mode now, "ran": the distinct combinations that ran in
        any layer, first seen first}."""
        seen: dict[tuple[tuple[str, Any], ...], None] = {}
        for layer in self.spectral_layers():
            seen.update(layer.ran)
        ran = []
        for entry in seen:
            row = dict(entry)
            row["padding"] = list(row["padding"]) if row["padding"] is not None else None
            ran.append(row)
        return {"spectral_precision": self.spectral_precision, "ran": ran}

    def set_contraction_order(self, order: str) -> None:
        """Contract every spectral layer's weights in `order` ("cheapest" | "naive" |
        "reconstruct", see spectral_contract): for the benchmark's comparison of their memory
        and time in whole training steps. Not a config key: the cheapest order is the product."""
        for layer in self.spectral_layers():
            layer.set_contraction_order(order)

    def check_device(self, device_type: str, input_dtype: torch.dtype | None = None) -> None:
        """Plan the training grid strictly on `device_type`: ValueError (one line naming
        model.spectral_precision and the ways out) when a half FFT cannot run on CUDA (fp16 with
        a grid that is not a power of two, pad_to_pow2 off). The CPU refuses nothing: there the
        FFT runs in full precision, which the record's note says. input_dtype: the dtype the
        network runs in (bf16 needs no half FFT at all); None assumes fp16, the strict case."""
        full = self.spectral_layers()[0].full_dtype()
        plan_spectral(
            device_type,
            self.spectral_precision,
            input_dtype or torch.float16,
            full,
            self.grid,
            self.pad_to_pow2,
            strict=True,
        )
