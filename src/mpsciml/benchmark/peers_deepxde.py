"""The `deepxde_fp32` row: our Burgers run written the way DeepXDE's Burgers example writes it.

DeepXDE (PyTorch backend: `DDE_BACKEND=pytorch` is set before its first import; a process that
already imported it with another backend gets a failed row) solves
`GeometryXTime(Interval(-1, 1), TimeDomain(0, 0.99))` with the example's residual
(`dde.grad.jacobian` / `hessian`), a `DirichletBC` u = 0 on x = +-1 and an `IC` u = -sin(pi x),
an `FNN` 2-[w]xk-1 tanh ("Glorot normal", then our initial weights copied in), `model.compile(
"adam")` with our Adam settings, and `model.train`, whose loop is what is timed.

The points: `num_domain = num_boundary = num_initial = 0` and `anchors` = all our collocation
points (domain, boundary, initial), so DeepXDE trains on exactly our points. Its own loss
definition then differs from ours in one way, recorded in the row: DeepXDE's PDE term is the mean
over all of its training points (`train_x_all`: our 2540 domain points and the 80 + 160 boundary
and initial ones), ours over the domain points only; the BC and IC terms are the same means over
the same points. Per step it evaluates the network on its BC and IC points twice (once as
BC/IC points, once among the PDE points), as the example does.

Timing and turns: a `dde.callbacks.Callback` ticks the runner's clock in `on_batch_begin` (and
waits there for the baton) and closes the step in `on_batch_end`. The loss: DeepXDE's training step
does not return it, so the data object's `losses_train` is wrapped to keep (without a host sync)
the loss terms of the step; they are read only on the untimed steps. `display_every` is past the
run, and the runner stops the loop itself after its last step, so DeepXDE's periodic test pass
never lands in a measured step.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch

from mpsciml.benchmark.peers import (
    adam_settings,
    copy_weights,
    mlp_linears,
    mlp_shape,
    peer_runner,
    quiet_import,
    record_loss,
)
from mpsciml.benchmark.runner import Runner

NAME = "deepxde_fp32"
LOSS_DEFINITION = (
    "DeepXDE: sum of MSEs; PDE term over all its training points (domain + boundary + initial), "
    "BC and IC terms over theirs"
)


def import_deepxde() -> Any:
    """DeepXDE with its PyTorch backend, imported quietly; an error if it runs another one."""
    os.environ["DDE_BACKEND"] = "pytorch"  # this process only; wins over ~/.deepxde/config.json
    with quiet_import():
        import deepxde as dde
    if dde.backend.backend_name != "pytorch":
        raise RuntimeError(
            f"DeepXDE runs its {dde.backend.backend_name!r} backend in this process; the "
            "benchmark needs DDE_BACKEND=pytorch"
        )
    return dde


def burgers_data(dde: Any, nu: float, points: dict[str, np.ndarray], domain: Any) -> Any:
    """DeepXDE's Burgers example (its residual, BC and IC) on our points as anchors."""
    low, high = domain.low, domain.high
    geometry = dde.geometry.GeometryXTime(
        dde.geometry.Interval(low[0], high[0]), dde.geometry.TimeDomain(low[1], high[1])
    )

    def pde(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dy_x = dde.grad.jacobian(y, x, i=0, j=0)
        dy_t = dde.grad.jacobian(y, x, i=0, j=1)
        dy_xx = dde.grad.hessian(y, x, i=0, j=0)
        return dy_t + y * dy_x - nu * dy_xx

    bc = dde.icbc.DirichletBC(geometry, lambda x: 0, lambda _, on_boundary: on_boundary)
    ic = dde.icbc.IC(
        geometry, lambda x: -np.sin(math.pi * x[:, 0:1]), lambda _, on_initial: on_initial
    )
    anchors = np.vstack([points["pde"], points["bc"], points["ic"]]).astype(np.float32)
    return dde.data.TimePDE(
        geometry, pde, [bc, ic], num_domain=0, num_boundary=0, num_initial=0, anchors=anchors
    )


def deepxde_model(module: Any) -> tuple[Any, Any]:
    """(dde, dde.Model) for `module`'s Burgers run: its points, its network's initial weights,
    its Adam settings; compiled, not trained."""
    dde = import_deepxde()
    problem = module.problem
    points = {n: c.points.detach().cpu().float().numpy() for n, c in module.conditions.items()}
    data = burgers_data(dde, float(problem.nu), points, problem.domain)
    counts = {"bc": len(points["bc"]), "ic": len(points["ic"])}
    if list(data.num_bcs) != [counts["bc"], counts["ic"]]:  # DeepXDE's own filters found them
        raise ValueError(
            f"DeepXDE found {data.num_bcs} BC/IC points among the anchors, expected "
            f"{[counts['bc'], counts['ic']]}"
        )
    widths, _ = mlp_shape(module.model) or ([], "")
    net = dde.nn.FNN(widths, "tanh", "Glorot normal")
    copy_weights(mlp_linears(module.model), mlp_linears(net))
    model = dde.Model(data, net)
    adam = adam_settings(module)
    if adam.get("betas", (0.9, 0.999)) != (0.9, 0.999) or adam.get("eps", 1e-8) != 1e-8:
        raise ValueError("DeepXDE's Adam takes lr only; this run's betas/eps differ")
    with quiet_import():
        model.compile("adam", lr=float(adam["lr"]), verbose=0)
    return dde, model


def deepxde_runner(module: Any, steps: int, turn: int) -> Runner:
    """The DeepXDE row for `module`'s run (before it trains: the same initial weights)."""
    dde, model = deepxde_model(module)
    runner = peer_runner(NAME, steps, turn)
    terms: list[list[torch.Tensor]] = []
    inner = model.data.losses_train

    def losses_train(*args: Any, **kwargs: Any) -> Any:
        result = inner(*args, **kwargs)
        terms[:] = [result]
        return result

    model.data.losses_train = losses_train  # an instance attribute, looked up at every step

    class Ticker(dde.callbacks.Callback):
        def on_batch_begin(self) -> None:
            runner.step_started()

        def on_batch_end(self) -> None:
            runner.step_ended()
            step = runner.clock.ticks - 1
            record_loss(runner, step, lambda: float(sum(t.detach() for t in terms[0])))
            if runner.clock.ticks >= runner.total_steps:
                model.stop_training = True  # before DeepXDE's test pass at the last iteration

    def body() -> None:
        model.train(
            iterations=runner.total_steps + 1,
            display_every=10 * (runner.total_steps + 1),
            verbose=0,
            callbacks=[Ticker()],
        )
        runner.facts["steps_run"] = runner.clock.ticks

    runner.body = body
    runner.facts.update(
        {
            "label": "DeepXDE (PyTorch backend)",
            "tool": f"deepxde {dde.__version__}",
            "loss_definition": LOSS_DEFINITION,
            "points_fed": len(model.data.train_x),
            "_linears": lambda: mlp_linears(model.net),
            "_model": model,
        }
    )
    return runner
