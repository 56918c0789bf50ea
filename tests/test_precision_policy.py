"""Per-layer precision policies and the registry as the one source of truth.

The Fourier-feature layer is the case the policy exists for: at sigma = 10 its fp16 features are
off by ~0.1, so each accuracy test also shows the error without the policy (what it buys).
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mpsciml.compose import build
from mpsciml.models.fourier_mlp import FourierMLP
from mpsciml.precision.diagnostics import gradient_underflow_fraction
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.policy import find_policies, input_dtype
from mpsciml.precision.registry import PRECISIONS, LossScaler, PrecisionSpec, precision_rank
from mpsciml.report.aggregate import PRECISION_ORDER
from mpsciml.train import run


def fourier_model(features_fp32: bool = True) -> FourierMLP:
    torch.manual_seed(0)
    return FourierMLP(2, 1, n_features=32, sigma=10.0, features_fp32=features_fp32)


def features_in(precision: str, features_fp32: bool, x: Tensor) -> tuple[FourierMLP, Tensor]:
    """The model converted by the plugin and its features of x, in the run's forward context.
    Pure precisions get x in their dtype unless the layer keeps fp32 (then it takes x as is)."""
    model = fourier_model(features_fp32)
    plugin = SciMLPrecision(precision, "cpu")
    plugin.convert_module(model)
    if not features_fp32:
        x = x.to(plugin.spec.param_dtype)
    with plugin.forward_context():
        return model, model.features(x)


@pytest.fixture(scope="module")
def points_and_reference() -> tuple[Tensor, Tensor]:
    x = torch.rand(1024, 2, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return x, fourier_model().features(x)


@pytest.mark.parametrize("precision", ["fp16", "mixed"])
def test_fp32_policy_keeps_fourier_features_exact(points_and_reference, precision):
    x, reference = points_and_reference
    model, features = features_in(precision, True, x)
    # computed in fp32 like the fp32 model, then rounded once into the dtype the network runs in
    assert features.dtype == torch.float16
    assert torch.equal(features, reference.to(torch.float16))
    assert (features.float() - reference).abs().max() <= 2.0**-12
    assert model.features.B.dtype == torch.float32
    assert torch.equal(model.features.B, fourier_model().features.B)  # never rounded on the way
    mlp_dtype = torch.float16 if precision == "fp16" else torch.float32
    assert {p.dtype for p in model.mlp.parameters()} == {mlp_dtype}
    # outside autocast a mixed model runs in its fp32 weights, and the features come back so
    assert model(x).dtype == mlp_dtype


@pytest.mark.parametrize("precision", ["fp16", "mixed"])
def test_without_the_policy_fp16_features_are_off_by_a_tenth(points_and_reference, precision):
    x, reference = points_and_reference
    model, features = features_in(precision, False, x)
    assert (features.float() - reference).abs().max() > 0.1
    assert find_policies(model) == {}


def test_inputs_of_a_kept_first_layer_arrive_unrounded(points_and_reference):
    """Coordinates rounded to fp16 before an fp32 feature layer already cost ~0.05: a model whose
    first layer is kept fp32 takes its inputs in fp32, any other in its weights' dtype."""
    x, reference = points_and_reference
    model = fourier_model()
    assert (model.features(x.half().float()) - reference).abs().max() > 0.02
    SciMLPrecision("fp16", "cpu").convert_module(model)
    assert input_dtype(model) == torch.float32
    assert input_dtype(model.mlp) == torch.float16


def test_policy_follows_the_run_into_fp64_and_through_a_switch():
    model = fourier_model()
    original = model.features.B.clone()
    plugin = SciMLPrecision("fp16", "cpu")
    plugin.convert_module(model)
    plugin.switch_to("fp32", model, [], step=5)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.equal(model.features.B, original)
    plugin.switch_to("fp64", model, [], step=6)
    assert model.features.B.dtype == torch.float64
    assert model(torch.rand(4, 2, dtype=torch.float64)).dtype == torch.float64
    assert plugin.layer_policies == {"features": "fp32"}


class Recorder(nn.Module):
    """A layer that manages its own dtype: records what it was handed and whether autocast ran."""

    precision_policy = "own"

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(4))
        self.seen: list[tuple[torch.dtype, bool]] = []

    def forward(self, x: Tensor) -> Tensor:
        self.seen.append((x.dtype, torch.is_autocast_enabled("cpu")))
        return x.float() * self.scale.float()


def test_own_policy_gets_inputs_untouched_no_autocast_and_full_weights():
    model = nn.Sequential(nn.Linear(3, 4), Recorder(), nn.Linear(4, 1))
    plugin = SciMLPrecision("mixed", "cpu")
    plugin.convert_module(model)
    with plugin.forward_context():
        output = model(torch.randn(5, 3))
    assert model[1].seen == [(torch.float16, False)]  # the fp16 matmul's output, autocast off
    assert output.dtype == torch.float16
    assert plugin.layer_policies == {"1": "own"}
    pure = SciMLPrecision("fp16", "cpu")
    pure.convert_module(model)
    assert model[1].scale.dtype == torch.float32 and model[0].weight.dtype == torch.float16
    assert model(torch.randn(5, 3, dtype=torch.float16)).dtype == torch.float16


def test_an_unknown_policy_is_one_line_naming_layer_value_and_choices():
    model = nn.Sequential(nn.Linear(2, 2))
    model[0].precision_policy = "fp8"
    with pytest.raises(
        ValueError, match=r"Linear '0': precision_policy='fp8' .*allowed: fp32, own"
    ):
        SciMLPrecision("fp16", "cpu").convert_module(model)


def test_underflow_is_measured_against_each_parameters_own_dtype():
    """1e-9 is 0 in fp16 but an ordinary fp32 number: the fp32 layer's gradients did not
    underflow, the fp16 layer's did (and its zeros count, which a comparison in fp16 missed)."""
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    model[0].precision_policy = "fp32"
    plugin = SciMLPrecision("fp16", "cpu")
    plugin.convert_module(model)
    params = list(model.parameters())
    for param in params:
        param.grad = torch.full_like(param, 1e-9)
    kept = sum(p.numel() for p in model[0].parameters())
    total = sum(p.numel() for p in params)
    measured = plugin.measure_gradients(params)
    assert measured["grad_underflow_fraction"] == pytest.approx((total - kept) / total)
    assert gradient_underflow_fraction([p.grad for p in params]) == 1.0  # all against fp16
    zeros = [torch.tensor([0.0, 1e-3], dtype=torch.float16)]
    assert gradient_underflow_fraction(zeros) == 0.5


@pytest.mark.parametrize("precision", ["mixed", "fp16"])
def test_fourier_mlp_trains_and_the_summary_records_its_policy(tiny_config, precision):
    # its derivatives are ~(2 pi sigma)^2 an MLP's: the default first scale 2^16 overflows
    summary = run(
        tiny_config("model=fourier_mlp", f"precision={precision}", "precision.init_scale=1")
    )
    facts = summary["precision"]
    assert summary["status"] == "ok"
    assert facts["layer_policies"] == {"model.features": "fp32"}
    assert facts["skipped_steps"] == 0
    assert (facts["param_dtype"], facts["matmul_dtype"]) == (
        "float16" if precision == "fp16" else "float32",
        "float16",
    )


def test_fourier_layer_stays_fp32_through_a_pure_fp16_fit(tiny_config):
    module, trainer, parts = build(tiny_config("model=fourier_mlp", "precision=fp16"))
    trainer.fit(module, datamodule=parts["datamodule"])
    assert module.model.features.B.dtype == torch.float32
    assert {p.dtype for p in module.model.mlp.parameters()} == {torch.float16}
    # the coordinates reach the fp32 feature layer unrounded, not through fp16
    assert module.input_dtype() == torch.float32


def test_taylor_on_a_model_with_a_policy_is_a_recorded_fallback(tiny_config):
    """The plugin runs a policy layer through forward hooks, which the Taylor engine cannot
    follow: the run must say it used autograd, not claim Taylor and fall back every step."""
    summary = run(tiny_config("model=fourier_mlp", "derivatives=taylor", "precision.init_scale=1"))
    assert summary["status"] == "ok"
    assert summary["derivatives"]["used"] == "autograd"
    assert "precision policy" in summary["derivatives"]["reason"]


# ------------------------------------------------------------------- the registry decides
def test_the_plugin_asks_the_spec_not_the_name(monkeypatch):
    """A precision under a name the plugin has never seen gets what its spec says."""
    spec = PrecisionSpec(
        "half_autocast",
        "16-mixed",
        torch.float32,
        torch.float16,
        LossScaler.GRAD_SCALER,
        True,
        "fp32",
    )
    monkeypatch.setitem(PRECISIONS, spec.name, spec)
    plugin = SciMLPrecision(spec.name, "cpu")
    assert plugin.grad_scaler is not None and plugin.fp16_scaler is None
    assert plugin.derivative_scaler is not None and plugin.autocast_dtype == torch.float16
    assert plugin.precision == "16-mixed"
    assert not plugin.spec.is_full and plugin.spec.full_dtype == torch.float32


@pytest.mark.parametrize("name", list(PRECISIONS))
def test_every_spec_names_a_consistent_scaler_and_fallback(name):
    spec = PRECISIONS[name]
    fp16_grads = spec.param_dtype == torch.float16
    fp16_compute = spec.compute_dtype == torch.float16
    expected = LossScaler.DYNAMIC if fp16_grads else LossScaler.GRAD_SCALER
    assert spec.scaler == (expected if fp16_compute else LossScaler.NONE)
    assert spec.seeds_derivatives == fp16_compute
    assert spec.full_dtype == (
        torch.float64 if spec.param_dtype == torch.float64 else torch.float32
    )


def test_a_spec_cannot_pair_gradscaler_with_fp16_weights():
    with pytest.raises(ValueError, match="GradScaler needs fp32 weights"):
        PrecisionSpec("x", "x", torch.float16, torch.float16, LossScaler.GRAD_SCALER, True, "fp32")


def test_reports_order_precisions_as_the_registry_does():
    assert tuple(PRECISIONS) == PRECISION_ORDER
    assert sorted(["bf16", "new", "fp32", "mixed"], key=precision_rank) == [
        "fp32",
        "mixed",
        "bf16",
        "new",
    ]
