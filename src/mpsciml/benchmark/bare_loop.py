"""The reference row: the same PINN step in plain PyTorch, no Lightning and no precision plugin.

What stays the same as `PINNModule`'s Adam step, so the difference is framework overhead only:
the network (a copy with the same initial weights), the collocation points (cast once to fp32),
each condition's residual evaluated through the same derivative engine (`Derivatives` for
`derivatives=autograd`, `TaylorDerivatives` with the same carried derivatives for `taylor`), the
weighted sum of mean squared residuals in the same order, `backward()` and Adam with the same
settings. What is left out is exactly what the framework adds: Lightning's loop, hooks and
logging, the plugin's closure handling, skip-on-non-finite checks and diagnostics.

With ``fallback=False`` (Taylor mode only) nothing is differentiated with respect to the inputs:
they are not marked ``requires_grad`` and a derivative the streams do not carry is an error
instead of an autograd fallback. That is the form `torch.compile` can capture (it can neither
return a tensor marked inside the graph nor do a double backward); `bare_compiled` uses it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from mpsciml.derivatives.autograd import Derivatives
from mpsciml.derivatives.taylor import TaylorDerivatives, probe_derivatives, supports_taylor
from mpsciml.problems.base import Condition


class BareLoop:
    """``loop.step()`` does one fp32 training step and returns its loss (before the update)."""

    def __init__(
        self,
        model: nn.Module,
        conditions: Mapping[str, Condition],
        names: tuple[tuple[str, ...], tuple[str, ...]],
        weights: Mapping[str, float],
        optimizer: Callable[[Iterable[Tensor]], Optimizer],
        derivatives: str = "autograd",
        device: str | torch.device = "cpu",
        fallback: bool = True,
    ) -> None:
        self.model = copy.deepcopy(model).to(device, torch.float32)
        self.conditions = dict(conditions)
        self.names = names
        self.weights = dict(weights)
        self.points = {n: c.points.to(device, torch.float32) for n, c in self.conditions.items()}
        self.taylor = derivatives == "taylor" and supports_taylor(self.model)
        if not fallback and not self.taylor:
            raise ValueError(
                f"BareLoop(fallback=False) needs Taylor mode through the model; got "
                f"derivatives={derivatives!r} with {type(model).__name__}"
            )
        self.fallback = fallback
        self.carry = {
            n: probe_derivatives(c.residual, self.model, c.points, *names)
            for n, c in self.conditions.items()
            if self.taylor
        }
        self.optimizer = optimizer(self.model.parameters())

    @classmethod
    def like(
        cls,
        module: nn.Module,
        device: str | torch.device = "cpu",
        derivatives: str | None = None,
        fallback: bool = True,
    ) -> BareLoop:
        """The bare equivalent of a freshly built `PINNModule` (call before it trains); its
        derivative mode unless `derivatives` is given."""
        from hydra.utils import instantiate

        problem = module.problem
        return cls(
            module.model,
            module.conditions,
            (tuple(problem.input_names), tuple(problem.output_names)),
            module.loss_weights,
            instantiate(module.optimizer_cfg.adam),
            derivatives=derivatives or module.derivatives,
            device=device,
            fallback=fallback,
        )

    def loss(self) -> Tensor:
        loss: Tensor | float = 0.0
        for name, condition in self.conditions.items():
            inputs = self.points[name].detach()
            if self.fallback:
                inputs = inputs.requires_grad_(True)
            if self.taylor and not self.fallback:
                d: Derivatives = TaylorDerivatives(
                    self.model, inputs, *self.names, carry=self.carry[name], fallback=False
                )
            elif self.taylor:
                d = TaylorDerivatives(self.model, inputs, *self.names, carry=self.carry[name])
            else:
                d = Derivatives(inputs, self.model(inputs), *self.names)
            residual = condition.residual(d)
            if isinstance(residual, Mapping):
                for equation, value in residual.items():
                    loss = loss + self.weights[f"{name}_{equation}"] * torch.mean(value**2)
            else:
                loss = loss + self.weights[name] * torch.mean(residual**2)
        assert isinstance(loss, Tensor)
        return loss

    def step(self) -> Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.optimizer.step()
        return loss.detach()
