"""Derivatives of a network's outputs with respect to its inputs, the raw material of residuals.

Two engines compute the same `Derivatives` interface: `autograd` (nested reverse mode, any
model) and `taylor` (forward-mode Taylor propagation through MLPs, ~2x faster on
Navier-Stokes); `rules` holds the activation rules the Taylor engine applies.
"""

from mpsciml.derivatives.autograd import Derivatives, assembly_dtype, gradient

__all__ = ["Derivatives", "assembly_dtype", "gradient"]
