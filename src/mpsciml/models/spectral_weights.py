"""The weights of a spectral convolution and their contraction with the kept Fourier modes.

A spectral convolution multiplies the kept modes of the input by a complex weight per
(in channel, out channel, mode):

    out[b, o, k] = sum_i x[b, i, k] W[i, o, k]          k = (k_1, ..., k_d), the kept modes

Two parametrisations of W (in, out, m_1, ..., m_d):
  * dense: every entry its own complex parameter (Li et al. 2021).
  * CP (the TFNO of Kossaifi et al., used in Tu et al.'s experiments): a rank-R canonical
    polyadic factorisation W[i, o, k] = sum_r A[i, r] B[o, r] M_1[k_1, r] ... M_d[k_d, r], with
    R chosen as a fraction of the dense parameter count. Written here with plain torch.

Complex parameters are stored as real tensors with a trailing (real, imag) axis of 2: the
precision plugin casts floating parameters (complex ones are not "floating point" to torch, so an
fp64 run would leave them complex64), and its gradient diagnostics read real tensors.

Contraction order matters for CP: the operands (x, A, B, M_1..M_d) can be contracted pairwise in
any order, and the intermediate sizes differ by orders of magnitude. `contract` uses the cheapest
order opt_einsum's path search finds (computed once per shapes and dtype, cached), or the naive
left-to-right order, or (CP only) the reconstruction of the dense W first, so a benchmark can
compare their memory and time. Half precision runs as real-valued einsums over (real, imag)
parts (`contract_real`), because torch has no complex-half matmul on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

FACTORIZATIONS = ("dense", "cp")
_MODE_LETTERS = "xyz"


def check_factorization(factorization: str) -> str:
    if factorization not in FACTORIZATIONS:
        allowed = ", ".join(FACTORIZATIONS)
        raise ValueError(f"model.factorization={factorization!r} is unknown; allowed: {allowed}")
    return factorization


def mode_sizes(n_modes: Sequence[int]) -> tuple[int, ...]:
    """Weight sizes along the mode dims: n_modes on all but the last dim (both signs of the
    frequency), n_modes // 2 + 1 on the last (the rfft keeps the non-negative half only)."""
    *lead, last = n_modes
    return (*lead, last // 2 + 1)


def kept_sizes(weight_modes: Sequence[int], spectrum: Sequence[int]) -> tuple[int, ...]:
    """How many modes per dim a forward uses: all the weights hold, or fewer when the input's
    spectrum is smaller (zero-shot at a coarser grid than the training grid)."""
    return tuple(min(m, s) for m, s in zip(weight_modes, spectrum, strict=True))


def corners(kept: Sequence[int], full: Sequence[int]) -> list[tuple[tuple[slice, ...], ...]]:
    """Pairs (slices into a compact (.., kept) tensor, slices into a (.., full) one) covering the
    kept modes: on every dim but the last the first ceil(k/2) (frequencies 0, 1, ...) and the last
    floor(k/2) entries (the negative frequencies), on the last dim the first k. Natural FFT order,
    so no fftshift (a copy of the whole spectrum) is needed; 2^(d-1) blocks."""
    blocks: list[tuple[tuple[slice, ...], ...]] = [((), ())]
    for dim, (k, n) in enumerate(zip(kept, full, strict=True)):
        last = dim == len(kept) - 1
        pos, neg = (k, 0) if last else (k - k // 2, k // 2)
        parts = [(slice(0, pos), slice(0, pos))]
        if neg:
            parts.append((slice(k - neg, k), slice(n - neg, n)))
        blocks = [((*a, pa), (*b, pb)) for a, b in blocks for pa, pb in parts]
    return blocks


def cut_modes(weight: Tensor, kept: Sequence[int], first_mode_dim: int) -> Tensor:
    """`weight` reduced to the `kept` modes along its mode dims (first_mode_dim, ...), in the
    layout of `corners`. Returns `weight` itself when nothing is cut (the usual case: the input
    has at least the training grid's modes)."""
    last = len(kept) - 1
    for j, k in enumerate(kept):
        weight = cut_dim(weight, first_mode_dim + j, k, rfft=j == last)
    return weight


def cut_dim(weight: Tensor, dim: int, k: int, rfft: bool) -> Tensor:
    """`weight` cut to k modes along `dim`: the first k on the rfft (last) dim, else the first
    ceil(k/2) and the last floor(k/2) (non-negative, then negative frequencies)."""
    m = weight.shape[dim]
    if k == m:
        return weight
    if rfft:
        return weight.narrow(dim, 0, k)
    pos, neg = k - k // 2, k // 2
    head = weight.narrow(dim, 0, pos)
    return torch.cat([head, weight.narrow(dim, m - neg, neg)], dim) if neg else head


class DenseSpectralWeights(nn.Module):
    """weight (in, out, *modes, 2): complex W as (real, imag); init U[0, 1) * 1/(in*out) in both
    parts as Li et al.'s FNO, small enough that the untrained spectral path adds little to the
    pointwise skip."""

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int]) -> None:
        super().__init__()
        self.modes = tuple(modes)
        scale = 1.0 / (in_channels * out_channels)
        self.weight = nn.Parameter(scale * torch.rand(in_channels, out_channels, *modes, 2))

    def equation(self) -> str:
        m = _MODE_LETTERS[: len(self.modes)]
        return f"bi{m},io{m}->bo{m}"

    def operands(self, kept: Sequence[int]) -> list[Tensor]:
        return [cut_modes(self.weight, kept, 2)]

    def dense(self, kept: Sequence[int]) -> Tensor:
        """W (in, out, *kept, 2)."""
        return self.operands(kept)[0]


class CPSpectralWeights(nn.Module):
    """W[i, o, k] = sum_r A[i, r] B[o, r] M_1[k_1, r] ... M_d[k_d, r], all factors complex.

    Parameters: factor_in (in, R, 2), factor_out (out, R, 2), factor_modes.<j> (m_j, R, 2).
    Init: every factor entry complex normal with E|z|^2 = s^2, s^(2(d+2)) = t^2 / R, so that
    E|W|^2 = t^2 with t = 1/(in*out), the dense init's scale.
    """

    def __init__(self, in_channels: int, out_channels: int, modes: Sequence[int], rank: int):
        super().__init__()
        self.modes = tuple(modes)
        self.rank = rank
        target = 1.0 / (in_channels * out_channels)
        std = (target**2 / rank) ** (1.0 / (2 * (len(modes) + 2)))
        part = std / math.sqrt(2.0)  # each of real and imag

        def factor(n: int) -> nn.Parameter:
            return nn.Parameter(part * torch.randn(n, rank, 2))

        self.factor_in = factor(in_channels)
        self.factor_out = factor(out_channels)
        self.factor_modes = nn.ParameterList(factor(m) for m in modes)

    def equation(self) -> str:
        m = _MODE_LETTERS[: len(self.modes)]
        factors = ",".join(f"{letter}r" for letter in m)
        return f"bi{m},ir,or,{factors}->bo{m}"

    def operands(self, kept: Sequence[int]) -> list[Tensor]:
        last = len(kept) - 1
        modes = [
            cut_dim(f, 0, k, rfft=j == last)
            for j, (f, k) in enumerate(zip(self.factor_modes, kept, strict=True))
        ]
        return [self.factor_in, self.factor_out, *modes]

    def dense(self, kept: Sequence[int]) -> Tensor:
        """The reconstructed W (in, out, *kept, 2), the way an unfactorised contraction sees it."""
        m = _MODE_LETTERS[: len(self.modes)]
        eq = f"ir,or,{','.join(f'{letter}r' for letter in m)}->io{m}"
        ops = [torch.view_as_complex(t) for t in self.operands(kept)]
        return torch.view_as_real(torch.einsum(eq, *ops))


def cp_rank(rank: float | int, in_channels: int, out_channels: int, modes: Sequence[int]) -> int:
    """The CP rank R for `model.rank`: an int is R itself; a float in (0, 1] is the fraction of
    the dense parameter count the factors may hold (neuraloperator's convention), i.e.
    R = round(rank * in * out * prod(modes) / (in + out + sum(modes))), at least 1."""
    if isinstance(rank, bool) or not isinstance(rank, int | float) or rank <= 0:
        raise ValueError(
            f"model.rank={rank!r} is invalid: an int >= 1 (the CP rank) or a float in (0, 1] "
            "(fraction of the dense parameter count)"
        )
    if isinstance(rank, int):
        return rank
    if rank > 1:
        raise ValueError(
            f"model.rank={rank!r} is invalid: a float rank is a fraction of the dense parameter "
            "count, in (0, 1]; write an int for the CP rank itself"
        )
    dense = in_channels * out_channels * math.prod(modes)
    return max(1, round(rank * dense / (in_channels + out_channels + sum(modes))))
