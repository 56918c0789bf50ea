"""Loss balancing (`weighting=`): the rules' arithmetic, the fp32 gradients they use under every
precision, the step left untouched, resume, DDP agreement, and the refusals."""

from __future__ import annotations

import copy
import csv
import json
import math
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from conftest import TINY, compose_config
from distributed_harness import run_ranks
from hydra.errors import MissingConfigException
from lightning_utilities.core.apply_func import apply_to_collection
from test_ddp_cli import DDP
from test_ddp_cli import train_py as ddp_train_py
from test_distributed_integrity import ADAM, pinn_case
from test_train import OPERATOR_RESUME

from mpsciml.cli_errors import hydra_error_line
from mpsciml.config import ConfigError, validate
from mpsciml.data.points import CollocationPoints
from mpsciml.modules.pinn import PINNModule
from mpsciml.precision.plugin import build_precision_plugin
from mpsciml.problems.burgers import Burgers
from mpsciml.train import run
from mpsciml.weighting.lr_annealing import LearningRateAnnealing
from mpsciml.weighting.ntk import NTKWeighting
from mpsciml.weighting.registry import ALLOWED, attach_weighting
from mpsciml.weighting.relobralo import ReLoBRaLo
from mpsciml.weighting.softadapt import SoftAdapt
from mpsciml.weighting.term_gradients import term_gradients

# ---------------------------------------------------------------- the rules' arithmetic


def test_lr_annealing_lifts_a_term_to_the_pde_terms_largest_gradient() -> None:
    rule = LearningRateAnnealing(["pde_u", "pde_v", "bc"], alpha=0.5)
    grads = {
        "pde_u": torch.tensor([0.1, -0.4]),
        "pde_v": torch.tensor([0.8, 0.0]),  # the largest |gradient| of the reference terms
        "bc": torch.tensor([0.02, -0.02]),  # mean |gradient| 0.02
    }
    assert rule.update({}, grads, 1)
    assert rule.multipliers == {"pde_u": 1.0, "pde_v": 1.0, "bc": pytest.approx(0.5 + 0.5 * 40)}
    assert not rule.update({}, {**grads, "bc": torch.tensor([math.inf, 0.0])}, 2)
    assert rule.multipliers["bc"] == pytest.approx(20.5)  # unusable: kept


def test_ntk_weights_equalise_the_terms_relative_convergence_rates() -> None:
    """T_i = |grad L_i|^2 / L_i (each term's relative convergence rate): 25 and 2 here."""
    rule = NTKWeighting(["pde", "bc"])
    grads = {"pde": torch.tensor([3.0, 4.0]), "bc": torch.tensor([0.0, 1.0])}
    assert rule.update({"pde": 1.0, "bc": 0.5}, grads, 1)
    assert rule.multipliers == {"pde": pytest.approx(27 / 25), "bc": pytest.approx(13.5)}
    # the same term ten times smaller, with its gradient as small as a mean square's: the same
    assert rule.update({"pde": 0.01, "bc": 0.5}, {**grads, "pde": grads["pde"] / 10}, 2)
    assert rule.multipliers == {"pde": pytest.approx(27 / 25), "bc": pytest.approx(13.5)}


def test_relobralo_follows_the_papers_update_with_a_seeded_lookback() -> None:
    rule = ReLoBRaLo(["a", "b"], alpha=0.5, expected_rho=1.0, temperature=1.0)
    assert rule.update({"a": 1.0, "b": 1.0}, None, 1) and rule.multipliers == {"a": 1, "b": 1}
    assert rule.update({"a": 2.0, "b": 1.0}, None, 2)  # a rose: a gets more weight
    ea, eb = math.exp(2.0), math.exp(1.0)
    bal_a = 2 * ea / (ea + eb)  # against t-1 and against 0 alike here
    assert rule.multipliers["a"] == pytest.approx(0.5 * 1.0 + 0.5 * bal_a)
    assert sum(rule.multipliers.values()) == pytest.approx(2.0)
    # rho is drawn from (seed, step): the same draw after a restart, different seeds differ
    draws = [ReLoBRaLo(["a", "b"], expected_rho=0.5, seed=s) for s in (0, 0, 1)]
    for rule in draws:
        for step, losses in enumerate(([1.0, 1.0], [3.0, 1.0], [3.0, 2.0], [1.0, 2.0])):
            rule.update(dict(zip("ab", losses, strict=True)), None, step)
    assert draws[0].multipliers == draws[1].multipliers


def test_softadapt_gives_the_rising_term_more_weight() -> None:
    rule = SoftAdapt(["a", "b"], beta=1.0)
    assert rule.update({"a": 1.0, "b": 1.0}, None, 10)
    assert rule.update({"a": 0.5, "b": 1.5}, None, 20)  # normalized rates -0.5, +0.5
    assert rule.multipliers["b"] / rule.multipliers["a"] == pytest.approx(math.e)
    assert sum(rule.multipliers.values()) == pytest.approx(2.0)


# ------------------------------------------------- the gradients, in fp32 under `mixed`


def burgers_at_small_loss() -> tuple[Any, Any]:
    """A Burgers PINN whose output layer is scaled by 1e-3, as late in training: pde and bc
    terms ~1e-8, the size where fp16 gradients flush to zero; and its first batch (2000
    interior points) in float32."""
    problem = Burgers(n_domain=2000, n_boundary=64, n_initial=128, evaluation_grid=(8, 4))
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(2, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(),
        torch.nn.Linear(32, 1),
    )  # fmt: skip
    with torch.no_grad():
        model[-1].weight.mul_(1e-3)
        model[-1].bias.mul_(1e-3)
    module = PINNModule(problem, model, ADAM, seed=0)
    points = CollocationPoints(problem, seed=0, max_steps=1)
    points.trainer = SimpleNamespace(world_size=1, global_rank=0)
    batch = next(iter(points.train_dataloader()))
    return module, apply_to_collection(batch, torch.Tensor, lambda t: t.float())


def rule_weights(
    values: dict[str, float], gradients: dict[str, torch.Tensor]
) -> dict[str, dict[str, float]]:
    found = {}
    for rule in (LearningRateAnnealing(list(gradients), alpha=1.0), NTKWeighting(list(gradients))):
        rule.update(values, gradients, 1)
        found[rule.name] = rule.multipliers
    return found


def test_weights_under_mixed_are_the_full_precision_ones_where_naive_fp16_fails():
    """Inside `mixed`'s fp16 autocast (the plugin's own context), `term_gradients` gives the
    weights of an fp64 computation on the same weights and points (to 1e-4). The naive way
    (autograd of each term inside the autocast, as the step itself would) loses most small
    gradients: measured here, 99% of the pde and 97% of the bc gradient entries are exactly 0 in
    fp16 (none in fp32), lr_annealing's bc weight comes out 26.3 instead of 41.9 and ntk's pde
    weight 22.3 instead of 3.04. (Reading `p.grad` instead would also carry
    the GradScaler's loss scale, 65536 at the start.)"""
    module, batch = burgers_at_small_loss()
    plugin = build_precision_plugin("mixed", "cpu")
    with plugin.forward_context():
        assert torch.is_autocast_cpu_enabled()
        ours = rule_weights(*term_gradients(module, batch))
        params = [p for p in module.parameters() if p.requires_grad]
        terms = module.loss_terms(batch)
        naive = {
            name: torch.cat(
                [g.reshape(-1).float() for g in torch.autograd.grad(t, params, retain_graph=True)]
            )
            for name, t in terms.items()
        }
    exact = copy.deepcopy(module).double()
    double_batch = apply_to_collection(batch, torch.Tensor, lambda t: t.double())
    reference = rule_weights(*term_gradients(exact, double_batch, torch.float64))
    for rule, weights in reference.items():
        for term, weight in weights.items():
            assert ours[rule][term] == pytest.approx(weight, rel=1e-4), (rule, term)
    assert float((naive["pde"] == 0).float().mean()) > 0.9  # flushed to zero in fp16
    assert float((naive["bc"] == 0).float().mean()) > 0.9
    failed = rule_weights({n: float(t) for n, t in terms.items()}, naive)
    assert failed["lr_annealing"]["bc"] < 0.8 * reference["lr_annealing"]["bc"]
    assert failed["ntk"]["pde"] > 5 * reference["ntk"]["pde"]


def test_per_term_gradients_leave_the_mixed_step_untouched(tiny_config):
    """lr_annealing with alpha=0 computes every term's gradient after every step but never moves
    a weight: the run is bitwise the fixed-weight run (p.grad, the GradScaler, the derivative
    scaler and the optimizer all untouched by the side computation). `fixed` reports its
    weights (the user's `loss_weights`)."""
    common = ["precision=mixed", "trainer.max_steps=2", "loss_weights={bc: 10}"]
    fixed = run(tiny_config(*common))
    side = run(tiny_config(*common, "weighting=lr_annealing", "weighting.update_every=1",
                           "weighting.alpha=0"))  # fmt: skip
    expected = {"pde": 1.0, "bc": 10.0, "ic": 1.0}
    assert fixed["weighting"] == {"method": "fixed", "settings": {}, "weights": expected,
                                  "updates": 0}  # fmt: skip
    assert side["weighting"]["updates"] == 2 and side["weighting"]["weights"] == expected
    assert side["l2"] == fixed["l2"] and side["final_losses"] == fixed["final_losses"]
    for key in ("final_scale", "skipped_steps", "derivative_seeds"):
        assert side["precision"][key] == fixed["precision"][key], key


# --------------------------------------------------------- runs, logs, summary, resume


#: a small data-free grid problem (DiffNet on Burgers): three terms, pde, boundary, initial
GRID = ["problem=burgers_grid", "problem.grid=[32,16]"]


@pytest.mark.parametrize(
    ("method", "extra"),
    [
        ("lr_annealing", []),
        pytest.param("ntk", [], marks=pytest.mark.slow),
        # the rules' arithmetic is tested above and relobralo runs in the resume test: slow
        pytest.param("relobralo", [], marks=pytest.mark.slow),
        pytest.param("softadapt", [], marks=pytest.mark.slow),
        pytest.param("lr_annealing", OPERATOR_RESUME, marks=pytest.mark.slow),  # DeepONet
        pytest.param("ntk", GRID, marks=pytest.mark.slow),  # data-free grid
    ],
)
def test_every_method_trains_logs_its_weights_and_reports_them(
    tmp_path, monkeypatch, method, extra
):
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "data"))
    overrides = [*TINY, *extra, f"weighting={method}", "weighting.update_every=1"]
    if extra is GRID:  # a grid problem has no collocation points
        overrides.remove("problem.n_domain=64")
    summary = run(compose_config(overrides, tmp_path / "run"))
    report = summary["weighting"]
    assert report["method"] == method and report["settings"]["update_every"] == 1
    assert report["updates"] == 3 and report["unusable_updates"] == 0
    assert all(math.isfinite(w) and w > 0 for w in report["weights"].values())
    assert report["weights"] != dict.fromkeys(report["weights"], 1.0)  # it moved them
    with open(Path(summary["output_dir"]) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    for term, weight in report["weights"].items():
        logged = [float(r[f"train/weight_{term}"]) for r in rows if r.get(f"train/weight_{term}")]
        assert logged and logged[-1] == pytest.approx(weight)


def test_fixed_attaches_nothing_and_the_others_a_callback() -> None:
    module = stub_module()
    attach_weighting(module, {"method": "fixed"})
    assert module.strategy_callbacks == [] and module.summary_parts["weighting"]()["updates"] == 0
    attach_weighting(module, {"method": "softadapt", "update_every": 3, "beta": 2.0})
    (callback,) = module.strategy_callbacks
    assert callback.update_every == 3 and callback.method.beta == 2.0


@pytest.mark.parametrize("method", ["fixed", "ntk"])
def test_a_module_with_its_weighting_pickles(method):
    """The precision probe copies the module and the compiled-step tests pickle it: the summary
    part and the callback go along."""
    module, _ = pinn_case()
    attach_weighting(module, {"method": method})
    copied = pickle.loads(pickle.dumps(module))
    assert copied.summary_facts()["weighting"]["method"] == method


def stub_module(terms: tuple[str, ...] = ("pde", "bc"), compiled: Any = None) -> Any:
    """What `attach_weighting` reads of a module."""
    return SimpleNamespace(
        term_names=list(terms),
        loss_weights=dict.fromkeys(terms, 1.0),
        summary_parts={},
        strategy_callbacks=[],
        compiled=compiled,
    )


@pytest.mark.parametrize(
    "method", ["relobralo", pytest.param("lr_annealing", marks=pytest.mark.slow)]
)
def test_resume_continues_the_weights_exactly(tiny_config, method):
    """2 steps, then resume to 4: the same weights, rule memory and network as 4 straight."""
    common = [f"weighting={method}", "weighting.update_every=1", "weighting.expected_rho=0.5"]
    if method != "relobralo":
        common.pop()
    straight = run(tiny_config(*common, "trainer.max_steps=4"))
    stopped = run(tiny_config(*common, "trainer.max_steps=2"))
    resumed = run(tiny_config(*common, "trainer.max_steps=4", f"resume={stopped['output_dir']}"))
    assert resumed["weighting"] == straight["weighting"]
    assert resumed["weighting"]["updates"] == 4
    assert resumed["l2"] == straight["l2"]


# ------------------------------------------------------------------------------ DDP


def ddp_weights(rank: int, world_size: int) -> dict[str, dict[str, float]]:
    module, datamodule = pinn_case()
    datamodule.trainer = type("T", (), {"world_size": world_size, "global_rank": rank})()
    batch = next(iter(datamodule.train_dataloader()))
    return rule_weights(*term_gradients(module, batch))


def test_two_ranks_compute_the_weights_of_one_process() -> None:
    """Each rank sees its share of the points; the gradients are summed over the ranks before
    the rule runs, so both ranks hold the one-process weights."""
    ranks = run_ranks(ddp_weights, 2, timeout=120)
    single = ddp_weights(0, 1)
    for weights in ranks:
        for rule, values in single.items():
            for term, value in values.items():
                assert weights[rule][term] == pytest.approx(value, rel=1e-5), (rule, term)
    assert ranks[0] == ranks[1]


# ------------------------------------------------------------------------ refusals


def test_a_bad_setting_stops_the_run_in_one_line_before_anything_is_built(tmp_path):
    cfg = compose_config([*TINY, "weighting=lr_annealing", "weighting.alpha=-0.5"], tmp_path)
    with pytest.raises(ConfigError, match=r"^weighting.alpha=-0.5 is invalid: must be a number"):
        validate(cfg)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"method": "bogus"}, "weighting.method='bogus' is invalid: allowed: fixed, lr_annealing"),
        ({"method": "fixed", "alpha": 0.5}, "weighting.alpha is not a setting of weighting=fixed"),
        ({"method": "lr_annealing", "alpha": -0.5}, "weighting.alpha=-0.5 is invalid"),
        ({"method": "ntk", "alpha": 1.5}, "weighting.alpha=1.5 is invalid"),
        ({"method": "ntk", "update_every": 0}, "weighting.update_every=0 is invalid"),
        ({"method": "relobralo", "temperature": 0}, "weighting.temperature=0 is invalid"),
        ({"method": "softadapt", "alpha": 1}, "weighting.alpha is not a setting of weighting=soft"),
        ({"method": "softadapt", "normalized": "yes"}, "weighting.normalized='yes' is invalid"),
        ({"method": "lr_annealing", "reference": "pd"}, "weighting.reference='pd' names no loss"),
    ],
)
def test_bad_weighting_is_one_line_naming_the_key(node, message):
    with pytest.raises(ValueError) as refused:
        attach_weighting(stub_module(), node)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(message)


def test_a_single_term_or_a_compiled_step_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"^weighting=ntk balances loss terms .* 1 term \(l2\)"):
        attach_weighting(stub_module(("l2",)), {"method": "ntk"})
    with pytest.raises(ValueError, match=r"^weighting=ntk takes per-term gradients outside"):
        attach_weighting(stub_module(compiled=object()), {"method": "ntk"})
    attach_weighting(stub_module(compiled=object()), {"method": "relobralo"})  # from losses


def test_an_unknown_weighting_option_names_the_allowed_ones(tmp_path):
    with pytest.raises(MissingConfigException) as missing:
        compose_config([*TINY, "weighting=bogus"], tmp_path / "run")
    line = hydra_error_line(missing.value)
    assert (
        line == f"weighting=bogus is invalid: no such option; allowed: {', '.join(sorted(ALLOWED))}"
    )


@pytest.mark.slow
def test_a_ddp_run_finds_the_weights_of_one_process(tmp_path, tiny_config):
    """~20 s: two processes (gloo), lr_annealing with the terms' gradients summed over the
    ranks: the weights rank 0 reports, and the network both ranks trained with them, are
    those of one process on all the points (a rank with other weights would pull the shared
    gradient elsewhere)."""
    common = ["weighting=lr_annealing", "weighting.update_every=1", "trainer.max_steps=3"]
    single = run(tiny_config(*common))
    run_dir = tmp_path / "ddp"
    ddp = [*DDP, *common, f"hydra.run.dir={run_dir}"]
    result = ddp_train_py(*ddp, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["weighting"]["updates"] == 3
    for term, weight in single["weighting"]["weights"].items():
        assert summary["weighting"]["weights"][term] == pytest.approx(weight, rel=1e-4), term
    assert summary["l2"]["u"] == pytest.approx(single["l2"]["u"], rel=1e-4)
