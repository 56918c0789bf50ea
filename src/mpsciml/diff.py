"""Derivatives of network outputs with respect to network inputs.

A PDE residual asks for many partial derivatives of a few output fields, and several equations
share them (u_x appears in the momentum and the continuity equations of Navier-Stokes). The
`Derivatives` object computes each one once, on first request, and caches it, so a residual can be
written the way it reads on paper without paying twice for the same backward pass.

Every derivative is taken with ``create_graph=True`` because the loss built from it is
differentiated again with respect to the weights.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gradient(output: Tensor, inputs: Tensor) -> Tensor:
    """d(output)/d(inputs) for a batch of independent points.

    `output` has shape (N,) and depends on row i of `inputs` (N, D) only through that row, so the
    gradient of the sum equals the per-point gradient, shape (N, D). Unused inputs give zeros
    rather than None so a residual never has to special-case a derivative that vanishes; so does
    an output that does not depend on anything requiring grad (u_xx of a field linear in x).
    """
    if not output.requires_grad:
        return torch.zeros_like(inputs)
    (grad,) = torch.autograd.grad(
        output,
        inputs,
        grad_outputs=torch.ones_like(output),
        create_graph=True,
        allow_unused=True,
    )
    if grad is None:
        return torch.zeros_like(inputs)
    return grad


class Derivatives:
    """Lazily computed, cached partial derivatives of named outputs w.r.t. named inputs.

    Usage inside a residual::

        d = Derivatives(x, u, input_names=("x", "t"), output_names=("u",))
        d("u", "t") + d["u"] * d("u", "x") - nu * d("u", "x", "x")

    `d[name]` is an output column (N,); `d(name, *wrt)` the mixed partial derivative, taken in the
    order given. The gradient of one output w.r.t. all inputs is one backward pass; it is cached
    per (output, prefix of wrt), so u_x, u_xx and u_xy share their passes.
    """

    def __init__(
        self,
        inputs: Tensor,
        outputs: Tensor,
        input_names: tuple[str, ...] | list[str],
        output_names: tuple[str, ...] | list[str],
    ) -> None:
        if not inputs.requires_grad:
            raise ValueError("inputs must require grad to take derivatives of the outputs")
        if inputs.shape[-1] != len(input_names) or outputs.shape[-1] != len(output_names):
            raise ValueError(
                f"shape mismatch: inputs {tuple(inputs.shape)} for {list(input_names)}, "
                f"outputs {tuple(outputs.shape)} for {list(output_names)}"
            )
        self.inputs = inputs
        self.outputs = outputs
        self._input_index = {name: i for i, name in enumerate(input_names)}
        self._output_index = {name: i for i, name in enumerate(output_names)}
        # (output, wrt...) -> full gradient (N, D) of that derivative w.r.t. all inputs
        self._full_gradients: dict[tuple[str, ...], Tensor] = {}

    def __getitem__(self, output_name: str) -> Tensor:
        return self.outputs[:, self._output_index[output_name]]

    def __call__(self, output_name: str, *wrt: str) -> Tensor:
        if not wrt:
            return self[output_name]
        unknown = [name for name in wrt if name not in self._input_index]
        if unknown:
            raise KeyError(f"unknown input(s) {unknown}; inputs are {list(self._input_index)}")
        key = (output_name, *wrt[:-1])
        if key not in self._full_gradients:
            self._full_gradients[key] = gradient(self(output_name, *wrt[:-1]), self.inputs)
        return self._full_gradients[key][:, self._input_index[wrt[-1]]]

    def laplacian(self, output_name: str, *over: str) -> Tensor:
        """Sum of unmixed second derivatives over the named inputs (all inputs if none given)."""
        names = over or tuple(self._input_index)
        total = self(output_name, names[0], names[0])
        for name in names[1:]:
            total = total + self(output_name, name, name)
        return total

    def coordinate(self, input_name: str) -> Tensor:
        """Column of the inputs, e.g. the x of each point, for source terms and exact values."""
        return self.inputs[:, self._input_index[input_name]]
