"""One training run: compose -> fit -> evaluate against the reference -> summary and plots.

Everything a run leaves is written here, also when it fails, so a sweep can always be reported:
the summary is written in a `finally`, and the W&B run is always finished, otherwise the next
Hydra job of a multirun would log into the same W&B run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from mpsciml.callbacks.interruption import RunInterrupted, SignalGuard
from mpsciml.callbacks.precision_schedule import (
    PrecisionSchedule,
    check_spectral_schedule,
    parse_schedule,
    spectral_model,
)
from mpsciml.compose import build
from mpsciml.config import ConfigError, is_multirun, resume_checkpoint
from mpsciml.distributed.environment import first_process
from mpsciml.distributed.launch import JobLauncher, abort_process, finish_job
from mpsciml.modules.base import SciMLModule
from mpsciml.plots import plot_losses
from mpsciml.precision.auto_probe import continue_auto_choice
from mpsciml.precision.plugin import SciMLPrecision
from mpsciml.precision.registry import resolve_device
from mpsciml.summary import environment_facts, peak_memory, read_summary, write_summary
from mpsciml.sweep import check_objective
from mpsciml.threads import choose_threads
from mpsciml.wandb_logger import WandbLogger as ArtifactWandbLogger
from mpsciml.wandb_logger import offline_if_unreachable

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train and evaluate one configuration; returns the summary that was written to disk.

    Under DDP every process trains; only global rank 0 evaluates and writes (summary.json,
    plots, the W&B run); the others return `{"status": "ok", "rank": <rank>}` and write nothing.
    """
    out_dir = Path(cfg.paths.output_dir)
    started = time.perf_counter()
    threads = cfg.get("threads")
    if isinstance(threads, int) and threads > 0:  # else validate() names the bad value
        torch.set_num_threads(threads)  # already for the data generation inside build()
    if is_multirun() and os.environ.pop("WANDB_RUN_ID", None):
        log.warning("WANDB_RUN_ID is ignored in a multirun: every job gets a W&B run of its own")
    summary: dict[str, Any] = {
        "status": "failed",
        "problem": cfg.problem._target_.rsplit(".", 1)[-1],
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "precision": {"requested": cfg.precision.name},
        "seed": cfg.seed,
        "output_dir": str(out_dir),
        **environment_facts(),
    }
    parts: dict[str, Any] = {"loggers": []}
    overrides = summary.get("overrides")
    in_place = None if cfg.get("resume") else interrupted_in_place(out_dir, overrides)
    earlier_auto = continue_auto_choice(cfg, read_summary(out_dir)) if in_place else None
    guard = SignalGuard().claim()  # SIGTERM/SIGUSR1/SIGINT: checkpoint, status interrupted
    module = trainer = None
    writes = first_process()  # until the trainer knows the global rank
    try:
        offline_if_unreachable(cfg)  # W&B online without network: offline, or one line
        module, trainer, parts = build(cfg)
        if earlier_auto is not None:  # the interrupted run's probe chose; this one continues it
            parts["auto_precision"] = earlier_auto
        summary["precision"].update(parts.get("auto_precision") or {})  # a failed run keeps it
        plan = parts["distributed"]
        summary["distributed"] = plan.as_dict()
        writes = trainer.global_rank == 0
        watch_children(trainer, summary, out_dir)
        check_schedule_fits(cfg, module)
        used, why = choose_threads(
            threads,
            module.model,
            resolve_device(cfg.trainer.accelerator),
            processes=plan.processes_per_node,
            cores=plan.cpu_cores,
        )
        torch.set_num_threads(used)
        summary.update(cpu_threads=used, cpu_threads_why=why)
        summary["malloc"] = parts["malloc"]
        summary["derivatives"] = derivative_facts(module)
        fields = getattr(module, "output_names", None)
        check_objective(cfg.get("objective", "l2"), fields)
        # which keys of summary["l2"] are the fields' plain relative L2 errors (a grid run adds
        # h1_* and zero_shot_* next to them); the sweep objective `l2` averages only these
        summary["fields"] = list(fields) if fields is not None else None
        for logger in parts["loggers"]:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        fit_started = time.perf_counter()
        checkpoint = resume_checkpoint(cfg.get("resume")) or in_place
        summary["resumed_from"] = checkpoint
        trainer.fit(module, datamodule=parts["datamodule"], ckpt_path=checkpoint)
        summary["train_seconds"] = round(time.perf_counter() - fit_started, 3)
        summary["distributed"] = plan.as_dict()
        if not writes:
            return {"status": "ok", "rank": trainer.global_rank, "output_dir": str(out_dir)}
        summary.update(evaluate(cfg, module, trainer, parts, out_dir))
    except Exception as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        if (failure := child_failure(trainer)) is not None:  # the cause, not the peer's echo
            summary["error"] = f"DDP: {failure}; here: {summary['error']}"
        if not isinstance(exc, ConfigError):
            summary["traceback"] = traceback.format_exc()
        raise
    except BaseException as exc:  # a signal, Ctrl+C, or sys.exit from a handler
        summary.update(interruption_facts(guard.stopped, exc, out_dir))
        raise
    finally:
        guard.release()
        # the children this process started have exited, or are killed if this one failed
        finish_job(trainer, failed=sys.exc_info()[1] is not None)
        if writes:  # under DDP global rank 0 only
            write_results(summary, module, trainer, parts, out_dir, started)
    return summary


def write_results(
    summary: dict[str, Any],
    module: SciMLModule | None,
    trainer: pl.Trainer | None,
    parts: dict[str, Any],
    out_dir: Path,
    started: float,
) -> None:
    """What every run leaves, also a failed one: summary.json, and the W&B run finished."""
    if module is not None and (spectral := spectral_facts(module, trainer)) is not None:
        summary["spectral"] = spectral
    if callable(compile_facts := getattr(module, "compile_facts", None)):  # compile=true (H1)
        summary["compile"] = compile_facts()
    if module is not None:  # loss weighting, adaptive points, unknowns: what each reports
        summary.update(module.summary_facts())
    summary["wall_seconds"] = round(time.perf_counter() - started, 3)
    summary["memory"] = peak_memory()
    summary["wandb"] = wandb_facts(parts["loggers"], out_dir)
    write_summary(out_dir / "summary.json", summary)
    finish_wandb(parts["loggers"], summary)


def watch_children(trainer: pl.Trainer, summary: dict[str, Any], out_dir: Path) -> None:
    """If a DDP child fails and this process stays blocked in a collective, the launcher ends
    it; the summary says so first (`distributed.launch.ChildObserver`)."""
    launcher = getattr(trainer.strategy, "launcher", None)
    if isinstance(launcher, JobLauncher):

        def abort(reason: str) -> None:
            write_summary(out_dir / "summary.json", {**summary, "error": f"DDP: {reason}"})
            abort_process(reason)

        launcher.on_abort = abort


def child_failure(trainer: pl.Trainer | None) -> str | None:
    """Which DDP child failed, if one did (this process then only sees its peer vanish)."""
    launcher = getattr(getattr(trainer, "strategy", None), "launcher", None)
    return launcher.child_failure() if isinstance(launcher, JobLauncher) else None


def interrupted_in_place(out_dir: Path, overrides: list[str] | None) -> str | None:
    """The checkpoint of an interrupted run of the same overrides in this very folder, which
    this run continues: a SLURM job requeued after preemption, or a sweep run again into its
    folder, lands in the same job folder. Its metrics.csv is kept as metrics-until-step<N>.csv
    (the CSV logger would delete it)."""
    checkpoint = out_dir / "checkpoints" / "last.ckpt"
    try:
        previous = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if previous.get("status") != "interrupted" or previous.get("overrides") != overrides:
        return None
    if not checkpoint.is_file():
        return None
    step = (previous.get("interrupted") or {}).get("step")
    if not first_process():  # another DDP process: the same checkpoint, rank 0 keeps the files
        return str(checkpoint)
    if (metrics := out_dir / "metrics.csv").is_file():
        metrics.rename(out_dir / (f"metrics-until-step{step}.csv" if step else "metrics-old.csv"))
    log.warning("continuing the run interrupted at step %s in %s", step, out_dir)
    return str(checkpoint)


def interruption_facts(
    stopped: RunInterrupted | None, exc: BaseException, out_dir: Path
) -> dict[str, Any]:
    """`status: interrupted`, by which signal, at which step, and the checkpoint `resume=<run
    folder>` continues from (the one written at the signal, else the last periodic one)."""
    if stopped is None and isinstance(exc, KeyboardInterrupt):
        stopped = RunInterrupted(signal.SIGINT)
    log.warning(
        "interrupted%s; resume=%s continues it",
        f" by {stopped}" if stopped else f" ({type(exc).__name__})",
        out_dir,
    )
    return {
        "status": "interrupted",
        "interrupted": {
            "signal": stopped.signal if stopped else None,
            "step": stopped.step if stopped else None,
        },
        "error": None,
        **last_checkpoint(out_dir),
    }


def evaluate(
    cfg: DictConfig, module: SciMLModule, trainer: pl.Trainer, parts: dict[str, Any], out_dir: Path
) -> dict[str, Any]:
    """Final errors against the reference, losses, timings, precision facts and plots."""
    prediction = module.predict_evaluation()
    errors = module.evaluation_errors(prediction)
    losses = {name: float(value) for name, value in module.last_terms.items()}
    finite = all(math.isfinite(v) for v in [*errors.values(), *losses.values()])
    plots = make_plots(cfg, module, prediction, parts, out_dir) if cfg.get("plots", True) else []
    for logger in parts["loggers"]:
        if isinstance(logger, WandbLogger):
            for path in plots:
                logger.log_image(key=f"plots/{path.stem}", images=[str(path)])
    return {
        "status": "ok" if finite and not module.diverged else "diverged",
        "steps": trainer.global_step,
        "l2": errors,
        "final_losses": losses,
        "step_ms": parts["timer"].median_ms(),
        "optimizer_impl": getattr(module, "optimizer_impl", None),  # fused | foreach | for-loop
        "precision": {
            **parts["probe"].report(trainer, module),
            **(parts.get("auto_precision") or {}),
            **parts["monitor"].report(),
            **agreement_facts(parts.get("agreement")),
            **precision_facts(trainer, cfg),
        },
        **last_checkpoint(out_dir),
        "plots": [str(p.relative_to(out_dir)) for p in plots],
    }


def make_plots(
    cfg: DictConfig, module: SciMLModule, prediction: Any, parts: dict[str, Any], out_dir: Path
) -> list[Path]:
    """Fields vs reference, loss curves and precision diagnostics as PNGs under plots/."""
    title = f"{cfg.problem._target_.rsplit('.', 1)[-1]} | {cfg.precision.name} | seed {cfg.seed}"
    plots = module.evaluation_plots(prediction, out_dir / "plots", title)
    loss_plot = plot_losses(out_dir / "metrics.csv", out_dir / "plots" / "losses.png", title)
    precision_plot = parts["monitor"].plot(out_dir / "plots" / "precision.png", title)
    return plots + [p for p in (loss_plot, precision_plot) if p is not None]


def precision_facts(trainer: pl.Trainer, cfg: DictConfig) -> dict[str, Any]:
    """What the precision plugin did over the run: skips and why, switches, final scales."""
    plugin = trainer.precision_plugin
    adam = cfg.optimizer.get("adam")
    facts: dict[str, Any] = {"adam_eps": adam.eps if adam is not None else None}
    if isinstance(plugin, SciMLPrecision):
        facts.update(
            {
                "final_precision": plugin.spec.name,
                "skipped_steps": plugin.skipped_steps,
                "skip_reasons": dict(plugin.skip_reasons),
                "switches": plugin.switches,
                "derivative_seeds": (
                    dict(plugin.derivative_scaler.scales) if plugin.derivative_scaler else None
                ),
            }
        )
    return facts


def agreement_facts(agreement: Any) -> dict[str, Any]:
    """`precision.compare_every`'s measurements (`gradient_agreement`), when it was on."""
    return {} if agreement is None else {"gradient_agreement": agreement.report()}


def check_schedule_fits(cfg: DictConfig, module: SciMLModule) -> None:
    """A schedule's spectral entries against the built model and the device, before training:
    a model without spectral layers, or a mode it cannot run there, is one line and exit 2."""
    schedule = cfg.precision.get("schedule")
    if not schedule:
        return
    try:
        switches = parse_schedule(schedule)
        device = resolve_device(cfg.trainer.accelerator)
        check_spectral_schedule(switches, getattr(module, "model", None), device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def spectral_facts(module: SciMLModule, trainer: pl.Trainer | None) -> dict[str, Any] | None:
    """What the spectral layers of a model with its own spectral precision ran (requested mode,
    and one record per distinct combination of dtypes seen), with the schedule's switches;
    None for a model without spectral layers."""
    model = spectral_model(module)
    if model is None:
        return None
    report = dict(model.spectral_report())
    schedules = [
        c for c in (trainer.callbacks if trainer else []) if isinstance(c, PrecisionSchedule)
    ]
    report["switches"] = [dict(s) for c in schedules for s in c.switches]
    return report


def derivative_facts(module: SciMLModule) -> dict[str, Any] | None:
    """The derivative engine asked for and the one that runs, with the reason if they differ
    (None for a module that takes no input derivatives)."""
    engine = getattr(module, "derivative_engine", None)
    if engine is None:
        return None
    facts: dict[str, Any] = engine.as_dict()
    if engine.used == "taylor" and getattr(module, "laplacian_streams", None):
        facts["laplacian"] = module.laplacian_streams  # summed | apart (`derivatives.carry`)
    return facts


def last_checkpoint(out_dir: Path) -> dict[str, Any]:
    """`checkpoint` (relative path or None) and `checkpoint_step`, the step it holds: for a
    diverged run the last finite state, which can be well before the step the run stopped at."""
    path = out_dir / "checkpoints" / "last.ckpt"
    if not path.exists():
        return {"checkpoint": None, "checkpoint_step": None}
    try:
        step = torch.load(path, map_location="cpu", weights_only=True).get("global_step")
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # damaged: name it anyway
        step = None
    return {"checkpoint": str(path.relative_to(out_dir)), "checkpoint_step": step}


def started_wandb_run(logger: Any) -> Any | None:
    """The W&B run of a WandbLogger if one was started, without starting one (a run that failed
    before logging anything has none). wandb keeps the active run in `wandb.run`, which the
    logger's `experiment` then returns."""
    wandb = sys.modules.get("wandb")
    if not isinstance(logger, WandbLogger) or wandb is None or wandb.run is None:
        return None
    return logger.experiment


def wandb_facts(loggers: list[Any], out_dir: Path) -> dict[str, Any] | None:
    """Which W&B run this was (id, group, folder), so a report or a test can find it."""
    for logger in loggers:
        if (run := started_wandb_run(logger)) is not None:
            run_dir = Path(run.dir).parent  # .../wandb/offline-run-<time>-<id>
            return {
                "id": run.id,
                "group": run.group or None,
                "run_dir": str(run_dir.relative_to(out_dir.resolve()))
                if run_dir.is_relative_to(out_dir.resolve())
                else str(run_dir),
            }
    return None


def finish_wandb(loggers: list[Any], summary: dict[str, Any]) -> None:
    """Put the summary (and with `log_model` the final checkpoint) in the W&B run and finish it,
    whatever happened in the run: an unfinished run would swallow the next multirun job's logs."""
    exit_code = 0 if summary["status"] == "ok" else 1
    for logger in loggers:
        if started_wandb_run(logger) is not None:
            flat = {
                k: v for k, v in summary.items() if isinstance(v, int | float | str) or v is None
            }
            flat.update({f"l2/{k}": v for k, v in summary.get("l2", {}).items()})
            flat.update({f"precision/{k}": v for k, v in summary["precision"].items()})
            logger.experiment.summary.update(flat)
            # the precision and derivative engine that really ran, next to the requested ones
            used = {
                "precision_used": summary["precision"],
                "derivatives_used": summary.get("derivatives"),
            }
            if summary.get("spectral") is not None:  # a model with its own spectral precision
                used["spectral_used"] = summary["spectral"]
            logger.experiment.config.update(used, allow_val_change=True)
            if isinstance(logger, ArtifactWandbLogger) and summary.get("checkpoint"):
                metadata = {k: summary.get(k) for k in ("status", "steps", "l2", "seed")}
                path = Path(summary["output_dir"]) / summary["checkpoint"]
                logger.log_final_checkpoint(path, metadata)
            logger.experiment.finish(exit_code=exit_code)
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:  # opened by anything else in this job
        wandb.finish(exit_code=exit_code)
    os.environ.pop("WANDB_RUN_ID", None)
