"""Adaptive collocation points: RAR and RAD, seeded, resumable and the same on every rank.

A PINN with fixed points spends them evenly, while its residual is large where the solution is
steep (Burgers' shock). Every `every` steps this sampler evaluates the residual of each adapted
condition on a dense set of candidates and moves points to where it is large (the methods:
`data.adaptive_settings.AdaptiveSettings`).

What makes it exact and reproducible:
- The candidates of step s are the condition's own sampler drawn again on the stream
  `seed_stream(seed, "adaptive", name, s, j)` (as many draws j as it takes), so they follow the
  problem's geometry and sampling method, whatever the domain. RAD's random choice is seeded
  by (seed, name, s) too. The selection is therefore a function of (seed, step, weights).
- The residuals for the selection are evaluated with the current weights copied to the run's
  full precision (fp32; fp64 for an fp64 run), autocast off, through `torch.func.functional_call`
  (the weights themselves are not touched, and no graph to them is built; the inputs still carry
  gradients for the derivatives), in chunks of `EVAL_CHUNK` points, so a pure-fp16 run selects
  on residuals that neither overflow nor round to zero. Known limit (as for the precision
  module's reference gradient): a layer whose precision policy casts its output back to a pure
  fp16/bf16 network's dtype still does so here.
- Points change at the START of an update step, inside the step (`batch_points` is applied by
  the module to the step's batch), never in the data loader: Lightning's fetcher has the next
  batch in hand before the current step ends, so points chosen then would reach one step late,
  and later still after a resume. Update step s uses the weights after step s - 1, which a
  checkpoint written after step s - 1 holds as well: a resumed run redoes the same update.
- The state (RAR's added points, RAD's chosen points, the update history) is a state_dict of
  float64 CPU tensors, saved with the checkpoint by the callback (`callbacks.adaptive_sampling`).
- Under DDP rank r evaluates candidates r, r + W, ... (the work is split), the residuals are
  summed into one vector (each entry comes from one rank, the others add exact zeros), and every
  rank takes the same seeded decision on the same float64 numbers; it then trains on its slice
  (points r, r + W, ...) as `data.points.PointsPerStep` slices the drawn points.
- No update from the L-BFGS phase on (`freeze_at`): its line search needs one objective.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mpsciml.data.adaptive_settings import AdaptiveSettings
from mpsciml.derivatives.autograd import Derivatives
from mpsciml.distributed.integrity import all_reduce_sum, rank, world_size
from mpsciml.problems.base import Condition, Problem
from mpsciml.seeding import seed_stream, torch_generator

#: candidates per forward/derivative pass: a few MB of autograd graph for an MLP
EVAL_CHUNK = 4096


def full_precision(model: nn.Module) -> torch.dtype:
    """fp64 for an fp64 run, else fp32 (the residuals of a selection are never low precision)."""
    dtypes = {p.dtype for p in model.parameters()}
    return torch.float64 if torch.float64 in dtypes else torch.float32


def residual_magnitudes(
    model: nn.Module,
    condition: Condition,
    points: Tensor,
    names: tuple[tuple[str, ...], tuple[str, ...]],
    device: torch.device,
) -> Tensor:
    """|r(x)| at every point (float64, CPU): the root of the summed squares of the condition's
    equations, with the weights copied to full precision (see the module docstring)."""
    dtype = full_precision(model)
    state = {name: p.detach().to(dtype) for name, p in model.named_parameters()}
    for name, buffer in model.named_buffers():
        state[name] = buffer.to(dtype) if buffer.is_floating_point() else buffer
    magnitudes = []
    with torch.enable_grad(), torch.autocast(device.type, enabled=False):
        for chunk in points.split(EVAL_CHUNK):
            inputs = chunk.to(device, dtype).requires_grad_(True)
            outputs = torch.func.functional_call(model, state, (inputs,))
            residual = condition.residual(Derivatives(inputs, outputs, *names))
            equations = residual.values() if isinstance(residual, Mapping) else [residual]
            squares = sum(r.detach().double().reshape(len(chunk), -1).square() for r in equations)
            magnitudes.append(squares.sum(-1).sqrt().cpu())  # type: ignore[union-attr]
    return torch.cat(magnitudes)


def rar_choice(magnitudes: Tensor, n_add: int) -> Tensor:
    """The indices of the n_add largest residuals (ties: the earlier candidate)."""
    order = torch.argsort(magnitudes, descending=True, stable=True)
    return order[:n_add]


def rad_probabilities(magnitudes: Tensor, k: float, c: float) -> Tensor:
    """p(x) ~ |r|^k / mean(|r|^k) + c (Wu et al. 2023), unnormalised. All residuals zero (or
    k = 0): uniform. A candidate of zero weight (c = 0, r = 0) keeps a tiny one, so RAD can
    always draw as many distinct points as it needs."""
    weights = magnitudes.double() ** k
    mean = weights.mean()
    p = weights / mean + c if mean > 0 else torch.ones_like(weights)
    return torch.where(p > 0, p, p.max() * 1e-12)


def rad_choice(magnitudes: Tensor, count: int, k: float, c: float, generator: Any) -> Tensor:
    """`count` distinct candidates drawn with probability `rad_probabilities` (without
    replacement, as in Wu et al.'s code)."""
    p = rad_probabilities(magnitudes, k, c)
    return torch.multinomial(p, count, replacement=False, generator=generator)


class AdaptivePoints:
    """The adaptive points of a run: `points[name]` is RAR's added points (to append to the
    condition's drawn points) or RAD's chosen points (to replace them), float64 on the CPU."""

    def __init__(
        self,
        settings: AdaptiveSettings,
        problem: Problem,
        seed: int,
        conditions: Mapping[str, Condition],
        freeze_at: int | None = None,
    ) -> None:
        self.settings, self.problem, self.seed, self.freeze_at = settings, problem, seed, freeze_at
        for name in settings.conditions:
            if name not in conditions:
                raise ValueError(
                    f"sampling.conditions names {name!r}, which is no condition of the problem; "
                    f"conditions: {', '.join(conditions)}"
                )
            if getattr(conditions[name], "values", None) is not None:
                raise ValueError(
                    f"sampling.conditions: condition {name!r} fits observed values at its "
                    "points, which cannot move; adapt residual conditions only (e.g. pde)"
                )
        self.conditions = {name: conditions[name] for name in settings.conditions}
        #: points per condition before any update (the draw's count, the same for every draw)
        self.base_counts = {name: len(c.points) for name, c in self.conditions.items()}
        if settings.method == "rad":
            for name, count in self.base_counts.items():
                if settings.n_candidates < count:
                    raise ValueError(
                        f"sampling.n_candidates={settings.n_candidates} is fewer than the "
                        f"{count} points RAD draws for condition {name!r}: use >= {count}"
                    )
        self.points: dict[str, Tensor] = {}
        #: one record per update: step, and per condition points, residual mean and max
        self.updates: list[dict[str, Any]] = []
        self._version = 0  # bumped whenever `points` changes; keys the device copies
        self._cache: dict[str, tuple[int, Tensor, Tensor]] = {}

    # ------------------------------------------------------------ schedule
    def is_update_step(self, step: int) -> bool:
        """Every `every` steps from step `every` on, never from the L-BFGS phase's start."""
        every = self.settings.every
        frozen = self.freeze_at is not None and step >= self.freeze_at
        return step > 0 and step % every == 0 and not frozen

    # ---------------------------------------------------------- the update
    def candidates(self, name: str, step: int) -> Tensor:
        """`n_candidates` points of condition `name` for the update at `step`: the condition's
        own sampler, drawn again on fresh streams until there are enough."""
        wanted, parts, draw = self.settings.n_candidates, [], 0
        while sum(len(p) for p in parts) < wanted:
            stream = seed_stream(self.seed, "adaptive", name, step, draw)
            parts.append(self.problem.conditions(stream)[name].points)
            draw += 1
        return torch.cat(parts)[:wanted]

    def update(self, step: int, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Choose the new points of every adapted condition with the model's current weights;
        returns the metrics to log (`train/adaptive_*`). Every rank must call it at the same
        step (a collective under DDP)."""
        started = time.perf_counter()
        names = (self.problem.input_names, self.problem.output_names)
        ranks, me = world_size(), rank()
        record: dict[str, Any] = {"step": step}
        metrics: dict[str, float] = {}
        for name, condition in self.conditions.items():
            candidates = self.candidates(name, step)
            mine = residual_magnitudes(model, condition, candidates[me::ranks], names, device)
            magnitudes = torch.zeros(len(candidates), dtype=torch.float64)
            magnitudes[me::ranks] = mine
            if ranks > 1:  # each entry from one rank, exact zeros from the others
                magnitudes = all_reduce_sum(magnitudes.to(device)).cpu()
            if self.settings.method == "rar":
                chosen = candidates[rar_choice(magnitudes, self.settings.n_add)]
                previous = self.points.get(name, candidates[:0])
                self.points[name] = torch.cat([previous, chosen])
            else:
                generator = torch_generator(self.seed, "adaptive", "rad", name, step)
                count = self.base_counts[name]
                s = self.settings
                chosen_index = rad_choice(magnitudes, count, s.k, s.c, generator)
                self.points[name] = candidates[chosen_index]
            total = self.count(name)
            record[name] = {
                "points": total,
                "residual_mean": float(magnitudes.mean()),
                "residual_max": float(magnitudes.max()),
            }
            metrics[f"train/adaptive_points_{name}"] = float(total)
            metrics[f"train/adaptive_residual_mean_{name}"] = record[name]["residual_mean"]
            metrics[f"train/adaptive_residual_max_{name}"] = record[name]["residual_max"]
        record["seconds"] = round(time.perf_counter() - started, 4)
        self.updates.append(record)
        self._version += 1
        return metrics

    def count(self, name: str) -> int:
        """The condition's points now, over all ranks."""
        if name not in self.points:
            return self.base_counts[name]
        added = len(self.points[name])
        return self.base_counts[name] + added if self.settings.method == "rar" else added

    # ------------------------------------------------------ the step's batch
    def batch_points(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """The step's batch with this rank's adaptive points in place (appended for RAR,
        replacing the drawn ones for RAD), in the batch's dtype and on its device. The
        result is kept until the points or the drawn tensor change, so the cast and copy
        happen once per update, not once per step."""
        if not self.points:
            return batch
        adapted = dict(batch)
        for name, points in self.points.items():
            drawn: Tensor = batch[name]
            cached = self._cache.get(name)
            if cached is not None and cached[0] == self._version and cached[1] is drawn:
                adapted[name] = cached[2]
                continue
            mine = points[rank() :: world_size()].to(drawn.device, drawn.dtype)
            value = torch.cat([drawn, mine]) if self.settings.method == "rar" else mine
            self._cache[name] = (self._version, drawn, value)
            adapted[name] = value
        return adapted

    # -------------------------------------------------------- checkpointing
    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.settings.method,
            "points": {name: p.clone() for name, p in self.points.items()},
            "updates": list(self.updates),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("method") != self.settings.method:
            raise ValueError(
                f"resume: the checkpoint's adaptive points come from "
                f"sampling.adaptive={state.get('method')}, this run asks for "
                f"{self.settings.method}: resume with the same sampling settings"
            )
        self.points = {name: p.to(torch.float64).cpu() for name, p in state["points"].items()}
        self.updates = list(state["updates"])
        self._version += 1
        self._cache.clear()

    # --------------------------------------------------------------- report
    def summary(self) -> dict[str, Any]:
        """summary.json `sampling`: the method and settings, how many updates ran and the final
        point count of each adapted condition."""
        return {
            **self.settings.as_dict(),
            "updates": len(self.updates),
            "update_steps": [u["step"] for u in self.updates],
            # wall time of the updates (candidates, residuals, choice) on this rank
            "update_seconds": round(sum(u.get("seconds", 0.0) for u in self.updates), 3),
            "final_points": {name: self.count(name) for name in self.conditions},
            "initial_points": dict(self.base_counts),
            "last_update": self.updates[-1] if self.updates else None,
        }
