#!/usr/bin/env python
"""Generate the default operator-learning datasets into the cache, so no training run waits.

Every dataset is produced by our own generators (no downloads) and keyed by its full
parameter set, so running this twice is a no-op and a training run that asks for the same
parameters loads the same file. Usage:

    python scripts/generate_data.py                 # build what is missing or invalid
    python scripts/generate_data.py --force         # rebuild everything
    python scripts/generate_data.py --data-dir DIR  # instead of $MPSCIML_DATA_DIR / data_cache
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mpsciml.data import advection as adv
from mpsciml.data import antiderivative as ad
from mpsciml.data import diffusion_reaction as dr
from mpsciml.data.cache import cache_path, cached, default_root
from mpsciml.problems.operator import dataset_seed


@dataclass(frozen=True)
class Dataset:
    """One cache entry: what to call it on screen, its cache name, key and builder."""

    label: str
    name: str
    params: dict[str, Any]
    build: Callable[[], dict[str, np.ndarray]]


def _antiderivative(label: str, **kwargs: Any) -> Dataset:
    return Dataset(
        label,
        ad.NAME,
        ad.antiderivative_params(**kwargs),
        lambda: ad.make_antiderivative_data(**kwargs),
    )


def _diffusion_reaction(label: str, **kwargs: Any) -> Dataset:
    return Dataset(
        label,
        dr.NAME,
        dr.diffusion_reaction_params(**kwargs),
        lambda: dr.make_diffusion_reaction_data(**kwargs),
    )


def _advection(label: str, **kwargs: Any) -> Dataset:
    return Dataset(
        label, adv.NAME, adv.advection_params(**kwargs), lambda: adv.make_advection_data(**kwargs)
    )


# the seeds the problems derive from their default data_seed (problems.operator.dataset_seed)
TRAIN_SEED, TEST_SEED = dataset_seed(0, "train"), dataset_seed(0, "test")


def default_datasets() -> list[Dataset]:
    """The datasets the operator problems (conf/problem/) load with their defaults; train
    and test seeds differ, so the test functions are independent draws from the same GRF."""
    return [
        _antiderivative("antiderivative train", n_functions=1000, n_points=100, seed=TRAIN_SEED),
        _antiderivative(
            "antiderivative train, unaligned",
            n_functions=1000,
            n_points=100,
            layout="unaligned",
            seed=TRAIN_SEED,
        ),
        _antiderivative("antiderivative test", n_functions=1000, n_points=100, seed=TEST_SEED),
        _advection("advection train", n_functions=1000, seed=TRAIN_SEED),
        _advection("advection test", n_functions=200, seed=TEST_SEED),
        _diffusion_reaction("diffusion-reaction train", n_functions=1000, seed=TRAIN_SEED),
        _diffusion_reaction("diffusion-reaction test", n_functions=100, seed=TEST_SEED),
    ]


def fetch(ds: Dataset, root: Path, force: bool) -> tuple[dict[str, np.ndarray], bool]:
    """Load or build one dataset; also say whether it had to be built."""
    built = False

    def build() -> dict[str, np.ndarray]:
        nonlocal built
        built = True
        return ds.build()

    return cached(ds.name, ds.params, build, root, force=force), built


def _shapes(arrays: dict[str, np.ndarray]) -> str:
    main = [k for k in ("branch", "trunk", "outputs", "u") if k in arrays]
    return " ".join(f"{k}{tuple(arrays[k].shape)}" for k in main)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even valid cached files")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="cache directory (default: $MPSCIML_DATA_DIR, else data_cache/ at the project root)",
    )
    args = parser.parse_args(argv)
    root = (args.data_dir or default_root()).resolve()
    console = Console(soft_wrap=True)  # one line per dataset, even in a narrow log
    datasets = default_datasets()

    rows = []
    start = time.perf_counter()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("datasets", total=len(datasets))
        for ds in datasets:
            progress.update(task, description=ds.label)
            t0 = time.perf_counter()
            arrays, built = fetch(ds, root, args.force)
            seconds = time.perf_counter() - t0
            path = cache_path(ds.name, ds.params, root)
            size_mb = path.stat().st_size / 2**20
            status = "built" if built else "cached"
            shapes = _shapes(arrays)
            del arrays  # keep only the summary, not ~100 MB of arrays
            rows.append((ds.label, status, path.name, f"{size_mb:.1f}", f"{seconds:.2f}", shapes))
            progress.advance(task)
    total = time.perf_counter() - start

    console.print(f"cache: {root}")
    for label, status, name, size, seconds, shapes in rows:
        console.print(f"  {status:6} {label:32} {name}  {size:>6} MiB  {seconds:>5} s  {shapes}")
    n_built = sum(r[1] == "built" for r in rows)
    console.print(f"{n_built} built, {len(rows) - n_built} loaded from cache, {total:.1f} s total")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
