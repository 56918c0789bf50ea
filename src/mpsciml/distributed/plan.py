"""How many processes a run trains on, who starts them, and whether that can run here.

`plan_distributed(cfg, device)` is called by `compose.build` right after `validate(cfg)`, before
the problem, the model or any process exists: a request that cannot run (more CPU processes than
cores, CUDA without a GPU, several nodes with nobody to start them, DDP jobs in parallel joblib
workers) is one line and exit 2 instead of a hang or a traceback minutes later. The plan is what
`summary.json` records under `distributed`, and what `trainer_arguments` turns into Lightning's
strategy, devices and plugins once the model is built.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mpsciml.config import ConfigError, is_multirun
from mpsciml.distributed.collective_wait import DEFAULT_COLLECTIVE_WAIT, check_collective_wait
from mpsciml.distributed.environment import (
    ExternalWorld,
    external_world,
    manual_multi_node,
    slurm_tasks,
    usable_cores,
)
from mpsciml.precision.registry import get_spec

log = logging.getLogger(__name__)

#: trainer keys of ours (conf/trainer/ddp.yaml) that Lightning's Trainer does not take
OUR_TRAINER_KEYS = (
    "sync_batchnorm",
    "comm_precision",
    "collective_wait",
    "progress_bar_refresh_rate",
)
COMM_PRECISIONS = (None, "fp16", "bf16")
#: what a run without trainer=ddp that still gets several processes (srun tasks) uses
DEFAULT_SYNC_BATCHNORM = True


@dataclass
class DistributedPlan:
    """What the run trains on; recorded as summary.json's `distributed`."""

    world_size: int = 1
    nodes: int = 1
    processes_per_node: int = 1
    launcher: str = "none"  # none | ours (train.py starts them) | srun | torchrun | manual
    strategy: str = "single_device"  # single_device | ddp
    backend: str | None = None  # gloo (CPU) | nccl (CUDA)
    sync_batchnorm: bool = False  # what runs; `sync_batchnorm_layer` says how
    sync_batchnorm_layer: str | None = None
    comm_precision: str | None = None
    collective_wait: str = DEFAULT_COLLECTIVE_WAIT  # how gloo processes await our collectives
    cpu_cores: int = field(default_factory=usable_cores)  # for all processes of this node
    notes: list[str] = field(default_factory=list)

    @property
    def distributed(self) -> bool:
        return self.strategy == "ddp"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_processes(devices: Any, device: str) -> int:
    """Processes per node that `trainer.devices` asks for: an integer, a list of GPU indices,
    `auto` (all GPUs; one process on the CPU, as Lightning) or -1 (all GPUs)."""
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return devices
    if isinstance(devices, str) and devices.strip().isdigit() and int(devices) > 0:
        return int(devices)
    if device == "cuda" and (devices in ("auto", -1, "-1")):
        return max(torch.cuda.device_count(), 1)
    if devices == "auto":
        return 1
    if device == "cuda" and isinstance(devices, list | tuple) and devices:
        return len(devices)
    raise ConfigError(
        f"trainer.devices={devices!r} is invalid: an integer > 0 (processes per node), auto"
        + (", -1 or a list of GPU indices" if device == "cuda" else " (one process on the CPU)")
    )


def plan_distributed(cfg: DictConfig, device: str) -> DistributedPlan:
    """The run's processes, checked against this machine and launcher (see the module doc)."""
    trainer = cfg.trainer
    check_gpus(trainer, device)
    requested = trainer.get("strategy", "auto")
    if requested not in ("auto", "ddp", None):
        raise ConfigError(
            f"trainer.strategy={requested!r} is invalid: auto or ddp (trainer=ddp; Lightning's "
            "other strategies re-run the command line in each process, a sweep's too)"
        )
    comm_precision = trainer.get("comm_precision")
    if comm_precision not in COMM_PRECISIONS:
        raise ConfigError(
            f"trainer.comm_precision={comm_precision!r} is invalid: null (gradients all-reduced "
            "in their own precision), fp16 or bf16 (compressed all-reduce)"
        )
    sync_batchnorm = trainer.get("sync_batchnorm", DEFAULT_SYNC_BATCHNORM)
    if not isinstance(sync_batchnorm, bool):
        raise ConfigError(f"trainer.sync_batchnorm={sync_batchnorm!r} is invalid: true or false")
    try:
        wait = check_collective_wait(trainer.get("collective_wait", DEFAULT_COLLECTIVE_WAIT))
    except ValueError as error:
        raise ConfigError(str(error)) from None
    plan = DistributedPlan(
        comm_precision=comm_precision, sync_batchnorm=sync_batchnorm, collective_wait=wait
    )
    world = external_world()
    if world is not None:
        follow_external_world(plan, world, trainer, device)
    else:
        plan.processes_per_node = local_processes(trainer.get("devices", 1), device)
        plan.nodes = check_nodes(trainer.get("num_nodes", 1))
        plan.world_size = plan.nodes * plan.processes_per_node
        plan.launcher = "manual" if plan.nodes > 1 else "ours"
    if requested == "ddp" or plan.world_size > 1:
        plan.strategy, plan.backend = "ddp", "nccl" if device == "cuda" else "gloo"
    else:
        plan.launcher = "none"
    if not plan.distributed:
        plan.sync_batchnorm = False
        return plan
    if device == "cpu" and plan.launcher in ("ours", "manual"):
        check_cpu_processes(plan.processes_per_node, plan.cpu_cores)
    check_launcher(plan)
    check_weight_dtype_stays(cfg)
    if slurm_tasks() == 1 and plan.launcher == "ours" and plan.processes_per_node > 1:
        plan.notes.append("one SLURM task: train.py starts the node's other processes itself")
    return plan


def check_gpus(trainer: DictConfig, device: str) -> None:
    """CUDA asked for (`trainer=gpu`, `trainer.accelerator=gpu|cuda`) on a machine without a
    GPU that torch can use: Lightning would refuse only once the data is generated."""
    if device != "cuda" or torch.cuda.is_available():
        return
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    raise ConfigError(
        f"trainer.accelerator={trainer.get('accelerator')!r} is invalid: no CUDA GPU is visible "
        f"(torch {torch.__version__} is {build}); use trainer=cpu, or run where a GPU is"
    )


def check_nodes(nodes: Any) -> int:
    """trainer.num_nodes > 1 needs someone to start the processes on the other nodes: srun,
    torchrun, or the user with MASTER_ADDR and NODE_RANK on each node. Without any of them the
    first node would wait 30 minutes for processes that never come."""
    if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
        raise ConfigError(f"trainer.num_nodes={nodes!r} is invalid: an integer >= 1")
    if nodes > 1 and not manual_multi_node():
        raise ConfigError(
            f"trainer.num_nodes={nodes} is invalid here: nothing starts the processes of the "
            "other nodes; use hydra/launcher=slurm_ddp (hydra.launcher.nodes), srun or torchrun "
            "(README: Distributed training), or set MASTER_ADDR and NODE_RANK on every node"
        )
    return nodes


def check_cpu_processes(processes: int, cores: int) -> None:
    """On the CPU, at most one process per usable core (os.sched_getaffinity). A process that
    has no core of its own is descheduled inside every all-reduce, so all the others wait for
    it at each step: more processes than cores is always slower than as many as cores."""
    if processes > cores:
        raise ConfigError(
            f"trainer.devices={processes} is invalid: {processes} CPU processes on {cores} usable "
            f"cores (os.sched_getaffinity) would wait for each other at every all-reduce; use at "
            f"most trainer.devices={cores}, or more nodes (hydra/launcher=slurm_ddp)"
        )


def follow_external_world(
    plan: DistributedPlan, world: ExternalWorld, trainer: DictConfig, device: str
) -> None:
    """Take nodes and processes per node from srun/torchrun, saying so when the config asked
    for other numbers (Lightning would refuse the mismatch)."""
    plan.launcher, plan.nodes = world.launcher, world.nodes
    plan.processes_per_node, plan.world_size = world.processes_per_node, world.world_size
    if (per_task := os.environ.get("SLURM_CPUS_PER_TASK", "")).isdigit():
        plan.cpu_cores = int(per_task) * world.processes_per_node
    asked = (trainer.get("num_nodes", 1), trainer.get("devices", 1))
    note = (
        f"{world.launcher} started {world.nodes} node(s) x {world.processes_per_node} "
        f"process(es): trainer.num_nodes={world.nodes} trainer.devices="
        f"{world.processes_per_node} (the config said {asked[0]} x {asked[1]})"
    )
    plan.notes.append(note)
    if world.global_rank == 0:
        log.info(note)
        given = (
            [str(o) for o in HydraConfig.get().overrides.hydra] if HydraConfig.initialized() else []
        )
        if not is_multirun() and not any(o.startswith("hydra.run.dir=") for o in given):
            log.warning(
                "%s started the processes without hydra.run.dir=...: each may claim a folder "
                "of its own; give them one (README: Distributed training)",
                world.launcher,
            )


def check_weight_dtype_stays(cfg: DictConfig) -> None:
    """DDP builds its gradient buckets for the weights' dtype when it wraps the model; a run
    that later casts the weights (fp16/bf16 weights -> fp32 for an L-BFGS phase, a precision
    schedule between weight dtypes) then all-reduces into buckets of the old dtype (measured:
    L-BFGS's line search failed with an IndexError on garbage gradients, one process ran)."""
    name = cfg.precision.name
    weights = get_spec(name).param_dtype
    if cfg.optimizer.get("lbfgs") is not None and get_spec(name).full_dtype != weights:
        raise ConfigError(
            f"precision={name} is invalid with DDP and an L-BFGS phase: L-BFGS switches the "
            f"{str(weights)[6:]} weights to {get_spec(name).full_precision}, which DDP's gradient "
            "buckets cannot follow; use precision=bf16_mixed or mixed (fp32 weights), or "
            "optimizer=adam"
        )
    for index, entry in enumerate(cfg.precision.get("schedule") or []):
        target = entry.get("precision")
        if target is not None and get_spec(target).param_dtype != weights:
            raise ConfigError(
                f"precision.schedule[{index}].precision={target} is invalid with DDP: it casts "
                f"the weights from {name}'s {str(weights)[6:]}, which DDP's gradient buckets "
                "cannot follow; schedule precisions with the same weights (e.g. mixed <-> fp32)"
            )


def check_launcher(plan: DistributedPlan) -> None:
    """Hydra launchers that cannot host a DDP job: joblib runs jobs side by side in worker
    processes, so each job's processes would compete for the same cores and ports."""
    if not HydraConfig.initialized() or not is_multirun():
        return
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    if "joblib" in launcher.lower() and plan.launcher == "ours":
        raise ConfigError(joblib_refusal(plan.world_size))


def joblib_refusal(processes: int) -> str:
    """The one line refusing joblib's parallel jobs of `processes` DDP processes each (also
    said before a sweep starts: `sweep_check.DDPSweepCheck`)."""
    return (
        f"hydra/launcher=joblib is invalid with {processes} DDP processes per job: "
        "parallel jobs would share the cores and ports of each other's processes; use the "
        "default launcher (jobs one after another, each on all its processes) or "
        "hydra/launcher=slurm_ddp"
    )


def trainer_arguments(
    plan: DistributedPlan, model: torch.nn.Module, device: str, devices: Any
) -> dict[str, Any]:
    """What the Trainer gets for the plan, on top of conf/trainer's keys (ours removed): the
    strategy with its communication hook, devices and nodes, and the BatchNorm synchronisation
    (torch's SyncBatchNorm through Lightning on CUDA, our all-reduce LayerSync plugin on the
    CPU, where torch's refuses to run). Records in the plan what it chose."""
    if not plan.distributed:
        if plan.comm_precision is not None:
            plan.notes.append("comm_precision has no effect on one process")
        return {}
    from mpsciml.distributed.launch import SciMLDDPStrategy, cluster_environment_for

    strategy = SciMLDDPStrategy(
        cluster_environment=cluster_environment_for(plan.launcher),
        process_group_backend=plan.backend,
        collective_wait=plan.collective_wait,
        **comm_hook_arguments(plan.comm_precision),
    )
    arguments: dict[str, Any] = {
        "strategy": strategy,
        "devices": devices if isinstance(devices, list) else plan.processes_per_node,
        "num_nodes": plan.nodes,
        "plugins": [],
    }
    if plan.sync_batchnorm and not has_batchnorm(model):
        plan.sync_batchnorm, plan.sync_batchnorm_layer = False, "the model has no BatchNorm"
    elif plan.sync_batchnorm and device == "cuda":
        arguments["sync_batchnorm"], plan.sync_batchnorm_layer = True, "torch.nn.SyncBatchNorm"
    elif plan.sync_batchnorm:
        arguments["plugins"].append(cpu_sync_batchnorm())
        plan.sync_batchnorm_layer = "mpsciml CPUSyncBatchNorm (all-reduce over gloo)"
    return arguments


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def comm_hook_arguments(comm_precision: str | None) -> dict[str, Any]:
    """DDPStrategy's ddp_comm_state/ddp_comm_hook for `trainer.comm_precision` (H4's hooks:
    fp16/bf16 compression of the gradient all-reduce; none for null)."""
    from mpsciml.distributed.comm_hooks import comm_hook

    return comm_hook(comm_precision) or {}


def cpu_sync_batchnorm() -> Any:
    """The LayerSync plugin that synchronises BatchNorm statistics over gloo."""
    from mpsciml.distributed.sync_batchnorm import CPUSyncBatchNorm

    return CPUSyncBatchNorm()


def without_our_keys(trainer: DictConfig) -> DictConfig:
    """conf/trainer's node without the keys Lightning's Trainer does not take."""
    from omegaconf import OmegaConf, open_dict

    copy = OmegaConf.create(OmegaConf.to_container(trainer, resolve=True))
    with open_dict(copy):
        for key in (*OUR_TRAINER_KEYS, "strategy"):
            copy.pop(key, None)
    return copy
