"""Our FNO: shapes in 1-3 D and at other resolutions, its config errors, what each
spectral_precision runs and records (alone and under the precision plugin), the CUDA check, and
the fp16 overflow the tanh stabilizer prevents (Tu et al. 2024)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from mpsciml.contract import ModelKind, SpectralPrecisionControl
from mpsciml.models.fno import FNO, FNOBlock, embedding_layout, grid_coordinates, stabilize
from mpsciml.models.spectral_conv import SpectralConv
from mpsciml.models.spectral_plan import plan_spectral
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.policy import find_policies, input_dtype

CONF = "conf/model/fno.yaml"


def tiny(grid=(8, 8), **options) -> FNO:
    torch.manual_seed(0)
    options = {"hidden_channels": 6, "n_modes": 4, "n_layers": 2, **options}
    return FNO(2, 3, grid, **options)


@pytest.mark.parametrize("grid", [(16,), (8, 12), (6, 6, 8)])
@pytest.mark.parametrize("factorization", ["dense", "cp"])
def test_shapes_at_the_training_grid_and_other_resolutions(grid, factorization):
    model = tiny(grid, factorization=factorization)
    x = torch.randn(2, 2, *grid)
    assert model(x).shape == (2, 3, *grid)
    finer = tuple(2 * g for g in grid)
    assert model(torch.randn(1, 2, *finer)).shape == (1, 3, *finer)
    coarser = tuple(g // 2 for g in grid)  # fewer modes than the weights hold: runs with those
    assert model(torch.randn(1, 2, *coarser)).shape == (1, 3, *coarser)


def test_the_contract_and_the_config():
    model = tiny()
    assert FNO.accepts == (ModelKind.GRID_OPERATOR,)
    assert isinstance(model, SpectralPrecisionControl)
    policies = find_policies(model)
    assert len(policies) == 2 and all(p.value == "own" for _, p in policies.values())
    cfg = OmegaConf.load(CONF)
    assert cfg._target_ == "mpsciml.models.fno.FNO"
    expected = {
        "hidden_channels": 32,
        "n_modes": 12,
        "n_layers": 4,
        "activation": "gelu",
        "factorization": "dense",
        "rank": 0.05,
        "spectral_precision": "full",
        "stabilizer": None,
        "positional_embedding": True,
        "pad_to_pow2": False,
    }
    assert {key: cfg[key] for key in expected} == expected
    options = {key: value for key, value in cfg.items() if key != "_target_"}
    assert FNO(1, 1, (32, 32), **options)(torch.randn(1, 1, 32, 32)).shape == (1, 1, 32, 32)


def test_positional_embedding_adds_coordinates_as_channels():
    with_grid, without = tiny(), tiny(positional_embedding=False)
    assert with_grid.lifting[0].in_channels == 2 + 2
    assert without.lifting[0].in_channels == 2
    # a constant input still gives a field that varies in space only through the coordinates
    y = without(torch.ones(1, 2, 8, 8))
    assert (y - y[..., :1, :1]).abs().max() < 1e-5
    y = with_grid(torch.ones(1, 2, 8, 8))
    assert (y - y[..., :1, :1]).abs().max() > 1e-4


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (True, [0.0, 0.25, 0.5, 0.75]),
        ("periodic", [0.0, 0.25, 0.5, 0.75]),
        ("cells", [0.125, 0.375, 0.625, 0.875]),
        ("nodes", [0.0, 1 / 3, 2 / 3, 1.0]),
    ],
)
def test_coordinates_follow_the_layout(layout, expected):
    coords = grid_coordinates((4, 3), torch.empty(0, dtype=torch.float64), embedding_layout(layout))
    assert coords.shape == (1, 2, 4, 3)
    torch.testing.assert_close(coords[0, 0, :, 0], torch.tensor(expected, dtype=torch.float64))
    assert torch.equal(coords[0, 0, :, 0], coords[0, 0, :, 2])  # constant along the other dim
    assert tiny(positional_embedding=layout)(torch.ones(1, 2, 8, 8)).shape == (1, 3, 8, 8)


def test_an_unknown_embedding_names_the_key():
    assert embedding_layout(False) is None
    with pytest.raises(ValueError, match=r"model\.positional_embedding='centres' is invalid"):
        tiny(positional_embedding="centres")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n_modes": 9}, r"model\.n_modes=\[9, 9\] is too large for the training grid \(8, 8\)"),
        ({"n_modes": [4, 4, 4]}, r"model\.n_modes=\[4, 4, 4\] has 3 entries for a 2-D grid"),
        ({"n_modes": 0}, r"model\.n_modes=0 must be an integer >= 1"),
        (
            {"factorization": "tucker"},
            r"model\.factorization='tucker' is unknown; allowed: dense, cp",
        ),
        ({"spectral_precision": "fp8"}, r"model\.spectral_precision='fp8' is unknown"),
        ({"stabilizer": "clip"}, r"model\.stabilizer='clip' is unknown"),
        ({"activation": "swish"}, r"model\.activation='swish' is unknown"),
        ({"factorization": "cp", "rank": 0}, r"model\.rank=0 is invalid"),
    ],
)
def test_bad_options_name_their_key(options, message):
    with pytest.raises(ValueError, match=message):
        tiny(**options)


def test_lifting_and_projection_widths():
    two = tiny(lifting_channels=None, projection_channels=5)
    one = tiny(lifting_channels=0)
    assert [layer.out_channels for layer in two.lifting[::2]] == [12, 6]  # 2 * hidden, hidden
    assert [layer.out_channels for layer in one.lifting] == [6]
    assert [layer.out_channels for layer in two.projection[::2]] == [5, 3]
    assert one(torch.randn(1, 2, 8, 8)).shape == (1, 3, 8, 8)


def test_n_modes_up_to_the_grid_is_allowed():
    assert tiny((8, 6), n_modes=[8, 6])(torch.randn(1, 2, 8, 6)).shape == (1, 3, 8, 6)


EXPECTED_CPU = {
    "full": ("float32", "float32", "float32", ""),
    "mixed": ("float32", "float16", "float32", ""),
    "half": ("float32", "float16", "float32", "no half FFT on the CPU"),
}


@pytest.mark.parametrize("mode", ["full", "mixed", "half"])
def test_each_spectral_precision_records_what_ran_on_the_cpu(mode):
    model = tiny(spectral_precision=mode)
    model(torch.randn(2, 2, 8, 8))
    report = model.spectral_report()
    assert report["spectral_precision"] == mode
    (ran,) = report["ran"]  # two layers, one combination
    fft, contraction, inverse, note = EXPECTED_CPU[mode]
    assert (ran["fft_dtype"], ran["contraction_dtype"], ran["inverse_fft_dtype"]) == (
        fft,
        contraction,
        inverse,
    )
    assert ran["spectral_precision"] == mode and ran["device"] == "cpu"
    assert ran["padding"] is None
    assert note in ran["note"] and bool(ran["note"]) == bool(note)


def test_mixed_and_half_run_the_same_kernels_on_the_cpu_and_differ_from_full():
    """On the CPU `half` cannot run its FFT in half, so it computes exactly what `mixed` does;
    only the record (mode and note) tells them apart. Both differ from `full` by fp16 rounding."""
    x = torch.randn(2, 2, 8, 8)
    outputs = {}
    for mode in ("full", "mixed", "half"):
        model = tiny(spectral_precision=mode)
        model.blocks[0].spectral.weights.weight.data.mul_(50)  # make the spectral path count
        outputs[mode] = model(x)
    assert torch.equal(outputs["mixed"], outputs["half"])
    assert 0 < (outputs["mixed"] - outputs["full"]).abs().max() < 1e-2


def test_set_spectral_precision_switches_every_layer_and_the_record_keeps_both():
    model = tiny(spectral_precision="half")
    x = torch.randn(1, 2, 8, 8)
    model(x)
    model.set_spectral_precision("full")
    assert model.spectral_precision == "full"
    assert {layer.spectral_precision for layer in model.spectral_layers()} == {"full"}
    model(x)
    ran = model.spectral_report()["ran"]
    assert [row["spectral_precision"] for row in ran] == ["half", "full"]
    with pytest.raises(ValueError, match=r"model\.spectral_precision='double'"):
        model.set_spectral_precision("double")
    assert model.spectral_precision == "full"


def test_check_device_refuses_a_half_fft_cuda_cannot_run():
    tiny((12, 12), spectral_precision="half").check_device("cpu")  # the CPU refuses nothing
    tiny((12, 12), spectral_precision="mixed").check_device("cuda")
    tiny((16, 8), spectral_precision="half").check_device("cuda")
    tiny((12, 12), spectral_precision="half", pad_to_pow2=True).check_device("cuda")
    tiny((12, 12), spectral_precision="half").check_device("cuda", torch.bfloat16)  # no half FFT
    with pytest.raises(
        ValueError, match=r"model\.spectral_precision=half.*\(12, 12\).*pad_to_pow2"
    ):
        tiny((12, 12), spectral_precision="half").check_device("cuda")
    # a schedule switching to half later is checked against the mode it switched to
    model = tiny((12, 12))
    model.check_device("cuda")
    model.set_spectral_precision("half")
    with pytest.raises(ValueError, match="power-of-two"):
        model.check_device("cuda")


@pytest.mark.parametrize(("precision", "refused"), [("bf16_mixed", False), ("bf16", False),
                                                    ("mixed", True), ("fp32", True)])  # fmt: skip
def test_the_run_checks_the_device_with_its_precision_s_activation_dtype(precision, refused):
    """compose asks with `precision=`'s compute dtype: a bf16 run's spectral half is bf16, which
    needs no cuFFT fp16 and so no power-of-two grid; it was refused as if it were fp16."""
    from mpsciml.compose import check_device
    from mpsciml.precision.registry import get_spec

    model = tiny((12, 12), spectral_precision="half")
    dtype = get_spec(precision).compute_dtype
    if refused:
        with pytest.raises(ValueError, match="power-of-two"):
            check_device(model, "cuda", dtype)
    else:
        check_device(model, "cuda", dtype)


PRECISIONS = ["fp64", "fp32", "mixed", "bf16_mixed", "fp16", "bf16"]
#: the run's precision -> (the network's output dtype, the full and half dtypes of the layer)
RUN = {
    "fp64": (torch.float64, "float64", "float16"),
    "fp32": (torch.float32, "float32", "float16"),
    "mixed": (torch.float16, "float32", "float16"),
    "bf16_mixed": (torch.bfloat16, "float32", "bfloat16"),
    "fp16": (torch.float16, "float32", "float16"),
    "bf16": (torch.bfloat16, "float32", "bfloat16"),
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("mode", ["full", "mixed", "half"])
def test_every_precision_composes_with_every_spectral_precision(precision, mode):
    """The plugin casts the network and opens autocast, the spectral layers keep full weights
    and run their own rule; forward and backward stay finite and the record says what ran."""
    model = tiny(spectral_precision=mode)
    plugin = SciMLPrecision(precision, "cpu")
    plugin.convert_module(model)
    x = torch.randn(2, 2, 8, 8).to(input_dtype(model))
    with plugin.forward_context():
        y = model(x)
    y.float().square().mean().backward()
    out_dtype, full, half = RUN[precision]
    assert y.dtype == out_dtype and torch.isfinite(y).all()
    for layer in model.spectral_layers():
        assert {str(p.dtype) for p in layer.parameters()} == {f"torch.{full}"}
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    (ran,) = model.spectral_report()["ran"]
    assert ran["fft_dtype"] == ran["inverse_fft_dtype"] == full
    assert ran["contraction_dtype"] == (full if mode == "full" else half)


def test_fp16_spectral_path_overflows_without_tanh_and_not_with_it():
    """Tu et al.'s failure, with our FFT normalisation (norm="backward": the forward FFT sums the
    N = 64 * 64 = 4096 values). Activations of mean ~20 after the lifting (e.g. an unnormalised
    Darcy coefficient of 3..12 through a linear layer) give a zero-frequency coefficient of
    ~20 * 4096 = 81920 > 65504, inf in fp16, and inf - inf = nan in the contraction. tanh bounds
    |x| <= 1, so every coefficient is at most N = 4096. Under the plugin's mixed precision
    (autocast fp16) with spectral_precision=half, as a user would run it; on the CPU the
    FFT is fp32 and the overflow happens where its result enters the fp16 contraction (on CUDA
    inside the fp16 FFT itself)."""
    generator = torch.Generator().manual_seed(5)
    v = 20.0 + torch.randn(2, 4, 64, 64, generator=generator)
    assert torch.fft.rfftn(v, dim=(-2, -1)).abs().max() > 65504  # the fp32 coefficient
    assert torch.fft.rfftn(torch.tanh(v), dim=(-2, -1)).abs().max() <= 64 * 64

    def block(tanh: bool, mode: str) -> FNOBlock:
        torch.manual_seed(6)
        return FNOBlock(SpectralConv(4, 4, (12, 12), spectral_precision=mode), None, tanh)

    outputs = {}
    for tanh in (False, True):
        for mode in ("half", "full"):
            layer = block(tanh, mode)
            plugin = SciMLPrecision("mixed", "cpu")
            plugin.convert_module(layer)
            with plugin.forward_context():
                outputs[tanh, mode] = layer(v.half()).float()
    assert not torch.isfinite(outputs[False, "half"]).all()
    assert torch.isfinite(outputs[False, "full"]).all()  # the same input in full precision is fine
    assert torch.isfinite(outputs[True, "half"]).all()
    difference = (outputs[True, "half"] - outputs[True, "full"]).abs().max()
    assert difference <= 1e-2 * outputs[True, "full"].abs().max()


def test_the_stabilizer_keeps_no_activation_of_its_own():
    """tanh keeps its input, which the skip keeps anyway: a block with tanh saves no more bytes
    for backward than one without, and tanh's gradient is exact."""

    def saved_bytes(tanh: bool) -> int:
        torch.manual_seed(0)
        block = FNOBlock(SpectralConv(4, 4, (4, 4)), torch.nn.GELU(), tanh)
        storages: dict[int, int] = {}

        def pack(t):
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            block(torch.randn(2, 4, 16, 16, requires_grad=True))
        return sum(storages.values())

    assert saved_bytes(True) == saved_bytes(False)
    v = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(stabilize, (v,))


def test_a_few_steps_reduce_the_loss():
    """Learn a periodic smoothing of smooth inputs (fields of the lowest 3 x 3 modes, which the
    spectral layers hold): 30 Adam steps with the contraction in fp16."""
    model = tiny((16, 16), spectral_precision="mixed")
    generator = torch.Generator().manual_seed(7)
    x_hat = torch.zeros(8, 2, 16, 9, dtype=torch.complex64)
    x_hat[..., :3, :3] = torch.randn(8, 2, 3, 3, dtype=torch.complex64, generator=generator) * 50
    x = torch.fft.irfftn(x_hat, s=(16, 16))
    kernel = torch.ones(3, 2, 3, 3) / 18
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), "circular"), kernel)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = (model(x) - y).square().mean() / y.square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_contraction_orders_give_the_same_cp_model():
    model = tiny(factorization="cp", rank=5)
    x = torch.randn(2, 2, 8, 8)
    outputs = {}
    for order in ("cheapest", "naive", "reconstruct"):
        model.set_contraction_order(order)
        outputs[order] = model(x)
    torch.testing.assert_close(outputs["naive"], outputs["cheapest"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outputs["reconstruct"], outputs["cheapest"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="order='fastest'"):
        model.set_contraction_order("fastest")


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_a_padded_half_forward_as_on_cuda_is_recorded(monkeypatch):
    """The whole forward of `half` with pad_to_pow2 as CUDA plans it (12 x 12 padded to 16 x 16,
    fp16 FFTs), on the CPU with cuFFT's fp16 FFT emulated: it runs, trains, and the report lists
    the padding and the fp16 FFTs."""
    model = tiny((12, 12), spectral_precision="half", pad_to_pow2=True)
    for layer in model.spectral_layers():
        cuda_plan = plan_spectral("cuda", "half", torch.float16, torch.float32, (12, 12), True)
        monkeypatch.setattr(layer, "plan", lambda x, strict=False, plan=cuda_plan: plan)
    fft = (torch.fft.rfftn, torch.fft.irfftn, torch.fft.ifftn)  # torch's, before patching

    def emulate(index: int, complex_out: bool):
        def run(t, *args, **kwargs):
            assert t.dtype in (torch.float16, torch.complex32)
            wide = t.float() if t.dtype == torch.float16 else t.to(torch.complex64)
            out = fft[index](wide, *args, **kwargs)
            return out.to(torch.complex32) if complex_out else out.half()

        return run

    monkeypatch.setattr(torch.fft, "rfftn", emulate(0, True))
    monkeypatch.setattr(torch.fft, "irfftn", emulate(1, False))
    monkeypatch.setattr(torch.fft, "ifftn", emulate(2, True))
    x = torch.randn(2, 2, 12, 12).half()
    plugin = SciMLPrecision("fp16", "cpu")
    plugin.convert_module(model)
    with plugin.forward_context():
        y = model(x)
    y.float().sum().backward()
    assert y.shape == (2, 3, 12, 12) and torch.isfinite(y).all()
    (ran,) = model.spectral_report()["ran"]
    assert ran["padding"] == [16, 16]
    assert ran["fft_dtype"] == ran["contraction_dtype"] == ran["inverse_fft_dtype"] == "float16"
    assert "zero-padded to (16, 16)" in ran["note"]
