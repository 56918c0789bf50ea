"""Peer rows of the benchmark: the same PINN step in DeepXDE and in PINA, taking turns with ours.

`python scripts/benchmark.py problem=burgers --peers` adds `deepxde_fp32` and `pina_fp32` to the
rows (`peers_deepxde`, `peers_pina` build them). What is the same in every row, so the ratios
compare tools and nothing else:

- the problem (Burgers, nu = 0.01/pi on [-1, 1] x [0, 0.99], as `problems/burgers.py` defines it),
  written in each tool's own terms (DeepXDE: `TimePDE` with `DirichletBC` and `IC`; PINA: its
  `BurgersEquation` and `Condition`s on input points);
- the points: our run's collocation points, handed over as they are (DeepXDE's `anchors`, PINA's
  condition inputs), not each tool's own sampling;
- the network (an MLP 2-[w]xk-1 with tanh, each tool's own class) with our initial weights copied
  in, so step 0 starts from the same function; Adam with our run's settings, fp32, the CPU and the
  same thread count;
- the timing: the wall time between two batch starts of the row, taken by the runner's clock from
  a callback of the tool's own loop (DeepXDE's `Callback.on_batch_begin`, a Lightning callback for
  PINA), which also waits there for the baton, so the rows alternate in turns exactly as ours do.

What each tool calls its loss is its own; the differences are named in the row (`loss_definition`).
To compare the tools' training on one footing every row also gets `loss_ours_end`: our loss
(`BareLoop.loss`, fp32, autograd) at the row's weights after its last step, the same number of
Adam steps in every row.

A peer that is not installed is a row marked not run with the install hint, never a failure;
so is a case the peers cannot express (another problem, another network, a CUDA run: DeepXDE's
PyTorch backend sets torch's default device process-wide when it sees CUDA).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mpsciml.benchmark.bare_loop import BareLoop
from mpsciml.benchmark.runner import Runner, linear_layers
from mpsciml.benchmark.timing import StepClock

INSTALL_HINT = "not installed (pip install -e '.[peers]')"


@dataclass(frozen=True)
class Peer:
    """A peer tool: its row, the module to import, and where its builder lives."""

    row: str
    package: str
    builder: str  # "module:function", imported only when the peer is installed


PEERS = (
    Peer("deepxde_fp32", "deepxde", "mpsciml.benchmark.peers_deepxde:deepxde_runner"),
    Peer("pina_fp32", "pina", "mpsciml.benchmark.peers_pina:pina_runner"),
)


def installed(package: str) -> bool:
    """Whether `package` can be imported (without importing it: DeepXDE picks its backend then)."""
    return importlib.util.find_spec(package) is not None


mlp_linears = linear_layers


def mlp_shape(model: nn.Module) -> tuple[list[int], str] | None:
    """(widths in -> hidden -> out, activation) of a plain tanh/... MLP, None for anything else."""
    from mpsciml.models.mlp import MLP

    if type(model) is not MLP:
        return None
    linears = mlp_linears(model)
    acts = {type(m).__name__.lower() for m in model.net if not isinstance(m, nn.Linear)}
    widths = [linears[0].in_features, *(lin.out_features for lin in linears)]
    return widths, acts.pop() if len(acts) == 1 else "mixed"


@torch.no_grad()
def copy_weights(source: list[nn.Linear], target: list[nn.Linear]) -> None:
    """Weights and biases layer by layer; shapes must match (the same network)."""
    if [tuple(s.weight.shape) for s in source] != [tuple(t.weight.shape) for t in target]:
        raise ValueError("copy_weights: the two networks have different layer shapes")
    for s, t in zip(source, target, strict=True):
        t.weight.copy_(s.weight.to(t.weight.dtype))
        t.bias.copy_(s.bias.to(t.bias.dtype))


def refusal(module: Any, device: str) -> str | None:
    """Why the peers cannot run this case (None: they can): only Burgers with a tanh MLP on a
    CPU has a twin in both tools here."""
    from mpsciml.problems.burgers import Burgers

    if device != "cpu":
        return f"peers run on the CPU only (this run: {device})"
    if type(getattr(module, "problem", None)) is not Burgers:
        return "peers: only problem=burgers has a DeepXDE and PINA twin here"
    shape = mlp_shape(module.model)
    if shape is None or shape[1] != "tanh":
        return "peers: only model=mlp with tanh has a DeepXDE and PINA twin here"
    return None


def adam_settings(module: Any) -> dict[str, Any]:
    """Our run's Adam keywords (lr, betas, eps, weight_decay), for the peers' optimizers."""
    settings = dict(module.optimizer_cfg.adam)
    keep = ("lr", "betas", "eps", "weight_decay")
    out = {k: settings[k] for k in keep if k in settings}
    if "betas" in out:
        out["betas"] = tuple(float(b) for b in out["betas"])
    return out


@contextlib.contextmanager
def quiet_import() -> Iterator[None]:
    """A peer's import prints banners and changes process-wide settings (PINA sets every
    UserWarning to "always" and its own warning format): keep both out of our rows."""
    filters, formatter = list(warnings.filters), warnings.formatwarning
    default_device = torch.get_default_device()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        warnings.filters[:] = filters
        warnings.formatwarning = formatter
        torch.set_default_device(default_device)


def peer_runner(name: str, steps: int, turn: int) -> Runner:
    """An empty runner of kind "peer" whose body the peer's builder sets."""
    return Runner(name, "peer", StepClock(None, 0, steps, turn))


def record_loss(runner: Runner, step: int, loss: Callable[[], float]) -> None:
    """The tool's own loss on the steps our rows record it (step 0 and the untimed ones after the
    timed steps): no host sync inside the timed steps."""
    if step == 0 or step >= runner.clock.steps:
        runner.losses.append(loss())


def peer_rows(
    module: Any, device: str, steps: int, turn: int, wanted: list[str] | None = None
) -> tuple[list[Runner], dict[str, tuple[str, str]]]:
    """Runners for the installed peers and (row -> (short reason, detail)) for the rest."""
    import importlib

    runners: list[Runner] = []
    skipped: dict[str, tuple[str, str]] = {}
    why = refusal(module, device)
    for peer in PEERS:
        if wanted is not None and peer.row not in wanted:
            continue
        if not installed(peer.package):
            skipped[peer.row] = (INSTALL_HINT, f"{peer.package} is not importable")
            continue
        if why is not None:
            skipped[peer.row] = (why, why)
            continue
        path, function = peer.builder.split(":")
        try:
            build = getattr(importlib.import_module(path), function)
            runners.append(build(module, steps, turn))
        except Exception as exc:  # a peer's API change must not stop our rows
            skipped[peer.row] = (f"could not be built: {type(exc).__name__}", str(exc))
    return runners, skipped


def loss_ours_end(reference: BareLoop, runners: list[Runner]) -> None:
    """Our loss (`reference.loss()`: fp32, the run's points and residuals) at each runner's final
    weights (`facts["_linears"]()`, the Linear layers of its network), as `loss_ours_end`. The
    reference loop's network is overwritten: it exists for this."""
    target = mlp_linears(reference.model)
    for runner in runners:
        linears = runner.facts.get("_linears")
        if runner.error is not None or linears is None:
            continue
        try:
            copy_weights(linears(), target)
        except ValueError:  # not the same network (a model the peers do not share)
            continue
        runner.facts["loss_ours_end"] = float(reference.loss().detach())
