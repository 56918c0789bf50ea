"""Tables of the distributed benchmark (markdown, as printed and pasted into the README)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MB = 1e6
#: the scaling rows' comm values that are not an all-reduce precision (distributed_bench's
#: NO_DDP and INDEPENDENT), as the case labels and tables name them
COMM_NAMES = {
    "none": "no DDP",
    "independent": "no DDP, independent runs at once",
    "block": "fp32, blocking waits",
}


def _f(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _kb(value: float | None) -> float | None:
    return None if value is None else value / 1e3


def scaling_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| grid | processes | global batch | per process | comm | ms/step (median) | IQR ms "
        "| samples/s | all-reduced MB/step/rank | sync-BN kB/step | sync-BN exchanges ms/step "
        "| steps |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per = r["batch"] / r["processes"]
        grad = r.get("allreduce_bytes_per_step")
        lines.append(
            f"| {r['grid']}x{r['grid']} | {r['processes']} | {r['batch']} | {per:g} "
            f"| {COMM_NAMES.get(r['comm'], r['comm'])} "
            f"| {r['median_ms']:.0f} | {r['iqr_ms']:.0f} | {r['samples_per_s']:.2f} "
            f"| {_f(None if grad is None else grad / MB, '.3f')} "
            f"| {_f(_kb(r['batchnorm_sync_bytes_per_step']), '.1f')} "
            f"| {_f(r.get('batchnorm_exchange_ms_per_step'), '.1f')} | {r['steps']} |"
        )
    return "\n".join(lines)


def efficiency_table(entries: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| grid | processes | weak efficiency | weak (paired by round) | weak vs 1 process "
        "without DDP | independent runs vs 1 (the machine's ceiling) | weak vs independent runs "
        "| strong speedup | strong efficiency | strong (paired by round) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['grid']}x{e['grid']} | {e['processes']} | {_f(e.get('weak_efficiency'), '.2f')} "
            f"| {_f(e.get('weak_efficiency_paired'), '.2f')} "
            f"| {_f(e.get('weak_efficiency_vs_no_ddp'), '.2f')} "
            f"| {_f(e.get('independent_efficiency'), '.2f')} "
            f"| {_f(e.get('weak_efficiency_vs_independent'), '.2f')} "
            f"| {_f(e.get('strong_speedup'), '.2f')} | {_f(e.get('strong_efficiency'), '.2f')} "
            f"| {_f(e.get('strong_efficiency_paired'), '.2f')} |"
        )
    return "\n".join(lines)


def wait_table(rows: Sequence[dict[str, Any]], entries: Sequence[dict[str, Any]]) -> str:
    """Polled (the default) against blocking waits in the exchanges: the same weak-scaling runs
    with `trainer.collective_wait=poll` and `block` (distributed_bench's `block` rows)."""
    lines = [
        "| grid | processes | ms/step polled | ms/step blocking | sync-BN exchanges ms/step "
        "polled | blocking | blocking / polled time | (paired by round) | weak efficiency "
        "polled | blocking |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        if "poll_gain" not in e:
            continue
        weak = (e["grid"], e["processes"], e["batch_per_process"] * e["processes"])
        polled, blocking = (
            next(r for r in rows if (r["grid"], r["processes"], r["batch"], r["comm"]) == key)
            for key in ((*weak, "fp32"), (*weak, "block"))
        )
        lines.append(
            f"| {e['grid']}x{e['grid']} | {e['processes']} | {polled['median_ms']:.0f} "
            f"| {blocking['median_ms']:.0f} "
            f"| {_f(polled.get('batchnorm_exchange_ms_per_step'), '.1f')} "
            f"| {_f(blocking.get('batchnorm_exchange_ms_per_step'), '.1f')} "
            f"| {e['poll_gain']:.2f} | {_f(e.get('poll_gain_paired'), '.2f')} "
            f"| {_f(e.get('weak_efficiency'), '.2f')} "
            f"| {_f(e.get('weak_efficiency_blocking'), '.2f')} |"
        )
    return "\n".join(lines)


def comm_table(rows: Sequence[dict[str, Any]]) -> str:
    """Compressed all-reduce against fp32 at the same grid, processes and batch."""
    lines = [
        "| grid | processes | comm | all-reduced MB/step/rank | bytes x fp32 | ms/step "
        "| time x fp32 | loss after the steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [r for r in rows if r["comm"] not in COMM_NAMES]  # runs without an all-reduce
    for r in rows:
        if r["processes"] < 2:
            continue
        base = next(
            (
                b
                for b in rows
                if b["comm"] == "fp32"
                and (b["grid"], b["processes"], b["batch"])
                == (r["grid"], r["processes"], r["batch"])
            ),
            None,
        )
        if base is None or not any(
            o["comm"] != "fp32"
            and (o["grid"], o["processes"], o["batch"]) == (r["grid"], r["processes"], r["batch"])
            for o in rows
        ):
            continue
        mine, theirs = r.get("allreduce_bytes_per_step"), base.get("allreduce_bytes_per_step")
        lines.append(
            f"| {r['grid']}x{r['grid']} | {r['processes']} | {r['comm']} "
            f"| {_f(None if mine is None else mine / MB, '.3f')} "
            f"| {_f(mine / theirs if mine and theirs else None, '.2f')} | {r['median_ms']:.0f} "
            f"| {r['median_ms'] / base['median_ms']:.2f} | {r['last_loss']:.6g} |"
        )
    return "\n".join(lines)


def race_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| processes | target (Adam's final loss) | Adam: steps, s to target | Adam rel. L2 "
        "| Adam -> L-BFGS: reached | s to target | L-BFGS steps | rel. L2 | time x Adam |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['processes']} | {r['target_loss']:.6g} "
            f"| {r['adam_steps']}, {_f(r['adam_seconds_to_target'], '.1f')} "
            f"| {_f(r['adam_rel_l2'].get('u'), '.3g')} "
            f"| {'yes' if r['route_reached'] else 'no (' + str(r['route_stopped']) + ')'} "
            f"| {_f(r['route_seconds_to_target'], '.1f')} | {r['route_lbfgs_steps']} "
            f"| {_f(r['route_rel_l2'].get('u'), '.3g')} | {_f(r.get('time_ratio'), '.2f')} |"
        )
    return "\n".join(lines)


def precision_table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| precision | ms/step (median) | IQR ms | time x fp32 | saved for backward MiB "
        "| saved x fp32 | loss (first step) | loss (last) | rel. L2 u vs FV reference |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['name']} | failed: {r['error']} ||||||||")
            continue
        saved = None if r.get("saved_bytes") is None else r["saved_bytes"] / 2**20
        l2 = (r.get("rel_l2") or {}).get("u")
        lines.append(
            f"| {r['name']} | {_f(r.get('median_ms'), '.1f')} | {_f(r.get('iqr_ms'), '.1f')} "
            f"| {_f(r.get('time_vs_fp32'), '.2f')} | {_f(saved, '.2f')} "
            f"| {_f(r.get('saved_vs_fp32'), '.2f')} | {_f(r.get('first_loss'), '.5g')} "
            f"| {_f(r.get('last_loss'), '.5g')} | {_f(l2, '.3g')} |"
        )
    return "\n".join(lines)
