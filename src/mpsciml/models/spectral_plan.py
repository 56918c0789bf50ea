"""What a spectral convolution runs in, decided from the device, the mode and the input: a pure
function, so the CUDA branch is tested on a CPU-only machine.

The rule (`model.spectral_precision`, Tu et al. 2024), with full = the weights' dtype (fp32, or
fp64 in an fp64 run) and half = bf16 when the incoming tensor is bf16, else fp16:

    full   FFT, contraction, inverse FFT in full
    mixed  FFT and inverse FFT in full, contraction in half
    half   FFT, contraction, inverse FFT in half where the device has a half FFT

Only CUDA has a half FFT (cuFFT fp16), and only for power-of-two sizes; bf16 has no FFT on any
device. So `half` falls back to a full FFT (contraction still in half) on the CPU, for bf16, and
for a grid that is not a power of two (unless `pad_to_pow2` zero-pads it to one); the plan's
`note` says which fallback ran, so the run's record never hides a substitution. On the CPU `mixed`
and `half` therefore run the same kernels; only the recorded mode and note differ.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mpsciml.contract import SPECTRAL_PRECISIONS

NOTE_NO_HALF_FFT = "no half FFT on {device}: FFT and inverse FFT in {full}"
NOTE_BF16 = "no bf16 FFT on any device: FFT and inverse FFT in {full}"
NOTE_NOT_POW2 = (
    "cuFFT fp16 needs power-of-two sizes, grid {grid} is not one and pad_to_pow2 is off: "
    "FFT and inverse FFT in {full}"
)
NOTE_PADDED = "grid {grid} zero-padded to {padded} for cuFFT fp16 (power-of-two sizes)"


@dataclass(frozen=True)
class SpectralPlan:
    """The dtypes one forward of a spectral layer runs in.

    padding: the padded spatial shape when the input is zero-padded (at the end of each spatial
    dim) before the half FFT and cropped after the inverse, else None.
    """

    fft_dtype: torch.dtype
    contraction_dtype: torch.dtype
    inverse_fft_dtype: torch.dtype
    padding: tuple[int, ...] | None = None
    note: str = ""


def is_pow2(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def next_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def check_mode(mode: str) -> str:
    """`mode` if it is one of SPECTRAL_PRECISIONS, else ValueError naming the key."""
    if mode not in SPECTRAL_PRECISIONS:
        allowed = ", ".join(SPECTRAL_PRECISIONS)
        raise ValueError(f"model.spectral_precision={mode!r} is unknown; allowed: {allowed}")
    return mode


def half_dtype(input_dtype: torch.dtype) -> torch.dtype:
    """The half precision a spectral layer uses: bf16 for a bf16 input (bf16 runs), else fp16."""
    return torch.bfloat16 if input_dtype == torch.bfloat16 else torch.float16


def plan_spectral(
    device_type: str,
    mode: str,
    input_dtype: torch.dtype,
    full_dtype: torch.dtype,
    grid: tuple[int, ...],
    pad_to_pow2: bool = False,
    strict: bool = False,
) -> SpectralPlan:
    """The dtypes (and padding) to run for `mode` on `device_type` with an input of `input_dtype`
    on `grid` (its spatial sizes); `full_dtype` is the layer weights' dtype.

    strict: a half FFT that cannot run on CUDA because `grid` is not a power of two (and
    `pad_to_pow2` is off) raises ValueError instead of falling back to a full FFT. The model's
    `check_device` plans the training grid strictly, so a run cannot start with a half FFT it
    will not get; a forward at another grid (zero-shot) falls back and records why.
    """
    check_mode(mode)
    full = full_dtype
    if mode == "full":
        return SpectralPlan(full, full, full)
    half = half_dtype(input_dtype)
    if mode == "mixed":
        return SpectralPlan(full, half, full)
    # half
    name = _name(full)
    if device_type != "cuda":
        where = "the CPU" if device_type == "cpu" else device_type  # cuFFT is the only half FFT
        return SpectralPlan(full, half, full, note=NOTE_NO_HALF_FFT.format(device=where, full=name))
    if half == torch.bfloat16:
        return SpectralPlan(full, half, full, note=NOTE_BF16.format(full=name))
    grid = tuple(int(n) for n in grid)
    if all(is_pow2(n) for n in grid):
        return SpectralPlan(half, half, half)
    if pad_to_pow2:
        padded = tuple(next_pow2(n) for n in grid)
        note = NOTE_PADDED.format(grid=grid, padded=padded)
        return SpectralPlan(half, half, half, padding=padded, note=note)
    if strict:
        raise ValueError(
            f"model.spectral_precision=half needs a power-of-two grid on CUDA (cuFFT fp16), the "
            f"training grid is {grid}: set model.pad_to_pow2=true, use "
            "model.spectral_precision=mixed, or a power-of-two resolution"
        )
    return SpectralPlan(full, half, full, note=NOTE_NOT_POW2.format(grid=grid, full=name))


def record(mode: str, device_type: str, plan: SpectralPlan) -> tuple[tuple[str, object], ...]:
    """One entry of a spectral report as a hashable tuple of (key, value) pairs, so a layer can
    keep the distinct combinations it ran in an ordered set (a dict) at no cost per forward."""
    return (
        ("spectral_precision", mode),
        ("device", device_type),
        ("fft_dtype", _name(plan.fft_dtype)),
        ("contraction_dtype", _name(plan.contraction_dtype)),
        ("inverse_fft_dtype", _name(plan.inverse_fft_dtype)),
        ("padding", plan.padding),  # a tuple here (hashable); the report lists it
        ("note", plan.note),
    )


def _name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: the names the report uses."""
    return str(dtype).removeprefix("torch.")
