"""Unknown coefficients (`problem.unknowns`) and observation conditions: the generic inverse
support of a PINN. Unit tests of the pieces and one small inverse problem learned in-process
(no Trainer), so the file costs a few seconds."""

from __future__ import annotations

import math

import pytest
import torch
from distributed_harness import one_step, run_ranks
from omegaconf import OmegaConf

from mpsciml.data.points import CollocationPoints, PointsPerStep
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.models.mlp import MLP
from mpsciml.modules.pinn import PINNModule
from mpsciml.modules.unknowns import UnknownCoefficients
from mpsciml.problems.base import Condition, Problem, values_key
from mpsciml.problems.coefficients import Coefficients, check_unknowns
from mpsciml.problems.observations import add_noise, observation_condition
from mpsciml.problems.sampling import Box
from mpsciml.seeding import Seed, seed_stream

ADAM = OmegaConf.create({"adam": {"_target_": "torch.optim.Adam", "_partial_": True}})


class Decay(Problem):
    """u' + a u = 0 on [0, 1] with a unknown (true 2), from observations of u = exp(-2x)."""

    input_names = ("x",)
    output_names = ("u",)
    domain = Box(low=(0.0,), high=(1.0,))

    def __init__(self, unknowns: dict | None = None, n_data: int = 32) -> None:
        super().__init__(sampling="sobol", evaluation_grid=(11,))
        self.coefficients = Coefficients("decay", {"a": 2.0}, unknowns)
        points = self.domain.interior(n_data, "sobol", 7)
        self.data = observation_condition(points, self.reference(points), ("u",))

    def decay(self, d: Derivatives) -> torch.Tensor:
        return d("u", "x") + self.coefficients("a", d["u"]) * d["u"]

    def conditions(self, seed: Seed) -> dict[str, Condition]:
        points = self.domain.interior(32, "sobol", seed_stream(seed, "pde"))
        return {"pde": Condition(points, self.decay), "data": self.data}

    def reference(self, points: torch.Tensor) -> torch.Tensor:
        return torch.exp(-2.0 * points)


def decay_module(unknowns: dict | None = None) -> PINNModule:
    torch.manual_seed(0)
    model = MLP(in_features=1, out_features=1, hidden=[16, 16])
    return PINNModule(Decay(unknowns), model, ADAM, seed=0)


def test_an_unknown_coefficient_is_learned_from_data() -> None:
    """a starts at 0; 30 L-BFGS iterations on residual + data bring it within 2.5% of 2."""
    module = decay_module({"a": 0.0})
    assert module.unknowns is not None
    points = PointsPerStep(module.problem, 0, steps=1).step_items(0, torch.tensor([0]))
    batch = module.batch_in_input_dtype(points)
    optimizer = torch.optim.LBFGS(
        module.parameters(), lr=1.0, max_iter=30, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = module.total_loss(module.loss_terms(batch))
        loss.backward()
        return loss

    optimizer.step(closure)
    learned = module.unknowns.current()["a"]
    assert abs(learned - 2.0) < 0.05, learned
    report = module.summary_facts()["unknowns"]["a"]
    assert report["initial"] == 0.0 and report["true"] == 2.0 and report["dtype"] == "float32"
    assert report["relative_error"] == pytest.approx(abs(learned - 2.0) / 2.0)
    assert set(module.term_names) == {"pde", "data_u"}


def test_a_known_coefficient_is_a_fixed_number_and_no_parameter() -> None:
    module = decay_module(None)
    assert module.unknowns is None and "unknowns" not in module.summary_parts
    assert module.problem.coefficients("a", torch.zeros(1)) == 2.0


@pytest.mark.parametrize(
    ("unknowns", "message"),
    [
        ({"b": 0.0}, r"problem.unknowns.b is not a coefficient of decay's equations; allowed: a"),
        ({"a": "x"}, r"problem.unknowns.a='x' is invalid: the initial value must be a finite"),
        ({"a": True}, r"problem.unknowns.a=True is invalid"),
        ({"a": math.nan}, r"problem.unknowns.a=nan is invalid"),
        (["a"], r"must be a mapping of coefficient name -> initial value.*coefficients of decay"),
    ],
)
def test_bad_unknowns_are_refused_in_one_line(unknowns: object, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        check_unknowns("decay", {"a": 2.0}, unknowns)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)


def test_unknowns_stay_fp32_when_the_plugin_casts_to_half() -> None:
    """The plugin's cast keeps a `precision_policy = "fp32"` module full precision."""
    from mpsciml.precision.plugin import SciMLPrecision

    module = decay_module({"a": 0.5})
    SciMLPrecision("fp16", "cpu").convert_module(module)
    assert next(module.model.parameters()).dtype == torch.float16
    assert module.unknowns is not None
    assert all(p.dtype == torch.float32 for p in module.unknowns.parameters())
    SciMLPrecision("fp64", "cpu").convert_module(module)  # full precision of an fp64 run
    assert all(p.dtype == torch.float64 for p in module.unknowns.parameters())
    assert isinstance(module.unknowns, UnknownCoefficients)


def test_values_travel_with_their_points_through_the_ddp_split() -> None:
    """Two shares (ranks r::2) keep each value next to its point, and their parts of the data
    loss add up to the one-share loss (what `global_means` does across real processes)."""
    module = decay_module({"a": 0.0})
    problem = module.problem
    whole = PointsPerStep(problem, 0, steps=1, shares=1).step_items(0, torch.tensor([0]))
    halves = PointsPerStep(problem, 0, 1, shares=2)
    shares = [halves.step_items(0, torch.tensor([r])) for r in (0, 1)]
    key = values_key("data")
    for share in shares:  # the observed value is u(point) for every point of every share
        torch.testing.assert_close(share[key], problem.reference(share["data"]))
    joined = torch.cat([s[key] for s in shares])
    assert joined.shape == whole[key].shape and len(shares[0][key]) == 16
    full = module.loss_terms(module.batch_in_input_dtype(whole))["data_u"]
    parts = [
        module.loss_terms(module.batch_in_input_dtype(s))["data_u"] * len(s["data"]) for s in shares
    ]
    torch.testing.assert_close(sum(parts) / len(whole["data"]), full)


def test_observed_values_stay_fp32_in_a_half_input_dtype() -> None:
    module = decay_module({"a": 0.0})
    module.model.half()
    batch = PointsPerStep(module.problem, 0, 1).step_items(0, torch.tensor([0]))
    cast = module.batch_in_input_dtype(batch)
    assert cast["data"].dtype == torch.float16 and cast[values_key("data")].dtype == torch.float32


def test_the_taylor_terms_read_the_values_of_the_batch() -> None:
    """The compiled step's function (here eager) takes the values from its inputs: changing
    them changes the data term as the eager loss does."""
    module = decay_module({"a": 0.0})
    module._carry = {"pde": frozenset({("x",)}), "data": frozenset()}
    batch = PointsPerStep(module.problem, 0, 1).step_items(0, torch.tensor([0]))
    shifted = {**batch, values_key("data"): batch[values_key("data")] + 1.0}
    for points in (batch, shifted):
        points = module.batch_in_input_dtype(points)
        taylor, _ = module._taylor_terms(points, None, True)
        torch.testing.assert_close(taylor["data_u"], module.loss_terms(points)["data_u"])


def test_noise_is_a_seeded_fraction_of_each_fields_std() -> None:
    values = torch.stack([torch.linspace(0, 1, 20000), 10 * torch.linspace(0, 1, 20000)], -1)
    noisy = add_noise(values.double(), 0.01, seed_stream(3, "noise"))
    again = add_noise(values.double(), 0.01, seed_stream(3, "noise"))
    torch.testing.assert_close(noisy, again)
    ratio = (noisy - values).std(dim=0) / values.std(dim=0)
    expected = torch.full((2,), 0.01, dtype=torch.float64)
    torch.testing.assert_close(ratio, expected, rtol=0.03, atol=0)


def test_a_module_with_unknowns_pickles_and_its_copy_keeps_its_own() -> None:
    """The precision probe and the compiled step copy the module: the copy's problem reads the
    copy's parameters, not the original's."""
    import copy
    import pickle

    module = decay_module({"a": 0.25})
    again = pickle.loads(pickle.dumps(module))
    assert again.summary_facts()["unknowns"]["a"]["final"] == 0.25
    twin = copy.deepcopy(module)
    assert twin.unknowns is not None
    with torch.no_grad():
        twin.unknowns.values["a"].fill_(1.5)
    assert twin.problem.coefficients.value("a") == 1.5
    assert module.problem.coefficients.value("a") == 0.25


def decay_step() -> tuple[PINNModule, CollocationPoints]:
    """A decay module with its unknown and an odd number of observations (uneven shares)."""
    module = decay_module({"a": 0.5})
    module.problem.data = observation_condition(
        module.problem.data.points[:31], module.problem.data.values[:31], ("u",)
    )
    return module, CollocationPoints(module.problem, 0, max_steps=1)


def two_rank_worker(rank: int, world_size: int) -> dict:
    result = one_step(decay_step)
    return result


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradient_of_one_with_observations() -> None:
    """Real processes (gloo): each rank's share of points and values; the global terms and
    the averaged gradients equal one process's."""
    single = one_step(decay_step)
    ranks = run_ranks(two_rank_worker, 2, timeout=240)
    sizes = [r["sizes"] for r in ranks]
    assert [a + b for a, b in zip(*sizes, strict=True)] == single["sizes"]
    for result in ranks:
        for name, value in single["terms"].items():
            torch.testing.assert_close(result["terms"][name], value, rtol=1e-5, atol=1e-7)
        for got, want in zip(result["grads"], single["grads"], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
