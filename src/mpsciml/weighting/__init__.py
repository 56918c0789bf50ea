"""Loss balancing, `weighting=`: fixed weights or a rule that moves them during training.

One rule per file (`lr_annealing`, `relobralo`, `softadapt`, `ntk`), what they share in
`method`, the per-term full-precision gradients in `term_gradients`, the callback that applies
them in `callback`, the config entry point in `registry`.
"""

from mpsciml.weighting.registry import ALLOWED, attach_weighting, check_weighting

__all__ = ["ALLOWED", "attach_weighting", "check_weighting"]
