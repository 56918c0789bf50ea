"""DeepONet (Lu et al., Nat. Mach. Intell. 2021) and POD-DeepONet (Lu et al., CMAME 2022).

An operator G maps an input function v, seen through its values at m fixed sensors, to an output
function u = G(v) that can be queried at any point y of its domain:

    G(v)(y)_o = sum_k b_k,o(v(x_1), ..., v(x_m)) * t_k,o(y) + bias_o,   k = 1..K (latent)

The branch net (an MLP over the m sensor values) gives the coefficients b, the trunk net (an MLP
over the d query coordinates) gives a learned basis t. Knows nothing of PDEs or precision.

Two forward forms, because operator data comes in two layouts:
  * `forward(v (B, m), y (B, d)) -> (B, out)`, pointwise ("unaligned"): row i of v pairs with
    row i of y. Works for any data and is the form a physics-informed DeepONet differentiates
    w.r.t. y (the trunk input is an ordinary autograd leaf).
  * `forward_aligned(v (N, m), y (P, d)) -> (N, P, out)`, Cartesian product ("aligned"): every
    function on every point, with one branch pass per function and one trunk pass per point
    instead of N * P of each.

Several outputs (`multi_output`, DeepXDE's strategies of Lu et al. 2022 Sec. 3.1.6):
  * "split" (DeepXDE split_both): branch and trunk each give K * out values; output o uses the
    o-th slice of K of both: each output has its own basis and coefficients in one network.
  * "shared_trunk" (DeepXDE split_branch): branch gives K * out, trunk gives K shared by all
    outputs, for outputs expected to live in one function space.
  * "shared_branch" (DeepXDE split_trunk): branch gives K shared, trunk gives K * out.
  * independent networks per output: build one DeepONet per output (no option needed).

POD-DeepONet (`DeepONet.with_pod_trunk`) replaces the trunk with the mean and leading POD modes of
the training outputs on their fixed grid, so only the aligned form on that grid exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mpsciml.contract import AlignedTrainingData, ModelKind
from mpsciml.models.mlp import ACTIVATIONS, MLP, integer_widths

MULTI_OUTPUT = ("split", "shared_trunk", "shared_branch")


def _positive(name: str, value: int) -> int:
    """An integer >= 1 (YAML may hand over 40.0), else a config error naming model.<name>."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise ValueError(f"model.{name}={value!r} must be an integer >= 1")
    if value < 1:
        raise ValueError(f"model.{name}={value!r} must be an integer >= 1")
    return int(value)


def _widths(name: str, hidden: Sequence[int]) -> list[int]:
    """Hidden widths checked here, so the message names branch_hidden/trunk_hidden, not hidden."""
    return integer_widths(name, hidden)


def _check_2d(name: str, tensor: Tensor, columns: int, what: str) -> None:
    if tensor.ndim != 2 or tensor.shape[1] != columns:
        raise ValueError(
            f"{name} has shape {tuple(tensor.shape)}; expected (rows, {what}={columns})"
        )


class PODBasis(nn.Module):
    """Mean and leading POD modes of training outputs on a fixed grid of P points.

    Why: for outputs on a fixed grid the best K-dimensional linear basis in the mean-square sense
    is known before training (the leading right singular vectors of the centred data), so the
    trunk net need not learn it (POD-DeepONet, Lu et al. 2022).

    Buffers (moved and cast by `.to()` with the model; used in the dtype of the coefficients):
        mean (P, out), modes (P, K, out), singular_values (K, out), grid (P, d) or absent.
    Modes are scaled by sqrt(P) as in Lu et al. 2022, so that mean_p modes[p, k, o]^2 = 1 and
    coefficients of O(1) give outputs of O(1), whatever the grid size.
    """

    def __init__(self, train_outputs: Tensor, n_modes: int, grid: Tensor | None = None) -> None:
        super().__init__()
        data = train_outputs.detach()
        if data.ndim == 2:
            data = data.unsqueeze(-1)
        if data.ndim != 3:
            raise ValueError(
                f"train_outputs has shape {tuple(train_outputs.shape)}; expected (N, P) or "
                "(N, P, out): N functions on one grid of P points"
            )
        n_functions, n_points, out_features = data.shape
        n_modes = _positive("n_modes", n_modes)
        if n_modes > min(n_functions, n_points):
            raise ValueError(
                f"model.n_modes={n_modes} exceeds min(N={n_functions}, P={n_points}), the most "
                "POD modes the training outputs have"
            )
        if grid is not None and (grid.ndim != 2 or grid.shape[0] != n_points):
            raise ValueError(f"grid has shape {tuple(grid.shape)}; expected (P={n_points}, d)")
        dtype = data.dtype if data.is_floating_point() else torch.get_default_dtype()
        exact = data.to(torch.float64)  # the SVD in float64: the basis is as good as the data
        mean = exact.mean(dim=0)  # (P, out)
        modes, singular_values = [], []
        for o in range(out_features):
            _, s, vh = torch.linalg.svd(exact[:, :, o] - mean[:, o], full_matrices=False)
            v = vh[:n_modes].T  # (P, K), orthonormal columns
            # SVD signs are arbitrary: make each mode's largest entry positive (reproducible).
            peak = v.abs().argmax(dim=0)
            v = v * torch.where(v[peak, torch.arange(n_modes)] < 0, -1.0, 1.0)
            modes.append(v * math.sqrt(n_points))
            singular_values.append(s[:n_modes])
        self.register_buffer("mean", mean.to(dtype))
        self.register_buffer("modes", torch.stack(modes, dim=-1).to(dtype))
        self.register_buffer("singular_values", torch.stack(singular_values, dim=-1).to(dtype))
        self.register_buffer("grid", None if grid is None else grid.detach().clone())
        self.n_modes, self.n_points, self.out_features = n_modes, n_points, out_features

    def project(self, outputs: Tensor) -> Tensor:
        """POD coefficients of outputs (N, P) or (N, P, out) -> (N, out * K), output-major.

        c[n, o, k] = mean_p (u[n, p, o] - mean[p, o]) * modes[p, k, o]; the layout matches the
        branch output of a POD-DeepONet, so `reconstruct(project(u))` is the best the model can do.
        """
        if outputs.ndim == 2:
            outputs = outputs.unsqueeze(-1)
        centred = outputs - self.mean.to(outputs.dtype)
        coefficients = torch.einsum("npo,pko->nok", centred, self.modes.to(outputs.dtype))
        return (coefficients / self.n_points).flatten(1)

    def reconstruct(self, coefficients: Tensor) -> Tensor:
        """Outputs on the grid from coefficients (N, out * K) -> (N, P, out): mean + c @ modes^T."""
        c = coefficients.unflatten(1, (self.out_features, self.n_modes))  # (N, out, K)
        dtype = coefficients.dtype
        fields = torch.einsum("nok,pko->npo", c, self.modes.to(dtype))
        return fields + self.mean.to(dtype)


class DeepONet(nn.Module):
    """Branch MLP (m sensors -> K coefficients) times trunk MLP (d coordinates -> K basis values).

    Layer sizes: branch n_sensors -> branch_hidden... -> latent * out_b, trunk coord_dim ->
    trunk_hidden... -> latent * out_t (out_b, out_t = out_features or 1 by `multi_output`). So
    DeepXDE's `[m, 40, 40]` is `branch_hidden=[40], latent=40`. `latent` defaults to
    `branch_hidden[-1]`. `trunk_activation_last` applies the activation to the trunk output too,
    as DeepXDE does: a bounded basis for tanh. The branch output stays linear (coefficients of
    any size). The bias is one learnable scalar per output, zero at start.
    """

    #: v at sensors and query points -> u; satisfies `contract.SensorOperator`
    accepts: ClassVar[tuple[ModelKind, ...]] = (ModelKind.SENSOR_OPERATOR,)

    def __init__(
        self,
        n_sensors: int,
        coord_dim: int,
        out_features: int = 1,
        branch_hidden: Sequence[int] = (128, 128, 128),
        trunk_hidden: Sequence[int] = (128, 128, 128),
        latent: int | None = None,
        activation: str = "tanh",
        init: str = "glorot_normal",
        trunk_activation_last: bool = True,
        multi_output: str = "split",
        pod: PODBasis | None = None,
    ) -> None:
        super().__init__()
        self.n_sensors = _positive("n_sensors", n_sensors)
        branch_widths = _widths("branch_hidden", branch_hidden)
        if multi_output not in MULTI_OUTPUT:
            raise ValueError(
                f"model.multi_output={multi_output!r} is unknown; "
                f"allowed: {', '.join(MULTI_OUTPUT)}"
            )
        self.multi_output = multi_output
        self.pod = pod
        if pod is not None:  # POD-DeepONet: the basis and the mean are fixed; no trunk, no bias
            self.coord_dim = None if pod.grid is None else pod.grid.shape[1]
            self.out_features, self.latent = pod.out_features, pod.n_modes
            self.branch = MLP(
                self.n_sensors, self.latent * self.out_features, branch_widths, activation, init
            )
            self.trunk = None
            self.register_parameter("bias", None)
            self.branch_outputs = self.trunk_outputs = self.out_features
            return
        self.coord_dim = _positive("coord_dim", coord_dim)
        self.out_features = _positive("out_features", out_features)
        trunk_widths = _widths("trunk_hidden", trunk_hidden)
        self.latent = _positive("latent", branch_widths[-1] if latent is None else latent)
        split_branch = multi_output in ("split", "shared_trunk")
        split_trunk = multi_output in ("split", "shared_branch")
        self.branch_outputs = self.out_features if split_branch else 1
        self.trunk_outputs = self.out_features if split_trunk else 1
        self.branch = MLP(
            self.n_sensors, self.latent * self.branch_outputs, branch_widths, activation, init
        )
        trunk = MLP(
            self.coord_dim, self.latent * self.trunk_outputs, trunk_widths, activation, init
        )
        self.trunk = (
            nn.Sequential(trunk, ACTIVATIONS[activation]()) if trunk_activation_last else trunk
        )
        self.bias = nn.Parameter(torch.zeros(self.out_features))

    @classmethod
    def build_with_training_data(
        cls,
        aligned_training_data: AlignedTrainingData,
        pod_modes: int | None = None,
        **kwargs: Any,
    ) -> DeepONet:
        """The factory's hook (`contract.TrainingDataBuilder`): a learned trunk, or with
        `pod_modes=K` the POD trunk of the training outputs on their grid (POD-DeepONet), which
        only the problem's training data can give."""
        if not pod_modes:
            return cls(**kwargs)
        data = aligned_training_data()
        if data is None:
            raise ValueError(
                f"model.pod_modes={pod_modes}: a POD trunk exists only on the fixed grid of "
                "aligned training data, without physics terms (e.g. problem=antiderivative or "
                "advection)"
            )
        branch = {k: kwargs[k] for k in ("branch_hidden", "activation", "init") if k in kwargs}
        return cls.with_pod_trunk(
            data.outputs, int(pod_modes), kwargs["n_sensors"], grid=data.trunk, **branch
        )

    @classmethod
    def with_pod_trunk(
        cls,
        train_outputs: Tensor,
        n_modes: int,
        n_sensors: int,
        branch_hidden: Sequence[int] = (128, 128, 128),
        activation: str = "tanh",
        init: str = "glorot_normal",
        grid: Tensor | None = None,
    ) -> DeepONet:
        """POD-DeepONet: G(v) on the grid = mean + branch(v) @ modes^T (Lu et al. 2022).

        train_outputs (N, P) or (N, P, out): the training outputs on their fixed grid of P
        points. The branch gives n_modes coefficients per output. With `grid` (P, d), the aligned
        form checks that it is queried on exactly that grid.
        """
        pod = PODBasis(train_outputs, n_modes, grid)
        return cls(
            n_sensors, 1, branch_hidden=branch_hidden, activation=activation, init=init, pod=pod
        )

    def _coefficients(self, branch_input: Tensor) -> Tensor:
        """Branch pass: (rows, m) -> (rows, out_b, K)."""
        _check_2d("branch_input", branch_input, self.n_sensors, "n_sensors")
        return self.branch(branch_input).unflatten(-1, (self.branch_outputs, self.latent))

    def _basis(self, trunk_input: Tensor) -> Tensor:
        """Trunk pass: (rows, d) -> (rows, out_t, K)."""
        _check_2d("trunk_input", trunk_input, self.coord_dim, "coord_dim")
        return self.trunk(trunk_input).unflatten(-1, (self.trunk_outputs, self.latent))

    def _add_bias(self, out: Tensor) -> Tensor:
        # Cast like nn.Linear's bias under autocast: the output keeps the compute dtype.
        return out + self.bias.to(out.dtype)

    def forward(self, branch_input: Tensor, trunk_input: Tensor) -> Tensor:
        """Pointwise (unaligned) form: (B, m), (B, d) -> (B, out); row i of both is one pair.

        The form to differentiate w.r.t. the trunk input (torch.autograd.grad with
        create_graph=True gives u_y, u_yy, ... per pair).
        """
        if self.pod is not None:
            raise ValueError(
                "a POD-DeepONet has a basis only on its training grid: use "
                "forward_aligned(branch_input) for outputs on that grid"
            )
        if (
            branch_input.ndim != 2
            or trunk_input.ndim != 2
            or (branch_input.shape[0] != trunk_input.shape[0])
        ):
            raise ValueError(
                f"pointwise form pairs rows: branch_input (B, m) and trunk_input (B, d) need the "
                f"same B; got {tuple(branch_input.shape)} and {tuple(trunk_input.shape)}"
            )
        b, t = self._coefficients(branch_input), self._basis(trunk_input)
        shape = (b.shape[0], self.out_features, self.latent)
        return self._add_bias(torch.einsum("bok,bok->bo", b.expand(shape), t.expand(shape)))

    def forward_indexed(self, branch_input: Tensor, trunk_input: Tensor, index: Tensor) -> Tensor:
        """Pointwise form with one branch pass per function: (N, m), (B, d), (B,) -> (B, out).

        Row i pairs function index[i] with point trunk_input[i], as `forward(branch_input[index],
        trunk_input)` would, but without running the branch net once per point: the form for
        many scattered points per function (unaligned data, physics-informed collocation).
        """
        if self.pod is not None:
            raise ValueError("a POD-DeepONet has a basis only on its training grid")
        b = self._coefficients(branch_input)[index]
        t = self._basis(trunk_input)
        shape = (t.shape[0], self.out_features, self.latent)
        return self._add_bias(torch.einsum("bok,bok->bo", b.expand(shape), t.expand(shape)))

    def forward_aligned(self, branch_input: Tensor, trunk_input: Tensor | None = None) -> Tensor:
        """Cartesian-product (aligned) form: (N, m), (P, d) -> (N, P, out).

        out[n, p] equals forward(branch_input[n], trunk_input[p]). Derivatives w.r.t. the trunk
        input here sum over the N functions; for per-function derivatives use `forward` on the
        expanded pairs. A POD-DeepONet takes trunk_input=None (or its grid) and answers on its grid.
        """
        if self.pod is not None:
            self._check_pod_grid(trunk_input)
            _check_2d("branch_input", branch_input, self.n_sensors, "n_sensors")
            return self.pod.reconstruct(self.branch(branch_input))
        if trunk_input is None:
            raise ValueError("trunk_input (P, d) is required unless the trunk is a POD basis")
        b, t = self._coefficients(branch_input), self._basis(trunk_input)
        b = b.expand(b.shape[0], self.out_features, self.latent)
        t = t.expand(t.shape[0], self.out_features, self.latent)
        return self._add_bias(torch.einsum("nok,pok->npo", b, t))

    def _check_pod_grid(self, trunk_input: Tensor | None) -> None:
        assert self.pod is not None
        if trunk_input is None:
            return
        grid = self.pod.grid
        if (
            trunk_input.ndim != 2
            or trunk_input.shape[0] != self.pod.n_points
            or (
                grid is not None
                and (
                    trunk_input.shape != grid.shape
                    or not torch.allclose(trunk_input.detach().to(grid.dtype), grid)
                )
            )
        ):
            raise ValueError(
                f"trunk_input of shape {tuple(trunk_input.shape)} is not the POD grid of "
                f"P={self.pod.n_points} points: a POD trunk exists only on its training grid"
            )
