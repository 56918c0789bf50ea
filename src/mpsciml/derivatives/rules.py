"""Activation rules of the Taylor engine (`derivatives.taylor`) and the step that applies them.

An activation s = sigma(z) maps the value, first and unmixed second streams as

    z -> sigma(z),   z_i -> sigma'(z) z_i,   z_ii -> sigma''(z) z_i^2 + sigma'(z) z_ii,

evaluated in fp32 (fp64 for fp64) from the compute-dtype streams and rounded back, because z_i^2
can overflow fp16 where sigma''(z) z_i^2 does not. Built from plain torch ops, autograd would save
every fp32 intermediate (sigma', sigma'', the products) for backward: on Kovasznay flow 46 of the
59 MiB a mixed step saved, so mixed precision saved 12% of fp32's activation memory, not half.
Recomputing, a mixed (or bf16_mixed) step saves 23.6 MiB, 0.35x fp32, at the same step time.

`activation_step` therefore runs low-precision (fp16, bf16) streams through `_LowPrecisionStep`, an
autograd Function that saves only its low-precision inputs and recomputes the fp32 rule in
backward, with sigma''' for the gradient of the second-stream rule. Its backward is plain torch
ops, so it is itself differentiable: the autograd fallback for mixed partials (u_xy from the
stream u_x, taken with ``create_graph=True``) still gives the weight gradients. fp32 and fp64
keep the plain ops: there nothing is halved, and recomputing would only cost time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mpsciml.models.mlp import Sine

# A rule maps the pre-activation z to (sigma, sigma', sigma''); sigma'' None means identically 0.
ActivationRule = Callable[[nn.Module, Tensor], tuple[Tensor, Tensor, Tensor | None]]
# A derivative rule maps z to (sigma', sigma'', sigma'''), None meaning identically 0: what the
# backward of the low-precision step needs (sigma itself is not).
DerivativeRule = Callable[[nn.Module, Tensor], tuple[Tensor, Tensor | None, Tensor | None]]

# Dtypes whose activation steps recompute in backward instead of saving fp32 intermediates.
RECOMPUTE_DTYPES: set[torch.dtype] = {torch.float16, torch.bfloat16}

_SQRT_HALF, _INV_SQRT_2PI = math.sqrt(0.5), 1.0 / math.sqrt(2.0 * math.pi)
_GELU_K, _GELU_C = math.sqrt(2.0 / math.pi), 0.044715  # GELU(approximate="tanh")


def _tanh(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.tanh(z)
    d1 = 1 - s * s
    return s, d1, -2 * s * d1


def _tanh_d(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.tanh(z)
    d1 = 1 - s * s
    return d1, -2 * s * d1, -2 * d1 * (d1 - 2 * s * s)


def _sigmoid(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(z)
    d1 = s * (1 - s)
    return s, d1, d1 * (1 - 2 * s)


def _sigmoid_d(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sigmoid(z)
    d1 = s * (1 - s)
    d2 = d1 * (1 - 2 * s)
    return d1, d2, d2 * (1 - 2 * s) - 2 * d1 * d1


def _softplus(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Softplus(beta, threshold) is linear above the threshold; so are torch's own derivatives."""
    beta, threshold = float(module.beta), float(module.threshold)
    linear, sig = beta * z > threshold, torch.sigmoid(beta * z)
    d1 = torch.where(linear, torch.ones_like(z), sig)
    d2 = torch.where(linear, torch.zeros_like(z), beta * sig * (1 - sig))
    return F.softplus(z, beta=beta, threshold=threshold), d1, d2


def _softplus_d(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    beta, threshold = float(module.beta), float(module.threshold)
    linear, sig = beta * z > threshold, torch.sigmoid(beta * z)
    dsig = sig * (1 - sig)
    zero = torch.zeros_like(z)
    d1 = torch.where(linear, torch.ones_like(z), sig)
    d2 = torch.where(linear, zero, beta * dsig)
    return d1, d2, torch.where(linear, zero, (beta * beta) * dsig * (1 - 2 * sig))


def _silu(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    sig = torch.sigmoid(z)
    dsig = sig * (1 - sig)
    return z * sig, sig + z * dsig, dsig * (2 + z * (1 - 2 * sig))


def _silu_d(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """z sig(z): with sig' = D, sig'' = D (1 - 2 sig), sig''' = sig'' (1 - 2 sig) - 2 D^2."""
    sig = torch.sigmoid(z)
    dsig = sig * (1 - sig)
    ddsig = dsig * (1 - 2 * sig)
    dddsig = ddsig * (1 - 2 * sig) - 2 * dsig * dsig
    return sig + z * dsig, 2 * dsig + z * ddsig, 3 * ddsig + z * dddsig


def _gelu(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    if module.approximate == "tanh":  # 0.5 z (1 + tanh(u)), u = K (z + C z^3)
        du, ddu = _GELU_K * (1 + 3 * _GELU_C * z * z), 6 * _GELU_K * _GELU_C * z
        t = torch.tanh(_GELU_K * (z + _GELU_C * z**3))
        sech2 = 1 - t * t
        d2 = sech2 * (du + 0.5 * z * (ddu - 2 * t * du * du))
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * sech2 * du, d2
    cdf = 0.5 * (1 + torch.erf(z * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * z * z)
    return z * cdf, cdf + z * pdf, pdf * (2 - z * z)


def _gelu_d(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """sigma = 0.5 z T, T = 1 + tanh(u): sigma^(n) = (n/2) T^(n-1) + (z/2) T^(n), with
    T' = h u', T'' = h (u'' - 2 t u'^2), T''' = h (u''' - 6 t u' u'' - 2 u'^3 (h - 2 t^2)),
    h = 1 - t^2; exact GELU: z Phi(z), phi' = -z phi, so sigma''' = phi z (z^2 - 4)."""
    if module.approximate == "tanh":
        du, ddu = _GELU_K * (1 + 3 * _GELU_C * z * z), 6 * _GELU_K * _GELU_C * z
        t = torch.tanh(_GELU_K * (z + _GELU_C * z**3))
        h = 1 - t * t
        t1 = h * du
        t2 = h * (ddu - 2 * t * du * du)
        t3 = h * (6 * _GELU_K * _GELU_C - 6 * t * du * ddu - 2 * du**3 * (h - 2 * t * t))
        return 0.5 * (1 + t) + 0.5 * z * t1, t1 + 0.5 * z * t2, 1.5 * t2 + 0.5 * z * t3
    cdf = 0.5 * (1 + torch.erf(z * _SQRT_HALF))
    pdf = _INV_SQRT_2PI * torch.exp(-0.5 * z * z)
    return cdf + z * pdf, pdf * (2 - z * z), pdf * z * (z * z - 4)


def _sine(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    s = torch.sin(z)
    return s, torch.cos(z), -s


def _sine_d(module: nn.Module, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    c = torch.cos(z)
    return c, -torch.sin(z), -c


ACTIVATION_RULES: dict[type[nn.Module], ActivationRule] = {
    nn.Tanh: _tanh,
    nn.Sigmoid: _sigmoid,
    nn.Softplus: _softplus,
    nn.SiLU: _silu,
    nn.GELU: _gelu,
    Sine: _sine,
    nn.ReLU: lambda module, z: (torch.relu(z), (z > 0).to(z.dtype), None),
}
DERIVATIVE_RULES: dict[type[nn.Module], DerivativeRule] = {
    nn.Tanh: _tanh_d,
    nn.Sigmoid: _sigmoid_d,
    nn.Softplus: _softplus_d,
    nn.SiLU: _silu_d,
    nn.GELU: _gelu_d,
    Sine: _sine_d,
    nn.ReLU: lambda module, z: ((z > 0).to(z.dtype), None, None),
}


def register_activation(
    module_type: type[nn.Module], rule: ActivationRule, derivatives: DerivativeRule | None = None
) -> None:
    """Teach the engine an elementwise activation: rule(module, z) -> (sigma, sigma', sigma'').

    With `derivatives(module, z) -> (sigma', sigma'', sigma''')` its fp16/bf16 steps save only
    their low-precision inputs; without, they save the fp32 intermediates of `rule`.
    """
    ACTIVATION_RULES[module_type] = rule
    if derivatives is None:
        DERIVATIVE_RULES.pop(module_type, None)
    else:
        DERIVATIVE_RULES[module_type] = derivatives


def rule_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype activation rules are evaluated in: fp32, fp64 for fp64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def is_one(seed: float | Tensor) -> bool:
    """Whether a seed (or seed ratio) is the plain number 1, so multiplying by it can be left
    out. A tensor seed (a compiled step's, so that the scaler moving it triggers no recompile)
    is never left out: its value is data, and branching on it would break the graph."""
    return not isinstance(seed, Tensor) and seed == 1.0


def apply_rule(
    layer: nn.Module,
    z: Tensor,
    first: Tensor | None,
    second: Tensor | None,
    k: int,
    ratio: float | Tensor,
    summed: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The activation's chain rule on the streams, in the rule dtype, outputs in z's dtype.

    `first` (k', N or 1, H) holds the first streams, the leading `k` of which have second
    streams (`second`, (k, N, H) or None if identically zero); `ratio` = seed(2) / seed(1)^2.
    `summed`: `second` is one stream (1, N, H), the sum of those k (a Laplacian), whose rule is
    the sum of theirs: sigma''(z) sum_i z_i^2 + sigma'(z) sum_i z_ii.
    """
    dtype, wide = z.dtype, rule_dtype(z.dtype)
    s, d1, d2 = ACTIVATION_RULES[type(layer)](layer, z.to(wide))
    first_out = second_out = None
    if first is not None:
        f = first.to(wide)
        first_out = (d1 * f).to(dtype)
        if k and second is not None:
            second_out = d1 * second.to(wide)
        if k and d2 is not None:
            fk = f[:k]
            curvature = d2 if is_one(ratio) else ratio * d2
            # sigma'' z_i^2 per stream, or sigma'' sum_i z_i^2 as one (summed)
            factor, other = (
                (curvature, (fk * fk).sum(0, keepdim=True)) if summed else (curvature * fk, fk)
            )
            second_out = (
                factor * other if second_out is None else torch.addcmul(second_out, factor, other)
            )
        second_out = None if second_out is None else second_out.to(dtype)
    return s.to(dtype), first_out, second_out


class _LowPrecisionStep(torch.autograd.Function):
    """`apply_rule` saving only its (low-precision) inputs; backward recomputes in fp32.

    Gradients, with g the incoming ones and sums over the stream index:
        dz = g_v sigma' + sigma'' sum g_i z_i + sigma'' sum g_ii z_ii + r sigma''' sum g_ii z_i^2,
        dz_i = sigma' g_i (+ 2 r sigma'' z_i g_ii for i < k),   dz_ii = sigma' g_ii.
    Computed in the rule dtype and rounded to the inputs' dtypes, as autograd of `apply_rule`'s
    casts would. A summed second stream (a Laplacian, g_ii one stream) needs no formula of its
    own: broadcasting g over i gives exactly the derivatives of sigma'' sum_i z_i^2. Plain torch
    ops, so a ``create_graph`` backward can be differentiated again.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        layer: nn.Module,
        k: int,
        ratio: float | Tensor,
        summed: bool,
        z: Tensor,
        first: Tensor | None,
        second: Tensor | None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        ctx.save_for_backward(z, first, second)
        ctx.layer, ctx.k, ctx.ratio = layer, k, ratio
        ctx.set_materialize_grads(False)
        return apply_rule(layer, z, first, second, k, ratio, summed)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        g_value: Tensor | None,
        g_first: Tensor | None,
        g_second: Tensor | None,
    ) -> tuple[None, None, None, None, Tensor | None, Tensor | None, Tensor | None]:
        z, first, second = ctx.saved_tensors
        k, ratio, wide = ctx.k, ctx.ratio, rule_dtype(z.dtype)
        d1, d2, d3 = DERIVATIVE_RULES[type(ctx.layer)](ctx.layer, z.to(wide))
        terms: list[Tensor] = []  # of dz
        grad_first = grad_second = None
        if g_value is not None:
            terms.append(g_value.to(wide) * d1)
        f = None if first is None else first.to(wide)
        if g_first is not None and f is not None:
            g = g_first.to(wide)
            grad_first = g * d1
            if d2 is not None:
                terms.append(d2 * (g * f).sum(0))
        if g_second is not None and f is not None and k:
            g = g_second.to(wide)
            if second is not None:
                grad_second = (g * d1).to(second.dtype)
                if d2 is not None:
                    terms.append(d2 * (g * second.to(wide)).sum(0))
            if d2 is not None:
                fk = f[:k]
                gf = g * fk
                if d3 is not None:
                    terms.append((ratio * d3) * (gf * fk).sum(0))
                if grad_first is None:  # the first streams' outputs went unused
                    grad_first = gf.new_zeros((f.shape[0], *gf.shape[1:]))
                grad_first[:k] += (2 * ratio) * d2 * gf
        grad_z = None
        if terms and ctx.needs_input_grad[4]:
            grad_z = terms[0]
            for term in terms[1:]:
                grad_z = grad_z + term
            grad_z = grad_z.to(z.dtype)
        if grad_first is not None:
            grad_first = grad_first.sum_to_size(first.shape).to(first.dtype)
        return None, None, None, None, grad_z, grad_first, grad_second


def activation_step(
    layer: nn.Module,
    z: Tensor,
    first: Tensor | None,
    second: Tensor | None,
    k: int,
    ratio: float | Tensor,
    summed: bool = False,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """`apply_rule`, saving for backward only the low-precision inputs where that halves memory
    (z in `RECOMPUTE_DTYPES`, a derivative rule known, grads wanted), else plain autograd."""
    if (
        z.dtype in RECOMPUTE_DTYPES
        and type(layer) in DERIVATIVE_RULES
        and torch.is_grad_enabled()
        and first is not None
    ):
        return _LowPrecisionStep.apply(layer, k, ratio, summed, z, first, second)
    return apply_rule(layer, z, first, second, k, ratio, summed)
