"""What a synchronised BatchNorm costs on CPU processes: the layer's own work and its exchanges.

    python scripts/bench_sync_batchnorm.py                      # 2 ranks, 2 x 16 x 256 x 256
    python scripts/bench_sync_batchnorm.py --shape 2 16 64 64 --repeats 50 --out /tmp/bn.json

Two spawned gloo ranks (1 thread each, `mpsciml.benchmark.ddp_processes`) measure, in turn:

1. exchanges: a float64 tensor of --numbers values (33: a 16-channel layer's count, means and
   variances) summed over the ranks by `dist.all_reduce` and by `dist.all_gather` (what
   `integrity.sum_over_ranks` does on gloo), the median wall time of --repeats calls, idle;
2. the layer: forward + backward of one BatchNorm on a (--shape) activation per rank, native
   `nn.BatchNorm2d` (each rank's own statistics) against our `AllReduceBatchNorm2d` (the global
   ones, `convert_batchnorm`): median main-thread CPU time (the layer's own arithmetic; waiting
   in an exchange costs none) and wall time (the exchanges and the wait for the other rank too).

Why: DiffNet at depth 4 has 18 BatchNorm layers and each makes two exchanges per step, so on a
machine where gloo is slow for small messages those exchanges, not the bytes, set DDP's cost
(scripts/bench_distributed.py measures the whole step). Prints a table, writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from mpsciml.benchmark.ddp_processes import process_group, spawn

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[2, 16, 256, 256], metavar="N")
    parser.add_argument("--numbers", type=int, default=33, help="values per exchange")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per row")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_sync_batchnorm.json")
    args = parser.parse_args(argv)
    if min(args.shape) < 1 or args.numbers < 1 or args.repeats < 1:
        parser.exit(2, "bench_sync_batchnorm.py: --shape, --numbers and --repeats must be >= 1\n")
    return args


def median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e3, 3)


def time_exchanges(numbers: int, repeats: int) -> dict[str, float]:
    local = torch.ones(numbers, dtype=torch.float64)
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    calls = {
        "all_reduce": lambda: dist.all_reduce(local.clone()),
        "all_gather": lambda: dist.all_gather(parts, local),
    }
    result = {}
    for name, call in calls.items():
        dist.barrier()
        call()  # the first call sets up gloo's pairs
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            call()
            samples.append(time.perf_counter() - started)
        result[name] = median_ms(samples)
    return result


def time_layer(layer: nn.Module, shape: list[int], repeats: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(dist.get_rank())
    x = torch.randn(*shape, generator=generator)
    grad = torch.randn(*shape, generator=generator)
    cpu, wall = [], []
    for index in range(repeats + 2):  # two untimed calls first
        inputs = x.clone().requires_grad_(True)
        dist.barrier()
        started_cpu, started = time.thread_time(), time.perf_counter()
        layer(inputs).backward(grad)
        if index >= 2:
            cpu.append(time.thread_time() - started_cpu)
            wall.append(time.perf_counter() - started)
    return {"cpu_ms": median_ms(cpu), "wall_ms": median_ms(wall)}


def worker(rank: int, world_size: int, folder: str, args: dict[str, Any]) -> dict[str, Any]:
    from mpsciml.distributed.sync_batchnorm import convert_batchnorm

    shape, repeats = args["shape"], args["repeats"]
    channels = shape[1]
    with process_group(folder, 0, rank, world_size, "cpu"):
        return {
            "exchanges_ms": time_exchanges(args["numbers"], repeats),
            "native": time_layer(nn.BatchNorm2d(channels), shape, repeats),
            "synchronised": time_layer(convert_batchnorm(nn.BatchNorm2d(channels)), shape, repeats),
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    payload = {"shape": args.shape, "numbers": args.numbers, "repeats": args.repeats}
    ranks = spawn(worker, 2, payload, threads=1, timeout=600)
    # a step waits for the slower rank
    exchanges = {k: max(r["exchanges_ms"][k] for r in ranks) for k in ranks[0]["exchanges_ms"]}
    layers = {
        name: {k: max(r[name][k] for r in ranks) for k in ranks[0][name]}
        for name in ("native", "synchronised")
    }
    shape = "x".join(map(str, args.shape))
    print(f"2 gloo ranks, 1 thread each, torch {torch.__version__}; medians of {args.repeats}")
    print(f"\n| exchange of {args.numbers} float64 values | ms (slower rank) |\n|---|---|")
    for name, ms in exchanges.items():
        print(f"| {name} | {ms} |")
    print(f"\n| BatchNorm2d, forward + backward, {shape} per rank | CPU ms | wall ms |")
    print("|---|---|---|")
    for name, row in layers.items():
        print(f"| {name} | {row['cpu_ms']} | {row['wall_ms']} |")
    record = {
        "shape": args.shape,
        "numbers": args.numbers,
        "repeats": args.repeats,
        "exchanges_ms": exchanges,
        "layers": layers,
        "ranks": ranks,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
