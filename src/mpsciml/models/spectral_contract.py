"""Contract the kept Fourier modes with spectral weights, in a chosen pairwise order.

The einsum of a spectral weight (`DenseSpectralWeights.equation()`, `CPSpectralWeights...`) is
run as a sequence of pairwise einsums. Which pairs, in which order:

  * "cheapest": the order opt_einsum's path search finds ('optimal' search: at most 6 operands
    here). For 2-D CP at FNO sizes it forms M_1 A (modes_1, rank, in), contracts x with it over
    the input channels, forms M_2 B and sums over the rank last: no intermediate is larger than
    (batch, modes, rank) or the output. The path depends only on the shapes and is computed once
    per (equation, shapes, dtype) and cached.
  * "naive": left to right, in the order the operands are written (x, A, B, M_1, ..., M_d): for
    CP, x A B is a (batch, modes, rank, out) intermediate, `out` times larger than needed.
  * "reconstruct" (CP only): build the dense W first, then one contraction, as an unfactorised
    implementation does; W (in, out, modes) is stored for backward.

Both `contract` (complex, in the weights' precision) and `contract_real` (half precision, as
real-valued products over (real, imag) parts) follow the same steps; a dense W (dense weights,
or "reconstruct") is one batched matmul over the modes (`modes_bmm`, `modes_bmm_real`: a real
block product [x_re, x_im] [[w_re, w_im], [-w_im, w_re]] in half). For CP in half precision each
pairwise complex product is done as four real einsums (re*re - im*im, re*im + im*re): the
cheapest path's small intermediates are kept (reconstructing a dense half W would give its memory
saving back), all stored tensors stay real half, and the CPU, which has no complex-half matmul,
can run it. Four products instead of Gauss's three: the three-product trick subtracts large
sums and loses bits that fp16 does not have.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import opt_einsum
import torch
from torch import Tensor

from mpsciml.models.spectral_weights import CPSpectralWeights, DenseSpectralWeights

ORDERS = ("cheapest", "naive", "reconstruct")

SpectralWeights = DenseSpectralWeights | CPSpectralWeights
#: one pairwise step: positions to pop from the operand list (descending), and its einsum
Step = tuple[tuple[int, ...], str]


@lru_cache(maxsize=256)
def contraction_steps(
    equation: str, shapes: tuple[tuple[int, ...], ...], dtype: torch.dtype, order: str
) -> tuple[Step, ...]:
    """The pairwise steps of `equation` over operands of `shapes` in `order` (cached: the path
    search runs once per equation, shapes and dtype). `dtype` is part of the key only so that a
    cost model that weighs bytes could differ by dtype; opt_einsum's does not."""
    del dtype
    _, info = opt_einsum.contract_path(
        equation, *shapes, shapes=True, optimize=_optimize(order, len(shapes))
    )
    return tuple((tuple(step[0]), step[2]) for step in info.contraction_list)


def _optimize(order: str, n_operands: int) -> str | list[tuple[int, int]]:
    """opt_einsum's `optimize` for `order`. Left to right as an explicit path: opt_einsum
    appends each step's result at the end of the operand list, so after the first pair (0, 1)
    the running result sits last and the next operand first."""
    if order == "cheapest":
        return "optimal"
    if order == "naive":
        return [(0, 1)] + [(0, n_operands - 2 - j) for j in range(n_operands - 2)]
    raise ValueError(f"contraction order={order!r} is unknown; allowed: {', '.join(ORDERS)}")


def contraction_cost(
    x_shape: Sequence[int], weights: SpectralWeights, order: str = "cheapest"
) -> dict[str, int]:
    """What `order` costs for a kept-mode input of `x_shape` (batch, in, *kept), from
    opt_einsum's count: {"flops": its FLOP count, "largest_intermediate": elements of the largest
    tensor a step makes}. For the benchmark's table next to measured time and memory."""
    with torch.no_grad():
        equation, ops, _ = _plan(x_shape, weights, order, torch.float32)
    shapes = (tuple(x_shape), *(tuple(w.shape[:-1]) for w in ops))
    plain = "naive" if order == "naive" else "cheapest"
    _, info = opt_einsum.contract_path(
        equation, *shapes, shapes=True, optimize=_optimize(plain, len(shapes))
    )
    flops = int(info.opt_cost)
    largest = int(info.largest_intermediate)
    if order == "reconstruct":  # the dense W is made too
        largest = max(largest, math.prod(shapes[1]))
    return {"flops": flops, "largest_intermediate": largest}


def _plan(
    x_shape: Sequence[int], weights: SpectralWeights, order: str, dtype: torch.dtype
) -> tuple[str, list[Tensor], tuple[Step, ...]]:
    """(equation, real (.., 2) weight operands, steps) of one contraction."""
    kept = tuple(x_shape[2:])
    if order == "reconstruct" and isinstance(weights, CPSpectralWeights):
        letters = weights.equation().split(",")[0][2:]
        equation = f"bi{letters},io{letters}->bo{letters}"
        ops = [weights.dense(kept)]
        order = "cheapest"  # two operands: one step either way
    else:
        equation = weights.equation()
        ops = weights.operands(kept)
        if order == "reconstruct":  # a dense W is its own reconstruction
            order = "cheapest"
    shapes = (tuple(x_shape), *(tuple(w.shape[:-1]) for w in ops))
    return equation, ops, contraction_steps(equation, shapes, dtype, order)


def contract(x: Tensor, weights: SpectralWeights, order: str = "cheapest") -> Tensor:
    """x (batch, in, *kept) complex -> (batch, out, *kept) complex, in x's precision.

    The weights (real (.., 2) parameters) are viewed as complex in their own dtype, which for a
    full-precision run is x's real dtype."""
    _, ops, steps = _plan(x.shape, weights, order, x.dtype)
    operands = [x, *(torch.view_as_complex(w.to(x.real.dtype).contiguous()) for w in ops)]
    if len(operands) == 2:  # a dense W (in, out, *kept): one product per mode
        return modes_bmm(*operands)
    for positions, einsum in steps:
        taken = [operands.pop(p) for p in positions]
        operands.append(torch.einsum(einsum, *taken))
    return operands[0]


def contract_real(
    x_re: Tensor, x_im: Tensor, weights: SpectralWeights, order: str = "cheapest"
) -> tuple[Tensor, Tensor]:
    """The complex contraction as real einsums in the dtype of x_re/x_im (fp16 or bf16).

    x_re, x_im (batch, in, *kept) real -> (re, im) each (batch, out, *kept). The weights are
    cast to that dtype (a differentiable cast: their gradients arrive in full precision)."""
    dtype = x_re.dtype
    _, ops, steps = _plan(x_re.shape, weights, order, dtype)
    if len(ops) == 1:  # a dense W: one real block product per mode
        return modes_bmm_real(x_re, x_im, ops[0].to(dtype))
    operands: list[tuple[Tensor, Tensor]] = [(x_re, x_im)]
    for w in ops:
        w = w.to(dtype)
        operands.append((w[..., 0], w[..., 1]))
    for positions, einsum in steps:
        (a_re, a_im), (b_re, b_im) = (operands.pop(p) for p in positions)
        re = torch.einsum(einsum, a_re, b_re) - torch.einsum(einsum, a_im, b_im)
        im = torch.einsum(einsum, a_re, b_im) + torch.einsum(einsum, a_im, b_re)
        operands.append((re, im))
    return operands[0]


def modes_bmm(x: Tensor, w: Tensor) -> Tensor:
    """out[b, o, k] = sum_i x[b, i, k] w[i, o, k] as one batched matmul over the modes k.

    x (batch, in, *kept), w (in, out, *kept) -> (batch, out, *kept), a view of a modes-major
    (*kept, batch, out) result. Why not torch.einsum: for complex operands on the CPU it loops
    over the modes with a copy per mode (~3x slower than one bmm of contiguous operands here).
    Pass x as a view of modes-major storage (as SpectralConv does) and its reshape is free."""
    d = x.ndim - 2
    batch, n_in, *kept = x.shape
    n_out = w.shape[1]
    modes_first = (*range(2, 2 + d), 0, 1)
    xm = x.permute(modes_first).reshape(-1, batch, n_in)
    wm = w.permute(modes_first).reshape(-1, n_in, n_out)
    y = torch.bmm(xm, wm).view(*kept, batch, n_out)
    return y.permute(d, d + 1, *range(d))


def modes_bmm_real(x_re: Tensor, x_im: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """`modes_bmm` over (real, imag) parts as one real block product per mode:
    [x_re, x_im] (batch, 2 in) @ [[w_re, w_im], [-w_im, w_re]] (2 in, 2 out) = [re, im].

    x_re, x_im (batch, in, *kept), w (in, out, *kept, 2) real -> (re, im) (batch, out, *kept)."""
    d = x_re.ndim - 2
    batch, n_in, *kept = x_re.shape
    n_out = w.shape[1]
    modes_first = (*range(2, 2 + d), 0, 1)
    xm = torch.cat([x_re.permute(modes_first), x_im.permute(modes_first)], dim=-1)
    w_re, w_im = w[..., 0].permute(modes_first), w[..., 1].permute(modes_first)
    block = torch.cat([torch.cat([w_re, w_im], -1), torch.cat([-w_im, w_re], -1)], -2)
    y = torch.bmm(xm.reshape(-1, batch, 2 * n_in), block.reshape(-1, 2 * n_in, 2 * n_out))
    y = y.view(*kept, batch, 2 * n_out).permute(d, d + 1, *range(d))
    return y[:, :n_out], y[:, n_out:]
