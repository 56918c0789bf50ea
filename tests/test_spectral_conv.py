"""The spectral convolution: which modes it keeps, its weights (dense, CP), the contraction orders,
the real-valued half contraction, and the device plan of `spectral_precision`."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from mpsciml.models.spectral_contract import (
    contract,
    contract_real,
    contraction_cost,
    contraction_steps,
)
from mpsciml.models.spectral_conv import SpectralConv, rfftn
from mpsciml.models.spectral_plan import SpectralPlan, plan_spectral
from mpsciml.models.spectral_weights import CPSpectralWeights, DenseSpectralWeights, cp_rank

F16, BF16, F32, F64 = torch.float16, torch.bfloat16, torch.float32, torch.float64


def identity_conv(channels: int, n_modes: tuple[int, ...]) -> SpectralConv:
    """Dense weights W[i, o, k] = delta_io: the layer is a low-pass filter on its kept modes."""
    conv = SpectralConv(channels, channels, n_modes)
    with torch.no_grad():
        w = conv.weights.weight
        w.zero_()
        for c in range(channels):
            w[c, c, ..., 0] = 1.0
    return conv


def low_pass(x: Tensor, n_modes: tuple[int, ...]) -> Tensor:
    """Reference: zero every rfft coefficient whose integer frequency is not kept (neuraloperator's
    convention: -(m//2) <= k <= m - m//2 - 1 on all dims but the last, 0 <= k <= m//2 there)."""
    d = len(n_modes)
    dims = tuple(range(-d, 0))
    x_hat = torch.fft.rfftn(x, dim=dims)
    mask = torch.ones(x_hat.shape[-d:], dtype=torch.bool)
    for j, (m, n) in enumerate(zip(n_modes, x.shape[-d:], strict=True)):
        if j < d - 1:
            k = torch.fft.fftfreq(n, 1.0 / n).round().long()
            keep = (k >= -(m // 2)) & (k <= m - m // 2 - 1)
        else:
            k = torch.arange(n // 2 + 1)
            keep = k <= m // 2
        shape = [1] * d
        shape[j] = -1
        mask = mask & keep.view(shape)
    return torch.fft.irfftn(x_hat * mask, s=x.shape[-d:], dim=dims)


@pytest.mark.parametrize(
    ("n_modes", "grid"), [((5,), (16,)), ((6, 5), (12, 16)), ((4, 3, 6), (8, 8, 8))]
)
def test_identity_weights_keep_exactly_the_lowest_modes(n_modes, grid):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *grid, dtype=F64)
    conv = identity_conv(3, n_modes).double()
    y = conv(x)
    assert y.shape == x.shape
    reference = low_pass(x, n_modes)
    torch.testing.assert_close(y, reference, rtol=0, atol=1e-12)
    assert (reference - x).abs().max() > 0.1  # something was really cut


def test_plane_waves_inside_the_band_pass_the_others_vanish():
    """n_modes (6, 6): first dim keeps -3..2, the last (rfft) dim 0..3."""
    n = 16
    t = torch.arange(n, dtype=F64) / n
    x1, x2 = torch.meshgrid(t, t, indexing="ij")
    wave = lambda a, b: torch.cos(2 * math.pi * (a * x1 + b * x2))  # noqa: E731
    kept = wave(1, 2) + wave(-3, 1)
    cut = wave(3, 1) + wave(1, 5) + wave(0, 4)
    y = identity_conv(1, (6, 6)).double()((kept + cut)[None, None])
    torch.testing.assert_close(y[0, 0], kept, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factorization", ["dense", "cp"])
@pytest.mark.parametrize(
    ("n_modes", "grid"), [((4,), (12,)), ((4, 4), (8, 12)), ((2, 2, 4), (6, 6, 6))]
)
def test_a_band_limited_field_gives_the_same_output_at_twice_the_resolution(
    factorization, n_modes, grid
):
    """Zero-shot: the weights live on modes, so a field with no energy outside them gives the
    same function on a finer grid (sampled at the shared points)."""
    torch.manual_seed(1)
    conv = SpectralConv(2, 3, n_modes, factorization=factorization, rank=4).double()
    coarse = low_pass(torch.randn(1, 2, *grid, dtype=F64), n_modes)
    fine_grid = tuple(2 * g for g in grid)
    fine = (
        torch.fft.irfftn(
            _embed(torch.fft.rfftn(coarse, dim=tuple(range(-len(grid), 0))), fine_grid),
            s=fine_grid,
            dim=tuple(range(-len(grid), 0)),
        )
        * math.prod(fine_grid)
        / math.prod(grid)
    )
    y_coarse, y_fine = conv(coarse), conv(fine)
    assert y_fine.shape[-len(grid) :] == fine_grid
    shared = y_fine[(..., *(slice(None, None, 2) for _ in grid))]
    torch.testing.assert_close(shared, y_coarse, rtol=1e-9, atol=1e-12)
    # and at half the resolution it still runs (fewer modes), with the input's size
    assert conv(coarse[(..., *(slice(None, None, 2) for _ in grid))]).shape[-1] == grid[-1] // 2


def _embed(x_hat: Tensor, fine: tuple[int, ...]) -> Tensor:
    """An rfft spectrum placed into the spectrum of a finer grid (zero padding in frequency)."""
    d = len(fine)
    out = x_hat.new_zeros((*x_hat.shape[:-d], *fine[:-1], fine[-1] // 2 + 1))
    coarse = x_hat.shape[-d:]
    # non-last dims: non-negative then negative frequencies (both below the coarse Nyquist)
    blocks = [((), ())]
    for j, n in enumerate(coarse):
        if j == d - 1:
            parts = [(slice(0, n), slice(0, n))]
        else:
            half = n // 2
            parts = [
                (slice(0, half), slice(0, half)),
                (slice(n - half, n), slice(fine[j] - half, fine[j])),
            ]
        blocks = [((*a, p), (*b, q)) for a, b in blocks for p, q in parts]
    for small, big in blocks:
        out[(..., *big)] = x_hat[(..., *small)]
    return out


def test_cp_parameter_count_is_the_rank_fraction_of_dense():
    modes = (12, 7)
    dense = SpectralConv(32, 32, (12, 12))
    cp = SpectralConv(32, 32, (12, 12), factorization="cp", rank=0.05)
    n_dense = sum(p.numel() for p in dense.parameters())
    n_cp = sum(p.numel() for p in cp.parameters())
    assert n_dense == 2 * 32 * 32 * math.prod(modes)  # (real, imag) of every complex weight
    assert n_cp == 2 * cp.weights.rank * (32 + 32 + 12 + 7)
    assert 0.045 < n_cp / n_dense < 0.055
    assert cp_rank(7, 32, 32, modes) == 7  # an int is the rank itself
    with pytest.raises(ValueError, match=r"model\.rank"):
        cp_rank(1.5, 32, 32, modes)


def test_unknown_factorization_names_the_key():
    with pytest.raises(ValueError, match=r"model.factorization='tt'.*dense, cp"):
        SpectralConv(2, 2, (4,), factorization="tt")


def _cp(modes: tuple[int, ...], dtype: torch.dtype = F64) -> CPSpectralWeights:
    torch.manual_seed(2)
    return CPSpectralWeights(5, 6, modes, rank=7).to(dtype)


def test_cp_contraction_orders_agree_and_cheapest_is_smaller():
    weights = _cp((4, 3))
    x = torch.randn(3, 5, 4, 3, dtype=torch.complex128)
    cheapest = contract(x, weights, "cheapest")
    torch.testing.assert_close(contract(x, weights, "naive"), cheapest, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        contract(x, weights, "reconstruct"), cheapest, rtol=1e-12, atol=1e-14
    )
    direct = torch.einsum("bixy,ioxy->boxy", x, torch.view_as_complex(weights.dense((4, 3))))
    torch.testing.assert_close(cheapest, direct, rtol=1e-12, atol=1e-14)
    cost = {order: contraction_cost(x.shape, weights, order) for order in ("cheapest", "naive")}
    # naive: x A B is (batch, modes, rank, out), `out` times the cheapest's largest tensor
    assert cost["naive"]["largest_intermediate"] == 3 * 4 * 3 * 7 * 6
    assert cost["cheapest"]["largest_intermediate"] < cost["naive"]["largest_intermediate"]
    assert cost["cheapest"]["flops"] < cost["naive"]["flops"]


def test_the_path_is_searched_once_per_shape():
    weights = _cp((4, 3), F32)
    x = torch.randn(2, 5, 4, 3, dtype=torch.complex64)
    contract(x, weights)
    before = contraction_steps.cache_info()
    contract(x, weights)
    after = contraction_steps.cache_info()
    assert after.hits == before.hits + 1 and after.misses == before.misses
    contract(torch.randn(9, 5, 4, 3, dtype=torch.complex64), weights)  # a new batch size
    assert contraction_steps.cache_info().misses == after.misses + 1


@pytest.mark.parametrize("factorization", ["dense", "cp"])
@pytest.mark.parametrize(("half", "tolerance"), [(F16, 2e-3), (BF16, 2e-2)])
def test_half_real_valued_contraction_matches_complex_fp32(factorization, half, tolerance):
    torch.manual_seed(3)
    modes = (6, 4)
    if factorization == "dense":
        weights = DenseSpectralWeights(8, 8, modes)
    else:
        weights = CPSpectralWeights(8, 8, modes, rank=10)
    x = torch.randn(4, 8, *modes, dtype=torch.complex64) * 50  # spectral magnitudes
    reference = contract(x, weights)
    parts = torch.view_as_real(x).to(half)
    for order in ("cheapest", "naive"):
        re, im = contract_real(parts[..., 0], parts[..., 1], weights, order)
        assert re.dtype == im.dtype == half
        error = (torch.complex(re.float(), im.float()) - reference).abs().max()
        assert error <= tolerance * reference.abs().max()


def test_half_contraction_gradients_reach_the_fp32_weights():
    weights = _cp((4, 3), F32)
    x = torch.randn(2, 5, 4, 3, dtype=torch.complex64)
    parts = torch.view_as_real(x).half()
    re, im = contract_real(parts[..., 0], parts[..., 1], weights)
    (re.float().sum() + im.float().sum()).backward()
    grads = [p.grad for p in weights.parameters()]
    assert all(g is not None and g.dtype == F32 and g.abs().sum() > 0 for g in grads)


# ---------------------------------------------------------------- the device plan
PLAN_TABLE = [
    # device, mode, input, grid, pad -> fft, contraction, inverse, padding, note contains
    ("cpu", "full", F32, (12, 12), False, F32, F32, F32, None, ""),
    ("cpu", "mixed", F32, (12, 12), False, F32, F16, F32, None, ""),
    ("cpu", "half", F32, (12, 12), False, F32, F16, F32, None, "no half FFT on the CPU"),
    ("cpu", "half", F16, (16, 16), False, F32, F16, F32, None, "no half FFT on the CPU"),
    ("cpu", "half", BF16, (16, 16), False, F32, BF16, F32, None, "no half FFT on the CPU"),
    ("cpu", "mixed", BF16, (16, 16), False, F32, BF16, F32, None, ""),
    ("cuda", "full", F16, (12, 12), False, F32, F32, F32, None, ""),
    ("cuda", "mixed", F16, (12, 12), False, F32, F16, F32, None, ""),
    ("cuda", "half", F16, (16, 32), False, F16, F16, F16, None, ""),
    ("cuda", "half", F32, (64,), False, F16, F16, F16, None, ""),
    ("cuda", "half", F16, (12, 16), True, F16, F16, F16, (16, 16), "zero-padded to (16, 16)"),
    (
        "cuda",
        "half",
        F16,
        (12, 12),
        False,
        F32,
        F16,
        F32,
        None,
        "is not one and pad_to_pow2 is off",
    ),
    ("cuda", "half", BF16, (12, 12), False, F32, BF16, F32, None, "no bf16 FFT"),
]


@pytest.mark.parametrize(
    ("device", "mode", "dtype", "grid", "pad", "fft", "contraction", "inverse", "padding", "note"),
    PLAN_TABLE,
)
def test_the_device_plan(device, mode, dtype, grid, pad, fft, contraction, inverse, padding, note):
    plan = plan_spectral(device, mode, dtype, F32, grid, pad)
    assert (plan.fft_dtype, plan.contraction_dtype, plan.inverse_fft_dtype) == (
        fft,
        contraction,
        inverse,
    )
    assert plan.padding == padding
    assert note in plan.note and bool(plan.note) == bool(note)


def test_full_precision_follows_the_weights_in_an_fp64_run():
    assert plan_spectral("cpu", "full", F64, F64, (8,)) == SpectralPlan(F64, F64, F64)
    assert plan_spectral("cpu", "mixed", F64, F64, (8,)).contraction_dtype == F16


def test_strict_plan_refuses_a_half_fft_it_cannot_run():
    with pytest.raises(ValueError, match=r"model.spectral_precision=half.*model.pad_to_pow2=true"):
        plan_spectral("cuda", "half", F16, F32, (12, 12), strict=True)
    assert plan_spectral("cuda", "half", F16, F32, (12, 12), True, strict=True).padding == (16, 16)
    assert plan_spectral("cuda", "half", BF16, F32, (12, 12), strict=True).fft_dtype == F32
    assert plan_spectral("cpu", "half", F16, F32, (12, 12), strict=True).fft_dtype == F32
    with pytest.raises(ValueError, match=r"model\.spectral_precision=.quarter."):
        plan_spectral("cpu", "quarter", F32, F32, (8,))


def test_the_padded_path_crops_back_to_the_input():
    """The padding branch (taken on CUDA) run on the CPU with an fp32 FFT: a periodic band-limited
    field is not the same after zero padding, but the shape and finiteness are what we check;
    and a grid that needs no padding gives exactly the unpadded result."""
    torch.manual_seed(4)
    conv = SpectralConv(2, 2, (4, 4)).double()
    x = torch.randn(1, 2, 12, 12, dtype=F64)
    padded = conv._spectral(x, SpectralPlan(F64, F64, F64, padding=(16, 16)))
    assert padded.shape == x.shape and torch.isfinite(padded).all()
    assert (padded - conv(x)).abs().max() > 1e-6  # zero padding changes a periodic convolution
    same = conv._spectral(x, SpectralPlan(F64, F64, F64, padding=(12, 12)))
    torch.testing.assert_close(same, conv(x), rtol=0, atol=1e-14)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_the_cuda_half_branch_with_an_emulated_fp16_fft(monkeypatch):
    """What `half` runs on CUDA (fp16 rfftn -> complex32 spectrum, fp16 contraction, fp16
    irfftn, padding to a power of two), run on the CPU with cuFFT's fp16 FFT emulated (fp32 FFT
    rounded to complex32): the dtype plumbing and the crop, against the fp32 padded result."""
    torch.manual_seed(8)
    conv = SpectralConv(3, 3, (4, 4))
    conv.weights.weight.data.mul_(30)
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    reference = conv._spectral(x, SpectralPlan(F32, F32, F32, padding=(16, 16)))
    fft = (torch.fft.rfftn, torch.fft.irfftn, torch.fft.ifftn)  # torch's, before patching

    def fp16_rfftn(t: Tensor, *args, **kwargs) -> Tensor:
        assert t.dtype == F16 and t.shape[-2:] == (16, 16)
        return fft[0](t.float(), *args, **kwargs).to(torch.complex32)

    def fp16_irfftn(t: Tensor, *args, **kwargs) -> Tensor:
        assert t.dtype == torch.complex32
        return fft[1](t.to(torch.complex64), *args, **kwargs).half()

    def fp16_ifftn(t: Tensor, *args, **kwargs) -> Tensor:  # the FFT's backward
        assert t.dtype == torch.complex32
        return fft[2](t.to(torch.complex64), *args, **kwargs).to(torch.complex32)

    monkeypatch.setattr(torch.fft, "ifftn", fp16_ifftn)
    monkeypatch.setattr(torch.fft, "rfftn", fp16_rfftn)
    monkeypatch.setattr(torch.fft, "irfftn", fp16_irfftn)
    y = conv._spectral(x, SpectralPlan(F16, F16, F16, padding=(16, 16)))
    assert y.dtype == F16 and y.shape == x.shape
    assert (y.float() - reference).abs().max() <= 2e-3 * reference.abs().max()
    y.float().sum().backward()
    assert conv.weights.weight.grad.dtype == F32 and x.grad.dtype == F32


def test_our_rfftn_has_torchs_gradient_and_keeps_nothing():
    """The FFT's input is a full-precision copy in a mixed run; torch's r2c backward would keep
    it (twice the fp16 activation per layer). Ours keeps nothing and gives the same gradient."""
    torch.manual_seed(9)
    for shape, dims in [
        ((2, 3, 8), (-1,)),
        ((2, 3, 6, 7), (-2, -1)),
        ((1, 2, 4, 5, 6), (-3, -2, -1)),
    ]:
        x = torch.randn(*shape, dtype=F64, requires_grad=True)
        g = torch.randn_like(torch.fft.rfftn(x.detach(), dim=dims))
        ours = torch.autograd.grad((rfftn(x, dims) * g.conj()).real.sum(), x)[0]
        theirs = torch.autograd.grad((torch.fft.rfftn(x, dim=dims) * g.conj()).real.sum(), x)[0]
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    conv = SpectralConv(4, 4, (4, 4), spectral_precision="mixed")
    x = torch.randn(2, 4, 16, 16, dtype=F16, requires_grad=True)
    saved: list[Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        conv(x)
    assert saved and all(t.numel() < x.numel() for t in saved)  # only the kept modes and weights
