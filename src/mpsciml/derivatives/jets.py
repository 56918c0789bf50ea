"""Truncated Taylor jets: a column with its first and unmixed second input derivatives.

Why: Taylor mode (`derivatives.taylor`) streams derivatives through Linear layers and elementwise
activations. A hard-constraint output transform (u = -sin(pi x) + t (1 - x^2) N) or a periodic
input embedding (x -> cos(2 pi x / P), sin(2 pi x / P)) is neither; but both are short formulas of
the coordinates and the network's output columns. Written with arithmetic and the methods
`.sin()`, `.cos()`, `.exp()`, one formula runs on plain tensors (the forward, autograd) and on
`Jet`s (Taylor mode), where the product and chain rules carry the derivatives:

    (a b)_i  = a_i b + a b_i,          (a b)_ii = a_ii b + 2 a_i b_i + a b_ii
    f(a)_i   = f'(a) a_i,              f(a)_ii  = f''(a) a_i^2 + f'(a) a_ii

A jet holds value (N,), first (k, N) (or (k, 1): the same at every point) for the carried
directions, second (K, N) for the first K of them (the Taylor streams' convention); None stands
for an identically zero stream. Jets are unseeded and in the assembly dtype (fp32, fp64 for fp64):
`through_columns` divides the seeds out before and multiplies them back after, so the streams
around it keep their contract.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

Number = int | float


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


def _scale(a: Tensor | None, factor: Tensor | Number) -> Tensor | None:
    return None if a is None else a * factor


@dataclass
class Jet:
    """A column and its carried derivatives; `k2` = how many leading directions have a second
    stream (so a None second stream still knows its size)."""

    value: Tensor
    first: Tensor | None
    second: Tensor | None
    k2: int

    # ------------------------------------------------------------ arithmetic
    def _lift(self, other: Jet | Tensor | Number) -> Jet:
        if isinstance(other, Jet):
            return other
        value = other if isinstance(other, Tensor) else torch.as_tensor(other, dtype=self.dtype)
        return Jet(value, None, None, self.k2)

    @property
    def dtype(self) -> torch.dtype:
        return self.value.dtype

    def __add__(self, other: Jet | Tensor | Number) -> Jet:
        b = self._lift(other)
        return Jet(
            self.value + b.value, _add(self.first, b.first), _add(self.second, b.second), self.k2
        )

    __radd__ = __add__

    def __neg__(self) -> Jet:
        return Jet(-self.value, _scale(self.first, -1), _scale(self.second, -1), self.k2)

    def __sub__(self, other: Jet | Tensor | Number) -> Jet:
        return self + (-self._lift(other))

    def __rsub__(self, other: Jet | Tensor | Number) -> Jet:
        return self._lift(other) + (-self)

    def __mul__(self, other: Jet | Tensor | Number) -> Jet:
        b = self._lift(other)
        a, k = self, self.k2
        first = _add(_scale(a.first, b.value), _scale(b.first, a.value))
        second = _add(_scale(a.second, b.value), _scale(b.second, a.value))
        if k and a.first is not None and b.first is not None:
            second = _add(second, 2 * a.first[:k] * b.first[:k])
        return Jet(a.value * b.value, first, second, k)

    __rmul__ = __mul__

    def __truediv__(self, other: Number) -> Jet:
        return self * (1.0 / other)

    # -------------------------------------------------- elementwise functions
    def apply(self, f: Tensor, df: Tensor, d2f: Tensor) -> Jet:
        """f(self) from f, f' and f'' at self.value (the chain rule)."""
        k = self.k2
        first = _scale(self.first, df)
        second = _scale(self.second, df)
        if k and self.first is not None:
            second = _add(second, d2f * self.first[:k] ** 2)
        return Jet(f, first, second, k)

    def sin(self) -> Jet:
        s, c = torch.sin(self.value), torch.cos(self.value)
        return self.apply(s, c, -s)

    def cos(self) -> Jet:
        s, c = torch.sin(self.value), torch.cos(self.value)
        return self.apply(c, -s, -c)

    def exp(self) -> Jet:
        e = torch.exp(self.value)
        return self.apply(e, e, e)


Column = Tensor | Jet
#: a formula on columns: (coordinate columns, network output columns) -> output columns
ColumnFormula = Callable[[Sequence[Column], Sequence[Column]], Sequence[Column]]


def coordinate_jets(inputs: Tensor, first_dirs: Sequence[int], k2: int) -> list[Jet]:
    """The input columns as jets: d x_j / d x_i = 1 if i = j (the same at every point), no
    second derivative."""
    jets = []
    for j in range(inputs.shape[-1]):
        first = None
        if first_dirs:
            hits = torch.tensor([float(i == j) for i in first_dirs], dtype=inputs.dtype)
            first = hits.to(inputs.device).unsqueeze(-1)  # (k, 1)
        jets.append(Jet(inputs[:, j], first, None, k2))
    return jets


def stream_jets(
    value: Tensor, first: Tensor | None, second: Tensor | None, k2: int, dtype: torch.dtype
) -> list[Jet]:
    """Streams (value (N, C), first (k, N|1, C), second (K, N, C)), unseeded, as one jet per
    column in `dtype`."""
    return [
        Jet(
            value[:, c].to(dtype),
            None if first is None else first[..., c].to(dtype),
            None if second is None else second[..., c].to(dtype),
            k2,
        )
        for c in range(value.shape[-1])
    ]


def stack_jets(
    columns: Sequence[Column], n: int, k: int, k2: int
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Output jets back to streams: value (N, C), first (k, N, C), second (K, N, C); a stream
    that is zero for every column is None."""
    jets = [c if isinstance(c, Jet) else Jet(c, None, None, k2) for c in columns]
    value = torch.stack([j.value.expand(n) for j in jets], dim=-1)

    def stacked(parts: list[Tensor | None], rows: int) -> Tensor | None:
        if rows == 0 or all(p is None for p in parts):
            return None
        full = [
            torch.zeros(rows, n, dtype=value.dtype, device=value.device)
            if p is None
            else p.expand(rows, n)
            for p in parts
        ]
        return torch.stack(full, dim=-1)

    return value, stacked([j.first for j in jets], k), stacked([j.second for j in jets], k2)


def unseeded_jets(
    value: Tensor,
    first: Tensor | None,
    second: Tensor | None,
    k2: int,
    seeds: tuple[float | Tensor, float | Tensor],
    dtype: torch.dtype,
) -> list[Jet]:
    """Seeded streams (order-k streams carried times seed(k)) as unseeded jets in `dtype`."""
    s1, s2 = seeds
    first = None if first is None else first.to(dtype) / s1
    second = None if second is None else second.to(dtype) / s2
    return stream_jets(value, first, second, k2, dtype)


def seeded_streams(
    columns: Sequence[Column],
    n: int,
    k: int,
    k2: int,
    seeds: tuple[float | Tensor, float | Tensor],
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Jets back to seeded streams in `dtype`: the inverse of `unseeded_jets`."""
    s1, s2 = seeds
    value, first, second = stack_jets(columns, n, k, k2)
    return (
        value.to(dtype),
        None if first is None else (first * s1).to(dtype),
        None if second is None else (second * s2).to(dtype),
    )
