"""The benchmark's peer rows (DeepXDE, PINA): absent peers are rows marked not run, and where they
are installed (slow tests) their problem is our Burgers problem: the same residual at the same
points with the same weights, the same loss at step 0, finite losses while taking turns.

No assertion is about time (a shared machine makes every timing noisy).
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from mpsciml.benchmark import comparison, peers
from mpsciml.benchmark.peers import INSTALL_HINT, loss_ours_end, peer_rows, refusal
from mpsciml.benchmark.runner import lightning_runner, run_interleaved
from mpsciml.compose import build
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.models.mlp import MLP
from mpsciml.problems.burgers import Burgers

ROOT = Path(__file__).resolve().parents[1]
HAVE_PEERS = all(importlib.util.find_spec(p) is not None for p in ("deepxde", "pina"))
needs_peers = pytest.mark.skipif(not HAVE_PEERS, reason="pip install -e '.[peers]'")


def tiny_burgers(tiny_config, *extra: str, problem: str = "burgers"):
    """A tiny Burgers run (MLP 2-[8,8]-1 tanh, few points) and its module."""
    cfg = tiny_config(
        f"problem={problem}", "model.hidden=[8,8]", "logger=none", "~callbacks", *extra
    )
    module, _, _ = build(cfg)
    return cfg, module


def load_script():
    spec = importlib.util.spec_from_file_location("benchmark_script", ROOT / "scripts/benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_module(activation: str = "tanh", problem: object | None = None) -> SimpleNamespace:
    """What `refusal` and `peer_rows` look at before building anything: problem and model."""
    problem = Burgers(n_domain=8, n_boundary=4, n_initial=4) if problem is None else problem
    return SimpleNamespace(problem=problem, model=MLP(2, 1, [8, 8], activation=activation))


def test_absent_peers_are_rows_marked_not_run(monkeypatch):
    monkeypatch.setattr(peers, "installed", lambda package: False)
    module = fake_module()
    runners, skipped = peer_rows(module, "cpu", steps=2, turn=1)
    assert runners == []
    assert set(skipped) == {"deepxde_fp32", "pina_fp32"}
    assert all(reason == INSTALL_HINT for reason, _ in skipped.values())


def test_peers_refuse_what_they_cannot_express():
    assert refusal(fake_module(), "cpu") is None
    assert "CPU only" in refusal(fake_module(), "cuda")
    assert "only problem=burgers" in refusal(fake_module(problem=object()), "cpu")
    assert "tanh" in refusal(fake_module("sin"), "cpu")


def test_cli_with_peers_absent_lists_them_not_run(tmp_path, capsys, monkeypatch):
    """`--peers` without the peers installed: exit 0, the rows say how to install them; the
    compiled bare row is left out here (it compiles: tests/test_benchmark.py checks it)."""
    monkeypatch.setattr(peers, "installed", lambda package: False)
    monkeypatch.setattr(
        comparison, "bare_compiled_runner", lambda *a: (None, ("left out in this test", ""))
    )
    out = tmp_path / "bench.json"
    argv = ["problem=burgers", "model.hidden=[8,8]", "problem.n_domain=64", "--peers"]
    argv += ["--steps", "2", "--warmup", "0", "--turn", "1", "--out", str(out)]
    code = load_script().main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    rows = {r["name"]: r for r in json.loads(out.read_text())["cases"][0]["rows"]}
    assert set(rows) >= {"fp32", "fp32_shipped", "bare_fp32", "deepxde_fp32", "pina_fp32"}
    for name in ("deepxde_fp32", "pina_fp32"):
        assert rows[name]["skipped"] == INSTALL_HINT and rows[name]["error"] is None
        assert f"| {name} | not run: {INSTALL_HINT} |" in captured.out
    assert rows["fp32"]["x_bare_eager"] > 0 and rows["bare_fp32"]["x_bare_eager"] == 1.0
    assert rows["fp32_shipped"]["first_loss"] == pytest.approx(rows["fp32"]["first_loss"])
    loop = rows["lightning_loop"]  # the loop alone: run, not ours, no loss
    assert loop["kind"] == "loop" and loop["error"] is None and loop["first_loss"] is None
    assert min(rows[n]["x_fastest_mpsciml"] for n in ("fp32", "fp32_shipped")) == 1.0
    assert json.loads(out.read_text())["cases"][0]["lightning_loop"] is None  # no bare compiled


def test_deepxde_setting_is_a_shortcut_the_user_can_override():
    script = load_script()
    args = script.parse_args(["--deepxde-setting", "--peers", "problem.n_domain=100"])
    assert "problem.n_boundary=80" in args.overrides and "model.hidden=[20,20,20]" in args.overrides
    assert (
        "problem.n_domain=100" in args.overrides and "problem.n_domain=2540" not in args.overrides
    )
    assert args.precisions == ["fp32"]
    assert script.parse_args([]).precisions == ["fp32", "mixed", "bf16_mixed"]
    assert script.main(["--deepxde-setting", "problem=navier_stokes"]) == 2


# ------------------------------------------------------------------ with the peers installed
def our_residuals(module, name: str, points: torch.Tensor) -> torch.Tensor:
    inputs = points.detach().float().requires_grad_(True)
    problem = module.problem
    d = Derivatives(inputs, module.model(inputs), problem.input_names, problem.output_names)
    return module.conditions[name].residual(d).detach().reshape(-1)


@pytest.mark.slow
@needs_peers
def test_deepxde_solves_our_burgers_problem(tiny_config):
    """Same weights, same points: DeepXDE's residual is ours, and its step-0 loss is our terms
    over its point sets (its PDE term runs over all its training points)."""
    from mpsciml.benchmark.peers_deepxde import deepxde_model

    _, module = tiny_burgers(tiny_config)
    dde, model = deepxde_model(module)
    x = torch.as_tensor(model.data.train_x_all).requires_grad_(True)
    theirs = model.data.pde(x, model.net(x)).detach().reshape(-1)
    dde.grad.clear()
    torch.testing.assert_close(theirs, our_residuals(module, "pde", x), rtol=1e-5, atol=1e-6)
    losses = model.outputs_losses_train(model.data.train_x, None, None)[1]
    pde = our_residuals(module, "pde", x).square().mean()
    bc = our_residuals(module, "bc", module.conditions["bc"].points).square().mean()
    ic = our_residuals(module, "ic", module.conditions["ic"].points).square().mean()
    torch.testing.assert_close(losses.detach(), torch.stack([pde, bc, ic]), rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@needs_peers
def test_peer_rows_take_turns_with_ours_and_their_losses_agree(tiny_config):
    """A few alternated steps of fp32, bare and both peers: finite losses; PINA's step-0 loss is
    ours (same definition and points); after the same number of Adam steps our loss at each
    row's weights is close to ours (DeepXDE's PDE term adds its boundary points: close, not
    equal)."""
    from mpsciml.benchmark.bare_loop import BareLoop
    from mpsciml.benchmark.runner import bare_runner

    steps = 3
    cfg, _ = tiny_burgers(tiny_config, f"trainer.max_steps={steps + 2}")
    ours = lightning_runner(cfg, steps, turn=1)
    module = ours.facts["module"]
    reference = BareLoop.like(module, derivatives="autograd")
    runners, skipped = peer_rows(module, "cpu", steps, turn=1)
    assert skipped == {}, skipped
    rows = [ours, bare_runner(module, "cpu", steps, 1), *runners]
    run_interleaved(rows)
    loss_ours_end(reference, rows)
    by_name = {r.name: r for r in rows}
    for runner in rows:
        assert runner.error is None, runner.facts.get("traceback")
        assert len(runner.clock.samples) == steps
        assert all(math.isfinite(loss) for loss in runner.losses)
    assert by_name["pina_fp32"].losses[0] == pytest.approx(ours.losses[0], rel=1e-5)
    end = ours.facts["loss_ours_end"]
    assert by_name["bare_fp32"].facts["loss_ours_end"] == pytest.approx(end, rel=1e-5)
    assert by_name["pina_fp32"].facts["loss_ours_end"] == pytest.approx(end, rel=1e-4)
    assert by_name["deepxde_fp32"].facts["loss_ours_end"] == pytest.approx(end, rel=0.05)
