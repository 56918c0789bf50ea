"""Find the runs below some folders and load what each left behind, forgiving of old folders.

A report must work on every run folder ever written: summaries from before a field existed,
failed runs that wrote only `status` and `error`, a half-written or hand-edited file. So every
field read here is optional, and a missing one becomes `None` (a blank in the report), never an
exception. When the summary lacks the identity of a run (problem, model, precision, seed, steps),
the resolved Hydra config in the same folder (`.hydra/config.yaml`) supplies it.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SUMMARY = "summary.json"


@dataclass
class Run:
    """One run folder, reduced to the facts a report compares. Numbers are None when unknown."""

    folder: Path
    status: str  # ok | diverged | failed | unknown (no status recorded)
    problem: str
    model: str
    precision: str
    seed: int | None
    steps: int | None  # the planned budget (trainer.max_steps), else the steps actually run
    steps_run: int | None
    steps_assumed: bool = False  # steps were not recorded; taken from the run's siblings
    l2: dict[str, float] = field(default_factory=dict)
    step_ms: float | None = None
    peak_rss_mb: float | None = None
    cuda_max_allocated_mb: float | None = None
    git_commit: str | None = None
    device: str | None = None
    torch: str | None = None
    error: str | None = None
    skipped_steps: int | None = None
    overrides: tuple[str, ...] | None = None  # Hydra overrides; None when not recorded
    in_sweep: bool = False  # inside a Hydra multirun folder (jobs share one process)
    #: a spectral model's own precision as configured (`spectral_label`), None for other models
    spectral: str | None = None
    #: the training strategies that differ from the defaults (`strategy_label`), None for none
    strategy: str | None = None

    @property
    def setting(self) -> str:
        """What the run was asked to run in: the precision, for a spectral model its spectral
        setting too ("mixed | half+tanh"), and the training strategies ("fp32 | softadapt")."""
        return " | ".join(p for p in (self.precision, self.spectral, self.strategy) if p)


class NoRunsError(Exception):
    """A folder given to the report does not exist, or holds no summary.json below it."""


def find_summaries(folders: list[Path]) -> list[Path]:
    """Every summary.json at or below each folder, in a stable order, each file once."""
    found: dict[Path, None] = {}
    for folder in folders:
        if not folder.exists():
            raise NoRunsError(f"{folder} does not exist")
        if folder.is_file():
            if folder.name != SUMMARY:
                raise NoRunsError(f"{folder} is a file, not a run or sweep folder")
            paths = [folder]
        else:
            paths = sorted(folder.rglob(SUMMARY))
        if not paths:
            raise NoRunsError(f"no {SUMMARY} found below {folder}")
        for path in paths:
            found.setdefault(path.resolve(), None)
    return list(found)


def load_runs(folders: list[Path]) -> list[Run]:
    return [load_run(path) for path in find_summaries(folders)]


def load_run(summary_path: Path) -> Run:
    """One run from its summary.json, filling gaps from its Hydra config when it has one."""
    folder = summary_path.parent
    summary, unreadable = _read_json(summary_path)
    config = _read_yaml(folder / ".hydra" / "config.yaml")
    overrides = _read_yaml(folder / ".hydra" / "overrides.yaml")
    precision = summary.get("precision")
    if isinstance(precision, str):  # tolerate a flat string from an older writer
        precision = {"requested": precision}
    precision = precision if isinstance(precision, dict) else {}
    memory = summary.get("memory") if isinstance(summary.get("memory"), dict) else {}
    status = summary.get("status")
    error = unreadable or _error_line(summary)
    if not isinstance(status, str):
        status = "failed" if unreadable else "unknown"
    steps_run = _integer(summary.get("steps"))
    planned = _integer(_dig(config, "trainer", "max_steps"))
    return Run(
        folder=folder,
        status=status,
        problem=_text(summary.get("problem")) or _target_name(_dig(config, "problem")) or "?",
        model=_text(summary.get("model")) or _target_name(_dig(config, "model")) or "?",
        precision=_text(precision.get("requested"))
        or _text(_dig(config, "precision", "name"))
        or "?",
        seed=_integer(summary.get("seed", _dig(config, "seed"))),
        steps=planned if planned is not None else steps_run,
        steps_run=steps_run,
        l2={k: x for k, v in _mapping(summary.get("l2")).items() if (x := _number(v)) is not None},
        step_ms=_number(summary.get("step_ms")),
        peak_rss_mb=_number(memory.get("peak_rss_mb")),
        cuda_max_allocated_mb=_number(memory.get("cuda_max_allocated_mb")),
        git_commit=_text(summary.get("git_commit")),
        device=_text(summary.get("device")),
        torch=_text(summary.get("torch")),
        error=error,
        skipped_steps=_integer(precision.get("skipped_steps")),
        overrides=tuple(str(o) for o in overrides) if isinstance(overrides, list) else None,
        in_sweep=any((p / "multirun.yaml").exists() for p in folder.parents[:2]),
        spectral=spectral_label(config, summary.get("spectral")),
        strategy=strategy_label(summary),
    )


def strategy_label(summary: dict[str, Any]) -> str | None:
    """The training strategies a run used beyond the defaults, as its summary recorded them:
    loss weighting other than fixed, adaptive or resampled points, hard constraints, periodic
    inputs ("softadapt + rar"). A sweep over `weighting=` or `sampling.adaptive=` then gives
    one row per strategy instead of averaging them into one. None: all defaults."""
    parts = []
    weighting = _mapping(summary.get("weighting"))
    if (method := _text(weighting.get("method"))) not in (None, "fixed"):
        parts.append(method)
    sampling = _mapping(summary.get("sampling"))
    if (adaptive := _text(sampling.get("method"))) is not None:
        parts.append(adaptive)
    if (every := _integer(sampling.get("resample_every"))) is not None:
        parts.append(f"resample_every={every}")
    constraints = _mapping(summary.get("constraints"))
    if constraints.get("hard_constraints") is True:
        parts.append("hard constraints")
    if constraints.get("periodic_inputs"):
        parts.append("periodic inputs")
    return " + ".join(parts) or None


def spectral_label(config: Any, recorded: Any) -> str | None:
    """A spectral model's setting as asked for: `model.spectral_precision` (+ `+tanh` with the
    stabilizer), and the schedule's spectral switches with the step they come at, e.g.
    "half+tanh → mixed@80 → full@95". From the run's config; a run without one falls back
    on the mode its summary recorded (`spectral.spectral_precision`, the mode at its end).
    None for a model without spectral layers."""
    mode = _dig(config, "model", "spectral_precision")
    if not isinstance(mode, str):
        if not isinstance(recorded, dict) or not isinstance(
            recorded.get("spectral_precision"), str
        ):
            return None
        return str(recorded["spectral_precision"])
    label = mode + ("+tanh" if _dig(config, "model", "stabilizer") == "tanh" else "")
    schedule = _resolved(config, "precision", "schedule")
    switches = [
        f"{entry['spectral_precision']}@{_step_text(entry.get('step'))}"
        for entry in (schedule if isinstance(schedule, list) else [])
        if isinstance(entry, dict) and entry.get("spectral_precision")
    ]
    return " → ".join([label, *switches])


def read_loss_curve(folder: Path, column: str = "train/loss") -> list[tuple[int, float]]:
    """(step, value) pairs of one metrics.csv column; empty when there is no such file or column.

    Lightning's CSV logger writes training and validation rows separately, so rows without the
    column are skipped; non-finite values are dropped (they cannot be drawn on a log axis, and a
    diverged run's last finite losses are what a reader wants to see).
    """
    path = folder / "metrics.csv"
    if not path.exists():
        return []
    curve = []
    try:
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                step, value = _integer(row.get("step")), _number(row.get(column))
                if step is not None and value is not None:
                    curve.append((step, value))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    return curve


def _read_json(path: Path) -> tuple[dict[str, Any], str | None]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return {}, f"unreadable {SUMMARY}: {type(exc).__name__}: {exc}"
    if not isinstance(data, dict):
        return {}, f"unreadable {SUMMARY}: not a JSON object"
    return data, None


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) if path.exists() else None
    except (OSError, yaml.YAMLError):
        return None


def _error_line(summary: dict[str, Any]) -> str | None:
    """The one line that says why a run failed: its `error`, else its traceback's last line."""
    for key in ("error", "traceback"):
        text = summary.get(key)
        if isinstance(text, list):  # older summaries (scripts/precision_study.py): stderr lines
            text = "\n".join(str(t) for t in text)
        if isinstance(text, str) and text.strip():
            lines = [line for line in text.strip().splitlines() if line.strip()]
            return lines[0] if key == "error" else lines[-1]
    return None


def _step_text(value: Any) -> str:
    step = _integer(value)
    return "?" if step is None else str(step)


def _resolved(config: Any, *keys: str) -> Any:
    """`_dig`, with interpolations resolved: Hydra saves the config unresolved, and a schedule
    written as `${int_fraction:${trainer.max_steps},0.8}` should read as its step. None when
    it cannot be resolved (a resolver of another version, a missing key)."""
    value = _dig(config, *keys)
    if "${" not in str(value):
        return value
    from omegaconf import OmegaConf

    from mpsciml.config import register_resolvers

    try:
        register_resolvers()
        node = OmegaConf.select(OmegaConf.create(config), ".".join(keys))
        return OmegaConf.to_container(node, resolve=True) if node is not None else None
    except Exception:  # any OmegaConf error: the report goes on without that detail
        return None


def _dig(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _target_name(node: Any) -> str | None:
    target = _dig(node, "_target_")
    return target.rsplit(".", 1)[-1] if isinstance(target, str) else None


def _mapping(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return str(value) if isinstance(value, str | int) and str(value) else None


def _number(value: Any) -> float | None:
    """A finite float, or None: missing, empty, non-numeric, NaN and inf are all 'no value'."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _integer(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None
