"""The CP spectral contraction in the cheapest order against the naive one (and against
reconstructing the dense weight first): measured time and saved-for-backward bytes, with
opt_einsum's FLOP count and largest intermediate, at the size of the FNO being benchmarked.

It uses the model's own public functions (`models.spectral_contract.contract`, `contract_real`,
`contraction_cost`), so it measures exactly what the spectral layer runs: fp32 complex einsums
for full precision, real-valued fp16 einsums over (real, imag) parts for half.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from mpsciml.benchmark.saved_bytes import SavedTensorMeter
from mpsciml.models.spectral_contract import ORDERS, contract, contract_real, contraction_cost
from mpsciml.models.spectral_weights import CPSpectralWeights, cp_rank, mode_sizes


def _step(x: torch.Tensor, weights: CPSpectralWeights, order: str, half: bool) -> torch.Tensor:
    """Forward of the contraction and a scalar to backpropagate."""
    if half:
        parts = torch.view_as_real(x).half()
        re, im = contract_real(parts[..., 0], parts[..., 1], weights, order)
        return (re.float().square().sum() + im.float().square().sum()) * 1e-6
    return contract(x, weights, order).abs().square().sum() * 1e-6


def measure_order(
    x: torch.Tensor, weights: CPSpectralWeights, order: str, half: bool, repeats: int
) -> dict[str, Any]:
    """Median forward + backward time over `repeats` (after one warm-up) and the bytes the
    forward saved for backward."""
    weights.zero_grad(set_to_none=True)
    _step(x, weights, order, half).backward()  # warm-up (and opt_einsum's path search)
    times = []
    for _ in range(repeats):
        weights.zero_grad(set_to_none=True)
        started = time.perf_counter()
        _step(x, weights, order, half).backward()
        times.append(time.perf_counter() - started)
    with SavedTensorMeter() as meter:
        loss = _step(x, weights, order, half)
    saved = meter.total_bytes
    loss.backward()
    cost = contraction_cost(tuple(x.shape), weights, order)
    return {
        "precision": "fp16 (real parts)" if half else "fp32 (complex)",
        "order": order,
        "ms": 1e3 * statistics.median(times),
        "saved_bytes": saved,
        **cost,
    }


def contraction_benchmark(
    batch: int, channels: int, n_modes: tuple[int, ...], rank: float | int, repeats: int = 5
) -> dict[str, Any]:
    """All orders, fp32 and fp16, for a CP weight of the FNO's size (x: the kept modes of a
    batch, complex). Ratios are to the cheapest order of the same precision."""
    torch.manual_seed(0)
    modes = mode_sizes(n_modes)
    r = cp_rank(rank, channels, channels, modes)
    weights = CPSpectralWeights(channels, channels, modes, r)
    x = torch.randn(batch, channels, *modes, dtype=torch.complex64)
    rows = []
    for half in (False, True):
        measured = [measure_order(x, weights, order, half, repeats) for order in ORDERS]
        cheapest = measured[0]
        for row in measured:
            row["time_vs_cheapest"] = row["ms"] / cheapest["ms"] if cheapest["ms"] else None
            row["saved_vs_cheapest"] = (
                row["saved_bytes"] / cheapest["saved_bytes"] if cheapest["saved_bytes"] else None
            )
        rows += measured
    return {"x_shape": list(x.shape), "rank": r, "repeats": repeats, "rows": rows}
