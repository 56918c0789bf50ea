"""model=neuralop_fno: neuraloperator's FNO/TFNO behind our grid-operator interface, in every
precision of our plugin, with its spectral precision controlled, checked and recorded."""

from __future__ import annotations

import pytest
import torch

from mpsciml.contract import SpectralPrecisionControl
from mpsciml.models.fno import FNO
from mpsciml.models.neuralop_fno import NeuralopFNO
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.policy import find_policies, input_dtype
from mpsciml.precision.registry import PRECISIONS

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SMALL = {"hidden_channels": 8, "n_modes": 4, "n_layers": 2}


def small(**options: object) -> NeuralopFNO:
    torch.manual_seed(0)
    return NeuralopFNO(1, 1, (16, 16), **{**SMALL, **options})


def test_shapes_at_the_training_grid_and_zero_shot():
    model = small()
    assert isinstance(model, SpectralPrecisionControl)
    assert model(torch.randn(3, 1, 16, 16)).shape == (3, 1, 16, 16)
    assert model(torch.randn(2, 1, 32, 24)).shape == (2, 1, 32, 24)


@pytest.mark.parametrize("factorization", ["dense", "cp"])
def test_same_size_as_our_fno(factorization):
    """The keys mean the same for both models: the same network, parameter for parameter (CP:
    the same rank; neuraloperator adds a weight vector of length rank and a bias per layer)."""
    ours = FNO(1, 1, (16, 16), factorization=factorization, **SMALL)
    theirs = small(factorization=factorization)
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    if factorization == "dense":
        assert n_theirs == n_ours
    else:
        assert 0 < n_theirs - n_ours < 0.1 * n_ours


def test_spectral_layers_declare_their_own_precision_and_keep_real_weights():
    model = small(factorization="cp")
    policies = find_policies(model)
    assert len(policies) == SMALL["n_layers"]
    assert all(policy.value == "own" for _, policy in policies.values())
    assert all("precision_policy" in vars(layer) for layer in model.spectral_layers)
    # GradScaler and our fp64 cast know no complex tensors: every parameter is real
    assert not any(p.is_complex() for p in model.parameters())


def test_options_pass_through_to_neuraloperator():
    model = small(stabilizer="tanh", factorization="cp", spectral_precision="mixed")
    assert model.net.fno_blocks.stabilizer == "tanh"
    assert type(model.spectral_layers[0].weight).__name__ == "CPTensor"
    assert all(layer.fno_block_precision == "mixed" for layer in model.spectral_layers)


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"n_modes": 17}, "model.n_modes=17"),
        ({"n_modes": 4.5}, "model.n_modes=4.5"),  # was a TypeError: 'float' is not iterable
        ({"n_modes": [4]}, "model.n_modes=[4]"),
        ({"n_modes": "4"}, "model.n_modes='4'"),
        ({"factorization": "tt2"}, "model.factorization='tt2'"),
        ({"stabilizer": "relu"}, "model.stabilizer='relu'"),
        ({"spectral_precision": "quarter"}, "model.spectral_precision='quarter'"),
    ],
)
def test_bad_options_are_one_line_naming_the_key(options, key):
    with pytest.raises(ValueError, match="^" + key.replace("[", r"\[")) as info:
        small(**options)
    assert "\n" not in str(info.value)


def test_neuraloperator_half_and_mixed_crash_on_the_cpu():
    """Why check_device refuses them: neuraloperator's own code has no CPU path for them."""
    import neuralop.models

    for mode in ("mixed", "half"):
        reference = neuralop.models.FNO(n_modes=(4, 4), in_channels=1, out_channels=1,
                                 hidden_channels=8, fno_block_precision=mode)  # fmt: skip
        with pytest.raises(RuntimeError, match="Half"):
            reference(torch.randn(1, 1, 16, 16))


def test_check_device():
    model = small()
    model.check_device("cpu")
    for mode in ("mixed", "half"):
        model.set_spectral_precision(mode)
        with pytest.raises(ValueError, match=f"model.spectral_precision={mode} .*model=fno"):
            model.check_device("cpu")
        model.check_device("cuda")  # 16 x 16 is a power of two
    odd = NeuralopFNO(1, 1, (12, 12), spectral_precision="half", **SMALL)
    with pytest.raises(ValueError, match=r"power-of-two grid on CUDA.*\(12, 12\)"):
        odd.check_device("cuda")


def test_set_spectral_precision_switches_every_layer_and_refuses_unknown_modes():
    model = small()
    model.set_spectral_precision("half")
    assert model.spectral_precision == "half"
    assert {layer.fno_block_precision for layer in model.spectral_layers} == {"half"}
    with pytest.raises(ValueError, match=r"model\.spectral_precision='double'"):
        model.set_spectral_precision("double")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_trains_a_step_in_every_precision_and_records_what_ran(precision):
    """Through our plugin as a run does: weights cast, autocast, loss scaling (the mixed step
    fails without real-valued storage of the complex weights), one Adam step that moves them."""
    model = small(factorization="cp", stabilizer="tanh")
    plugin = SciMLPrecision(precision, "cpu")
    plugin.convert_module(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    spectral = model.spectral_layers[0].weight.factors.factor_0_real
    before = spectral.detach().clone()
    x = torch.randn(2, 1, 16, 16).to(input_dtype(model) or torch.float32)
    with plugin.forward_context():
        y = model(x)
    loss = y.float().pow(2).mean()
    scaler = plugin.grad_scaler
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        scaler.step(optimizer)
    else:
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(spectral.detach(), before)
    ran = model.spectral_report()["ran"]
    full = "float64" if precision == "fp64" else "float32"
    assert ran == [
        {
            "spectral_precision": "full",
            "device": "cpu",
            "fft_dtype": full,
            "contraction_dtype": full,
            "inverse_fft_dtype": "float32",
            "padding": None,
            "note": "neuraloperator's output buffer is complex64: inverse FFT in fp32"
            if precision == "fp64"
            else None,
        }
    ]
