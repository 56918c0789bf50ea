"""Derivatives of network outputs with respect to network inputs.

A PDE residual asks for many partial derivatives of a few output fields, and several equations
share them (u_x appears in the momentum and the continuity equations of Navier-Stokes). The
`Derivatives` object computes each one once, on first request, and caches it, so a residual can be
written the way it reads on paper without paying twice for the same backward pass.

Every derivative is taken with ``create_graph=True`` because the loss built from it is
differentiated again with respect to the weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def assembly_dtype(tensor: Tensor) -> torch.dtype:
    """Residuals are assembled in fp32 at least: fp16 outputs and derivatives are upcast before
    products like u * u_x, so the PDE terms cannot overflow or lose digits in their own sum."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def gradient(output: Tensor, inputs: Tensor, seed: float = 1.0) -> Tensor:
    """d(output)/d(inputs) for a batch of independent points.

    `output` has shape (N,) and depends on row i of `inputs` (N, D) only through that row, so the
    gradient of the sum equals the per-point gradient, shape (N, D). Unused inputs give zeros
    rather than None so a residual never has to special-case a derivative that vanishes; so does
    an output that does not depend on anything requiring grad (u_xx of a field linear in x).

    `seed` multiplies the backward pass's starting value and is divided out of the result: the
    result is the same, but every intermediate of the pass is scaled by `seed`, which keeps an
    fp16 backward pass inside fp16's range (see `mpsciml.precision.derivative_scaler`).
    """
    if not output.requires_grad:
        return torch.zeros_like(inputs, dtype=assembly_dtype(inputs))
    (grad,) = torch.autograd.grad(
        output,
        inputs,
        grad_outputs=torch.full_like(output, seed),
        create_graph=True,
        allow_unused=True,
    )
    if grad is None:
        return torch.zeros_like(inputs, dtype=assembly_dtype(inputs))
    grad = grad.to(assembly_dtype(grad))
    return grad if seed == 1.0 else grad / seed


class Derivatives:
    """Lazily computed, cached partial derivatives of named outputs w.r.t. named inputs.

    Usage inside a residual::

        d = Derivatives(x, u, input_names=("x", "t"), output_names=("u",))
        d("u", "t") + d["u"] * d("u", "x") - nu * d("u", "x", "x")

    `d[name]` is an output column (N,); `d(name, *wrt)` the mixed partial derivative, taken in the
    order given. The gradient of one output w.r.t. all inputs is one backward pass; it is cached
    per (output, prefix of wrt), so u_x, u_xx and u_xy share their passes. Outputs and
    derivatives are returned in fp32 (fp64 for fp64 runs) whatever the network computed in.

    `seed(order)` gives the backward seed for derivatives of that order (1 if None). With
    `track_nonfinite`, `nonfinite[order]` counts non-finite entries of the derivatives of each
    order as a tensor (no host sync), so a training step can tell an overflowed derivative from
    an overflowed parameter gradient.
    """

    def __init__(
        self,
        inputs: Tensor,
        outputs: Tensor,
        input_names: tuple[str, ...] | list[str],
        output_names: tuple[str, ...] | list[str],
        seed: Callable[[int], float] | None = None,
        track_nonfinite: bool = False,
    ) -> None:
        if not inputs.requires_grad:
            raise ValueError("inputs must require grad to take derivatives of the outputs")
        self._bind(inputs, outputs, input_names, output_names, seed, track_nonfinite)

    def _bind(
        self,
        inputs: Tensor,
        outputs: Tensor,
        input_names: tuple[str, ...] | list[str],
        output_names: tuple[str, ...] | list[str],
        seed: Callable[[int], Any] | None,
        track_nonfinite: bool,
    ) -> None:
        """The state, without the requires-grad check: a forward-mode subclass that never
        differentiates w.r.t. the inputs (a compiled step) binds its streams here too."""
        if inputs.shape[-1] != len(input_names) or outputs.shape[-1] != len(output_names):
            raise ValueError(
                f"shape mismatch: inputs {tuple(inputs.shape)} for {list(input_names)}, "
                f"outputs {tuple(outputs.shape)} for {list(output_names)}"
            )
        self.inputs = inputs
        self.outputs = outputs.to(assembly_dtype(outputs))
        self._input_index = {name: i for i, name in enumerate(input_names)}
        self._output_index = {name: i for i, name in enumerate(output_names)}
        self._seed = seed
        self._track = track_nonfinite
        self.nonfinite: dict[int, Tensor] = {}
        # (output, wrt...) -> full gradient (N, D) of that derivative w.r.t. all inputs
        self._full_gradients: dict[tuple[str, ...], Tensor] = {}

    def __getitem__(self, output_name: str) -> Tensor:
        if output_name not in self._output_index:
            known = list(self._output_index)
            raise KeyError(f"unknown output {output_name!r}; outputs are {known}")
        return self.outputs[:, self._output_index[output_name]]

    def __call__(self, output_name: str, *wrt: str) -> Tensor:
        if not wrt:
            return self[output_name]
        unknown = [name for name in wrt if name not in self._input_index]
        if unknown:
            raise KeyError(f"unknown input(s) {unknown}; inputs are {list(self._input_index)}")
        key = (output_name, *wrt[:-1])
        if key not in self._full_gradients:
            order = len(wrt)
            seed = self._seed(order) if self._seed is not None else 1.0
            full = gradient(self(output_name, *wrt[:-1]), self.inputs, seed)
            self._full_gradients[key] = full
            if self._track:
                bad = torch.count_nonzero(~torch.isfinite(full))
                self.nonfinite[order] = self.nonfinite.get(order, 0) + bad
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
        if input_name not in self._input_index:
            raise KeyError(f"unknown input {input_name!r}; inputs are {list(self._input_index)}")
        return self.inputs[:, self._input_index[input_name]].to(self.outputs.dtype)
