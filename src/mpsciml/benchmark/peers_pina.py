"""The `pina_fp32` row: our Burgers run as a PINA problem, trained by PINA's own Trainer.

PINA (pina-mathlab) describes the problem as a `TimeDependentProblem, SpatialProblem` with our
domain (x in [-1, 1], t in [0, 0.99]) and three conditions on input points: our domain points
with PINA's own `BurgersEquation(nu)`, our boundary points with u = 0 and our initial points with
u + sin(pi x) = 0 (the residuals PINA's Burgers problem uses). The network is PINA's
`FeedForward` (2-[w]xk-1, tanh) with our initial weights copied in; the solver is its
`PhysicsInformedSingleModelSolver` (PINN) with `TorchOptimizer(torch.optim.Adam, <our settings>)`;
the default loss (MSE per condition, summed): the same loss definition and points as ours, so
its step-0 loss equals ours.

The training loop is PINA's `Trainer.train()` (a Lightning trainer, the `lightning` package),
full batch (`batch_size=None`, one step per epoch), with what our benchmark rows also drop turned
off: progress bar, logger, checkpoints, model summary. A `lightning.pytorch.Callback` placed first
ticks the runner's clock at each batch start (waiting there for the baton) and reads the loss that
the training step returned, on untimed steps only.
"""

from __future__ import annotations

import math
from importlib.metadata import PackageNotFoundError, version
from typing import Any

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

NAME = "pina_fp32"
LOSS_DEFINITION = "PINA: sum over conditions of MSE (the same terms and points as ours)"


def pina_version() -> str:
    try:
        return version("pina-mathlab")
    except PackageNotFoundError:
        return "unknown"


def burgers_problem(module: Any) -> Any:
    """A PINA problem with our Burgers conditions on our points."""
    with quiet_import():
        from pina import Condition, LabelTensor
        from pina.domain import CartesianDomain
        from pina.equation import Equation
        from pina.equation.zoo import BurgersEquation
        from pina.problem import SpatialProblem, TimeDependentProblem

    problem, names = module.problem, list(module.problem.input_names)
    low, high = problem.domain.low, problem.domain.high
    points = {n: c.points.detach().cpu().float() for n, c in module.conditions.items()}

    def boundary(input_: Any, output_: Any) -> Any:
        return output_

    def initial(input_: Any, output_: Any) -> Any:
        return output_ + torch.sin(math.pi * input_["x"])

    class PinaBurgers(TimeDependentProblem, SpatialProblem):
        output_variables = list(problem.output_names)  # noqa: RUF012 - PINA's declaration
        spatial_domain = CartesianDomain({"x": [low[0], high[0]]})
        temporal_domain = CartesianDomain({"t": [low[1], high[1]]})
        domains: dict[str, Any] = {}  # noqa: RUF012 - PINA's class-level declaration
        conditions = {  # noqa: RUF012
            "pde": Condition(
                input=LabelTensor(points["pde"], names),
                equation=BurgersEquation(float(problem.nu)),
            ),
            "bc": Condition(input=LabelTensor(points["bc"], names), equation=Equation(boundary)),
            "ic": Condition(input=LabelTensor(points["ic"], names), equation=Equation(initial)),
        }

    return PinaBurgers()


def pina_solver(module: Any) -> Any:
    """PINA's PINN solver for `module`'s run: our points, initial weights and Adam settings."""
    with quiet_import():
        from pina.model import FeedForward
        from pina.optim import TorchOptimizer
        from pina.solver import PhysicsInformedSingleModelSolver

    widths, _ = mlp_shape(module.model) or ([], "")
    hidden = widths[1:-1]
    if len(set(hidden)) != 1:
        raise ValueError(f"PINA's FeedForward has one inner width; this network has {hidden}")
    net = FeedForward(
        input_dimensions=widths[0],
        output_dimensions=widths[-1],
        inner_size=hidden[0],
        n_layers=len(hidden),
        func=torch.nn.Tanh,
    )
    copy_weights(mlp_linears(module.model), mlp_linears(net))
    optimizer = TorchOptimizer(torch.optim.Adam, **adam_settings(module))
    return PhysicsInformedSingleModelSolver(
        problem=burgers_problem(module), model=net, optimizer=optimizer
    )


def pina_runner(module: Any, steps: int, turn: int) -> Runner:
    """The PINA row for `module`'s run (before it trains: the same initial weights)."""
    with quiet_import():
        import lightning
        from pina import Trainer

    solver = pina_solver(module)
    runner = peer_runner(NAME, steps, turn)

    class Ticker(lightning.pytorch.Callback):
        def on_train_batch_start(self, *args: Any) -> None:
            runner.step_started()

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, *args: Any) -> None:
            runner.step_ended()
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            record_loss(runner, runner.clock.ticks - 1, lambda: float(loss.detach()))

    with quiet_import():
        trainer = Trainer(
            solver,
            max_steps=runner.total_steps,
            accelerator="cpu",
            devices=1,
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            callbacks=[Ticker()],
        )

    def body() -> None:
        trainer.train()
        runner.facts["steps_run"] = trainer.global_step

    runner.body = body
    runner.facts.update(
        {
            "label": "PINA (PINN solver)",
            "tool": f"pina-mathlab {pina_version()}",
            "loss_definition": LOSS_DEFINITION,
            "_linears": lambda: mlp_linears(solver.model),
        }
    )
    return runner
