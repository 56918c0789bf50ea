"""Entry point: `python train.py [group=option ...] [key=value ...]`; see README and conf/."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from mpsciml.config import ConfigError, register_resolvers
from mpsciml.train import run

register_resolvers()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = run(cfg)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    l2 = summary.get("l2") or {}
    fields = ", ".join(f"{name} {error:.3e}" for name, error in l2.items())
    print(
        f"{summary['status']}: relative L2 {fields} | {summary['precision'].get('requested')} "
        f"| {summary.get('steps')} steps, {summary.get('step_ms') or float('nan'):.2f} ms/step "
        f"| {summary['output_dir']}"
    )
    return sum(l2.values()) / len(l2) if l2 else None


if __name__ == "__main__":
    main()
