"""Spectral convolution (Li et al. 2021) on 1-D, 2-D or 3-D grids, with a precision of its own.

    x (batch, in, *spatial) --rfftn over the d spatial dims--> (batch, in, *spectrum)
      keep the lowest modes (n_modes per dim: both signs of the frequency on all dims but the
      last; n_modes // 2 + 1 non-negative ones on the last, rfft, dim; as neuraloperator)
      --contract with W (in, out, *modes)--> (batch, out, *modes), all other modes zero
      --irfftn to the input's spatial size--> (batch, out, *spatial)

The weights live on modes, not grid points, so the same layer runs at any resolution (zero-shot):
a finer grid adds only zero modes, a coarser one uses the modes it has.

FFT normalisation: norm="backward" (torch's default): the forward FFT sums the N = prod(spatial)
values unscaled and the inverse divides by N. So a coefficient can be N times the largest input
value: a field of mean 20 on 64 x 64 has a zero-frequency coefficient of 20 * 4096 = 81920, above
fp16's 65504. That is the overflow Tu et al. fix with tanh before the spectral convolution
(`FNO(stabilizer="tanh")`): |tanh| <= 1 bounds every coefficient by sum |x| <= N, which fits
fp16 for grids up to 65504 points (e.g. 128 x 128 = 16384; not 256 x 256).

Precision (`spectral_precision`, see `spectral_plan` for the rule on each device): the layer
declares `precision_policy = "own"`, so the precision plugin keeps its weights full precision and
hands it its input untouched; the layer turns autocast off inside itself too (so it composes with
an autocast it was not told about) and returns its output in the input's dtype. Every forward
records the combination that ran (`ran`), for the run's summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mpsciml.contract import SPECTRAL_PRECISIONS
from mpsciml.models.spectral_contract import ORDERS, contract, contract_real
from mpsciml.models.spectral_plan import SpectralPlan, check_mode, plan_spectral, record
from mpsciml.models.spectral_weights import (
    CPSpectralWeights,
    DenseSpectralWeights,
    check_factorization,
    corners,
    cp_rank,
    kept_sizes,
    mode_sizes,
)


class SpectralConv(nn.Module):
    """x (batch, in_channels, *spatial) -> (batch, out_channels, *spatial), d = len(n_modes).

    n_modes: modes kept per spatial dim (see the module docstring for the last dim).
    factorization: "dense" | "cp"; rank: CP rank (int) or fraction of the dense parameter count
    (float). spectral_precision: one of SPECTRAL_PRECISIONS. pad_to_pow2: zero-pad a grid that is
    not a power of two before a CUDA fp16 FFT (and crop after), instead of a full-precision FFT.
    order: the contraction order ("cheapest" | "naive" | "reconstruct", see spectral_contract).
    """

    precision_policy = "own"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_modes: Sequence[int],
        factorization: str = "dense",
        rank: float | int = 0.05,
        spectral_precision: str = "full",
        pad_to_pow2: bool = False,
        order: str = "cheapest",
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.n_modes = tuple(int(m) for m in n_modes)
        self.modes = mode_sizes(self.n_modes)
        self.factorization = check_factorization(factorization)
        self.weights: DenseSpectralWeights | CPSpectralWeights
        if factorization == "dense":
            self.weights = DenseSpectralWeights(in_channels, out_channels, self.modes)
        else:
            r = cp_rank(rank, in_channels, out_channels, self.modes)
            self.weights = CPSpectralWeights(in_channels, out_channels, self.modes, r)
        self.spectral_precision = check_mode(spectral_precision)
        self.pad_to_pow2 = pad_to_pow2
        self.order = _check_order(order)
        #: distinct (key, value) tuples of what ran, in first-seen order (a dict as ordered set)
        self.ran: dict[tuple[tuple[str, Any], ...], None] = {}

    @property
    def dim(self) -> int:
        return len(self.n_modes)

    def set_spectral_precision(self, mode: str) -> None:
        self.spectral_precision = check_mode(mode)

    def set_contraction_order(self, order: str) -> None:
        self.order = _check_order(order)

    def full_dtype(self) -> torch.dtype:
        """The layer's full precision: its weights' dtype (fp32, or fp64 in an fp64 run)."""
        return next(self.weights.parameters()).dtype

    def plan(self, x: Tensor, strict: bool = False) -> SpectralPlan:
        return plan_spectral(
            x.device.type,
            self.spectral_precision,
            x.dtype,
            self.full_dtype(),
            tuple(x.shape[-self.dim :]),
            self.pad_to_pow2,
            strict=strict,
        )

    def forward(self, x: Tensor) -> Tensor:
        plan = self.plan(x)
        self.ran[record(self.spectral_precision, x.device.type, plan)] = None
        with torch.autocast(x.device.type, enabled=False):
            return self._spectral(x, plan).to(x.dtype)

    def _spectral(self, x: Tensor, plan: SpectralPlan) -> Tensor:
        d = self.dim
        dims = tuple(range(-d, 0))
        spatial = tuple(x.shape[-d:])
        size = spatial
        x = x.to(plan.fft_dtype)
        if plan.padding is not None:
            pad: list[int] = []
            for n, p in zip(reversed(spatial), reversed(plan.padding), strict=True):
                pad += [0, p - n]
            x = nn.functional.pad(x, pad)
            size = plan.padding
        x_hat = rfftn(x, dims)  # (batch, in, *size[:-1], size[-1] // 2 + 1)
        spectrum = tuple(x_hat.shape[-d:])
        kept = kept_sizes(self.modes, spectrum)
        blocks = corners(kept, spectrum)
        batch = x.shape[0]

        # the kept modes, compact (batch, in, *kept): one slice-assign per corner block, into
        # modes-major storage (*kept, batch, in), the layout of the per-mode matmul
        x_modes = x_hat.new_empty((*kept, batch, self.in_channels)).permute(d, d + 1, *range(d))
        lead = (slice(None), slice(None))
        for small, big in blocks:
            x_modes[lead + small] = x_hat[lead + big]

        out_dtype = _complex(plan.inverse_fft_dtype)
        out_hat = torch.zeros(
            (batch, self.out_channels, *spectrum), dtype=out_dtype, device=x.device
        )
        if plan.contraction_dtype == self.full_dtype() and plan.fft_dtype == plan.contraction_dtype:
            y = contract(x_modes, self.weights, self.order)  # complex, full precision
            for small, big in blocks:
                out_hat[lead + big] = y[lead + small]
        else:
            parts = torch.view_as_real(x_modes).to(plan.contraction_dtype)
            re, im = contract_real(parts[..., 0], parts[..., 1], self.weights, self.order)
            out_real = torch.view_as_real(out_hat)  # (.., 2) view: writes land in out_hat
            for small, big in blocks:
                out_real[lead + big + (0,)] = re[lead + small]
                out_real[lead + big + (1,)] = im[lead + small]
        y = torch.fft.irfftn(out_hat, s=size, dim=dims)
        if plan.padding is not None:
            y = y[(..., *(slice(0, n) for n in spatial))]
        return y


class _RFFTN(torch.autograd.Function):
    """torch.fft.rfftn (norm="backward") that saves nothing for backward.

    Why: torch's r2c backward keeps its whole input alive. In a mixed run that input is the fp32
    copy the layer makes of an fp16 activation (the FFT runs in full precision), so every layer
    stored twice the activation it was given: ~1/4 of all saved bytes of an AMP FNO step. The
    adjoint needs only the sizes: for y = R F x (F the unnormalised DFT, R keeping the first
    n//2 + 1 entries of the last dim), dx = Re(F^H R^T dy) = Re(ifftn(dy zero-padded to n,
    norm="forward")); F^H is the unnormalised inverse DFT, "forward" norm leaves it unscaled.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, dims: tuple[int, ...]) -> Tensor:
        ctx.dims = dims
        ctx.last = x.shape[dims[-1]]
        return torch.fft.rfftn(x, dim=dims)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        shape = list(grad.shape)
        shape[ctx.dims[-1]] = ctx.last
        full = grad.new_zeros(shape)
        full.narrow(ctx.dims[-1], 0, grad.shape[ctx.dims[-1]]).copy_(grad)
        return torch.fft.ifftn(full, dim=ctx.dims, norm="forward").real, None


def rfftn(x: Tensor, dims: tuple[int, ...]) -> Tensor:
    """x (.., *spatial) real -> (.., *spatial[:-1], spatial[-1] // 2 + 1) complex, unnormalised;
    differentiable without keeping x (see `_RFFTN`)."""
    return _RFFTN.apply(x, dims)


def _check_order(order: str) -> str:
    if order not in ORDERS:
        raise ValueError(f"contraction order={order!r} is unknown; allowed: {', '.join(ORDERS)}")
    return order


def _complex(real: torch.dtype) -> torch.dtype:
    return {
        torch.float16: torch.complex32,
        torch.float32: torch.complex64,
        torch.float64: torch.complex128,
    }[real]


__all__ = ["SPECTRAL_PRECISIONS", "SpectralConv"]
