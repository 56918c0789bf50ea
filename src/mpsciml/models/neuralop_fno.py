"""neuraloperator's FNO (or its CP-factorised TFNO) behind our grid-operator interface.

`model=neuralop_fno` trains the reference implementation of Tu et al. with our modules, precision
plugin, sweeps and reports, so a user sees it next to ours (`model=fno`) at equal size. It is a
thin wrapper: the network is `neuralop.models.FNO`, built from our config keys, and the wrapper
adds what a run needs of a spectral model (`contract.SpectralPrecisionControl`):

- `model.spectral_precision` is neuraloperator's `fno_block_precision`; a schedule may change it.
- Its `SpectralConv` layers carry `precision_policy = "own"`: our plugin keeps their (complex)
  weights in full precision and turns autocast off inside them, as neuraloperator's own AMP
  recipe does. Before `full` and `mixed` the layer's input is cast to the weights' real dtype
  (fp32; fp64 in an fp64 run): an fp16/bf16 activation from an autocast or pure low-precision
  run would otherwise reach the CPU's FFT, which has no half types. neuraloperator's output
  buffer is complex64 whatever comes in, so in an fp64 run its inverse FFT runs in fp32 (the
  record says so).
- What each spectral layer really ran is recorded from its forwards (`spectral_report`).
  neuraloperator 2.0's modes differ from ours (`model=fno`): `mixed` runs the FFT in fp32 and both
  the contraction and the inverse FFT in fp16 (ours: inverse in full); `half` runs all three in
  fp16 (always fp16, also in a bf16 run). Both need CUDA: on the CPU its fp16 FFT crashes
  ("MKL FFT doesn't support tensors of type: Half"), so `check_device("cpu")` refuses them and
  points to `model=fno`, which runs them on the CPU. On CUDA an fp16 FFT needs power-of-two
  sizes, and neuraloperator has no padding to one, so a grid of other sizes is refused too.

Sizes: the keys mean what they mean for `model=fno` (`n_modes` is neuraloperator's own count of
Fourier coefficients per dimension; `lifting_channels`/`projection_channels` become its ratios to
`hidden_channels`), and `use_channel_mlp: false` (our default, not neuraloperator's) drops its
extra channel MLP per block, so the two networks are the same architecture with the same number
of parameters: lifting, blocks act(W v + K(s(v))), projection.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mpsciml.contract import SPECTRAL_PRECISIONS, ModelKind
from mpsciml.models.mlp import ACTIVATIONS

#: what `model.factorization` may be, and what neuraloperator calls it
FACTORIZATIONS = {"dense": None, "cp": "cp", "tucker": "tucker"}
STABILIZERS = (None, "tanh")
#: the settings neuraloperator cannot run on a CPU (no half-precision FFT there)
NEEDS_CUDA = ("mixed", "half")
_FULL_PATH = torch.float32  # neuraloperator's spectral output buffer is complex64 (cfloat)


def _per_dimension(name: str, value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    """One positive integer per grid dimension, from an int or a sequence; a float such as 12.5,
    a string or a wrong count is a ValueError naming the key (one line, exit 2), not a
    TypeError from `int()` or iteration."""

    def whole(v: Any) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()

    items = [value] * dims if whole(value) else value
    try:
        ok = all(whole(v) for v in items)
    except TypeError:  # neither a number nor a sequence
        ok = False
    values = tuple(int(v) for v in items) if ok else ()
    if len(values) != dims or min(values) < 1:
        raise ValueError(
            f"model.{name}={value!r} is invalid: an integer >= 1 or one per grid dimension ({dims})"
        )
    return values


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


#: suffix of the real (..., 2) parameter that stores a complex weight of neuraloperator's
REAL_SUFFIX = "_real"


def store_complex_as_real(layer: nn.Module) -> list[tuple[nn.Module, str]]:
    """Keep every complex parameter under `layer` as a real (..., 2) parameter `<name>_real`;
    `<name>` becomes a plain attribute holding the complex view, refreshed by `complex_views`
    before each forward (so a `.to()`, which replaces the storage, never leaves it stale).

    Why: torch's loss scaling (`GradScaler.unscale_`, the CPU kernel
    `_amp_foreach_non_finite_check_and_unscale_`) has no complex types, so a mixed-precision run
    would stop at its first step, and our fp64 cast and gradient diagnostics skip complex tensors.
    Adam on the (real, imag) pairs is what torch's Adam does with a complex parameter anyway.
    torch's own parametrizations cannot be used: tensorly-torch's factorized tensors refuse the
    subclass they create. Returns the (module, name) pairs converted.
    """
    converted = []
    for module in list(layer.modules()):
        for name, param in list(module.named_parameters(recurse=False)):
            if not param.is_complex():
                continue
            real = nn.Parameter(torch.view_as_real(param.detach()).clone())
            del module._parameters[name]
            module.register_parameter(name + REAL_SUFFIX, real)
            object.__setattr__(module, name, torch.view_as_complex(real))
            converted.append((module, name))
    return converted


def complex_views(converted: list[tuple[nn.Module, str]]) -> None:
    """Point each converted weight's complex name at a fresh view of its real parameter."""
    for module, name in converted:
        object.__setattr__(module, name, torch.view_as_complex(getattr(module, name + REAL_SUFFIX)))


class NeuralopFNO(nn.Module):
    """neuraloperator's FNO/TFNO on grid fields.

    x (N, in_channels, *grid) -> (N, out_channels, *grid), at any grid (zero-shot), 1-3 dims.
    """

    accepts = (ModelKind.GRID_OPERATOR,)

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
        lifting_channels: int | None = None,
        projection_channels: int | None = None,
        use_channel_mlp: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        from neuralop.layers.spectral_convolution import SpectralConv
        from neuralop.models import FNO

        self.grid = tuple(int(n) for n in grid)
        modes = _per_dimension("n_modes", n_modes, len(self.grid))
        if any(m > n for m, n in zip(modes, self.grid, strict=True)):
            raise ValueError(
                f"model.n_modes={n_modes!r} is too large for the training grid {self.grid}: at "
                f"most {list(self.grid)} (one per dimension)"
            )
        if factorization not in FACTORIZATIONS:
            raise ValueError(
                f"model.factorization={factorization!r} is unknown; allowed: "
                f"{', '.join(FACTORIZATIONS)}"
            )
        if stabilizer not in STABILIZERS:
            raise ValueError(f"model.stabilizer={stabilizer!r} is unknown; allowed: null, tanh")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}"
            )
        self._check_mode(spectral_precision)
        self.factorization = factorization
        self.stabilizer = stabilizer

        def ratio(channels: int) -> float:  # neuraloperator sizes these relative to the width
            return int(channels) / int(hidden_channels)

        with warnings.catch_warnings():  # tensorly's import-time chatter about backends
            warnings.simplefilter("ignore")
            self.net = FNO(
                n_modes=modes,
                in_channels=in_channels,
                out_channels=out_channels,
                hidden_channels=hidden_channels,
                n_layers=n_layers,
                lifting_channel_ratio=2 if lifting_channels is None else ratio(lifting_channels),
                projection_channel_ratio=2
                if projection_channels is None
                else ratio(projection_channels),
                # neuraloperator's own grid embedding (coordinates i/n) for any layout model=fno
                # names (true, periodic, cells, nodes): the same number of input channels
                positional_embedding="grid" if positional_embedding else None,
                non_linearity=ACTIVATIONS[activation](),
                use_channel_mlp=use_channel_mlp,
                fno_block_precision=spectral_precision,
                stabilizer=stabilizer,
                factorization=FACTORIZATIONS[factorization],
                rank=rank,
                **dict(extra or {}),
            )
        self.spectral_layers = [m for m in self.net.modules() if isinstance(m, SpectralConv)]
        self._converted = {
            id(layer): store_complex_as_real(layer) for layer in self.spectral_layers
        }
        self._ran: dict[tuple[Any, ...], dict[str, Any]] = {}
        for layer in self.spectral_layers:
            layer.precision_policy = "own"  # our plugin: full-precision weights, no autocast
            layer.register_forward_pre_hook(self._cast_input)
            layer.register_forward_hook(self._record)
        self.spectral_precision = spectral_precision

    def forward(self, x: Tensor) -> Tensor:
        """x (N, in_channels, *spatial) -> (N, out_channels, *spatial).

        x is taken to the lifting layer's dtype first: neuraloperator registers its blocks
        (whose spectral layers stay fp32) before the lifting, so the module's rule "inputs in
        the dtype of the first weights" would hand fp32 to an fp16 lifting in a pure fp16 run."""
        return self.net(x.to(next(self.net.lifting.parameters()).dtype))

    # ------------------------------------------------ SpectralPrecisionControl
    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in SPECTRAL_PRECISIONS:
            raise ValueError(
                f"model.spectral_precision={mode!r} is unknown; allowed: "
                f"{', '.join(SPECTRAL_PRECISIONS)}"
            )

    def set_spectral_precision(self, mode: str) -> None:
        """neuraloperator reads `fno_block_precision` at every forward, so a switch is a
        change of that attribute on the model, its blocks and each spectral layer."""
        self._check_mode(mode)
        self.spectral_precision = mode
        self.net.fno_block_precision = mode
        self.net.fno_blocks.fno_block_precision = mode
        for layer in self.spectral_layers:
            layer.fno_block_precision = mode

    def spectral_report(self) -> dict[str, Any]:
        return {"spectral_precision": self.spectral_precision, "ran": list(self._ran.values())}

    def check_device(self, device_type: str, input_dtype: torch.dtype | None = None) -> None:
        """Refuse what neuraloperator cannot run on `device_type` (`check_mode_on`).
        input_dtype is not consulted: its half modes are fp16 whatever the run's dtype."""
        del input_dtype
        self.check_mode_on(self.spectral_precision, device_type)

    def check_mode_on(self, mode: str, device_type: str) -> None:
        """`check_device` for a mode this model may be switched to later (a schedule)."""
        if mode not in NEEDS_CUDA:
            return
        if device_type != "cuda":
            raise ValueError(
                f"model.spectral_precision={mode} is not possible with model=neuralop_fno on "
                f"{device_type}: neuraloperator runs that FFT in fp16, which the CPU lacks (it "
                "crashes); use model=fno (ours runs it on the CPU, FFT in fp32) or "
                "model.spectral_precision=full"
            )
        odd = [n for n in self.grid if not _is_power_of_two(n)]
        if odd:
            raise ValueError(
                f"model.spectral_precision={mode} with model=neuralop_fno needs a power-of-two "
                f"grid on CUDA (fp16 cuFFT), the grid is {self.grid}; use model=fno "
                "model.pad_to_pow2=true, a power-of-two resolution, or "
                "model.spectral_precision=full"
            )

    # ------------------------------------------------------------ the hooks
    def _cast_input(self, layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """Fresh complex views of the weights; before full and mixed the input in the weights'
        real dtype (fp32, or fp64 in an fp64 run; see the module docstring); before half
        neuraloperator casts to fp16 itself."""
        converted = self._converted[id(layer)]
        complex_views(converted)
        x = args[0]
        full = getattr(*converted[0]).real.dtype if converted else _FULL_PATH
        if layer.fno_block_precision == "half" or x.dtype == full:
            return None
        return (x.to(full), *args[1:])

    def _record(self, layer: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        """What ran: the FFT's dtype is that of the input neuraloperator got (it casts to fp16
        itself for half); the contraction and inverse FFT follow from the mode as its 2.0 code
        runs them (output buffer complex64 for full, complex-half for mixed and half)."""
        mode = layer.fno_block_precision
        x = args[0]
        half = "float16"
        fft = half if mode == "half" else str(x.dtype).removeprefix("torch.")
        contraction = half if mode in NEEDS_CUDA else fft
        inverse = half if mode in NEEDS_CUDA else "float32"
        notes = []
        if mode == "mixed":
            notes.append("neuraloperator's mixed runs the inverse FFT in fp16 too")
        if fft == "float64":
            notes.append("neuraloperator's output buffer is complex64: inverse FFT in fp32")
        key = (mode, x.device.type, fft, contraction, inverse)
        if key not in self._ran:
            self._ran[key] = {
                "spectral_precision": mode,
                "device": x.device.type,
                "fft_dtype": fft,
                "contraction_dtype": contraction,
                "inverse_fft_dtype": inverse,
                "padding": None,
                "note": "; ".join(notes) or None,
            }
