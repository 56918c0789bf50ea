"""Each loss term's gradient with respect to the trainable parameters, in full precision.

Why not read `p.grad`: it holds the weighted total's gradient only, multiplied by the loss
scale under `precision=mixed`, and in fp16 the small terms' gradients underflow to zero (the
very terms a weighting should lift). So the gradients are computed apart from the step, the way
`precision.gradient_agreement.reference_gradients` computes its reference: on float32 copies of
the weights (float64 in an fp64 run), autocast off, on the step's batch, through
`torch.autograd.grad`; `p.grad`, the GradScaler and the derivative scaler are not touched.
Under DDP the ranks' parts are summed there in one all-reduce, so every rank gets the
full-batch gradients and computes the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mpsciml.distributed.integrity import reduce_terms
from mpsciml.precision.gradient_agreement import reference_gradients
from mpsciml.precision.plugin import SciMLPrecision


def full_dtype(module: Any) -> torch.dtype:
    """float64 for an fp64 run, else float32 (what the precision plugin calls full)."""
    trainer = getattr(module, "_trainer", None)
    plugin = getattr(trainer, "precision_plugin", None) if trainer is not None else None
    if isinstance(plugin, SciMLPrecision):
        return plugin.spec.full_dtype
    return torch.float32


def term_gradients(
    module: Any, batch: Any, dtype: torch.dtype | None = None
) -> tuple[dict[str, float], dict[str, Tensor]]:
    """({term: its value}, {term: its gradient over every trainable parameter as one flat
    vector}) on `batch`, both from the same full-precision forward and global under DDP."""
    params = [p for p in module.parameters() if p.requires_grad]
    values: dict[str, Tensor] = {}

    def each_term(terms: dict[str, Tensor]) -> dict[str, Tensor]:
        values.update({name: term.detach() for name, term in terms.items()})
        return dict(terms)

    gradients = reference_gradients(module, batch, params, each_term, dtype or full_dtype(module))
    flat = {name: torch.cat([g.reshape(-1) for g in grads]) for name, grads in gradients.items()}
    return {name: float(v) for name, v in reduce_terms(values).items()}, flat
