#!/usr/bin/env python
"""Generate the default operator-learning datasets into the cache, so no training run waits.

Every dataset is produced by our own generators (no downloads) and keyed by its full
parameter set, so running this twice is a no-op and a training run that asks for the same
parameters loads the same file. Usage:

    python scripts/generate_data.py                 # build what is missing or invalid
    python scripts/generate_data.py --force         # rebuild everything
    python scripts/generate_data.py --data-dir DIR  # instead of $MPSCIML_DATA_DIR / data_cache
    python scripts/generate_data.py --only darcy ns_vorticity   # just these datasets
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mpsciml.data import advection as adv
from mpsciml.data import antiderivative as ad
from mpsciml.data import burgers_periodic as bp
from mpsciml.data import darcy
from mpsciml.data import diffusion_reaction as dr
from mpsciml.data import ns_vorticity as ns
from mpsciml.data.cache import cache_path, cached, default_root
from mpsciml.problems.grid_operator import generator_params
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

CONF_PROBLEMS = Path(__file__).resolve().parents[1] / "conf" / "problem"

# grid problems: conf/problem/<name>.yaml -> (cache name, Params, cache key, builder)
GRID_GENERATORS: dict[str, tuple[str, type, Callable[..., dict], Callable[..., dict]]] = {
    "darcy": (darcy.NAME, darcy.DarcyParams, darcy.darcy_cache_params, darcy.make_darcy_data),
    "burgers_operator": (
        bp.NAME,
        bp.BurgersOperatorParams,
        bp.burgers_cache_params,
        bp.make_burgers_data,
    ),
    "ns_vorticity": (ns.NAME, ns.NSVorticityParams, ns.ns_cache_params, ns.make_ns_data),
}


def _grid(problem: str) -> list[Dataset]:
    """The train, test and zero-shot sets a grid problem loads with its yaml's defaults (sizes,
    resolutions, data_seed, generator keys read from conf/problem/<problem>.yaml, so this list
    cannot drift from what `python train.py problem=<problem>` asks the cache for); none if
    that problem's yaml is absent."""
    path = CONF_PROBLEMS / f"{problem}.yaml"
    if not path.is_file():
        return []
    cfg = OmegaConf.to_container(OmegaConf.load(path).problem, resolve=True)
    name, params_class, key, build = GRID_GENERATORS[problem]
    params = generator_params(params_class, cfg.get("generator"))
    splits = [
        ("train", cfg["n_train"], cfg["resolution"]),
        ("test", cfg["n_test"], cfg["resolution"]),
        ("zero_shot", cfg.get("n_zero_shot", 0), cfg.get("zero_shot_resolution")),
    ]
    out = []
    for split, n, r in splits:
        if not n or r is None:
            continue
        seed = dataset_seed(cfg.get("data_seed", 0), split)
        out.append(
            Dataset(
                f"{problem} {split.replace('_', '-')} {r}",
                name,
                key(n, seed, r, params),
                lambda n=n, seed=seed, r=r: build(n, seed, r, params),
            )
        )
    return out


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
        *_grid("darcy"),
        *_grid("burgers_operator"),
        *_grid("ns_vorticity"),
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
    keys = ("branch", "trunk", "outputs", "u", "coefficient", "solution", "initial", "final")
    main = [k for k in keys if k in arrays]
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
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="build only these datasets (cache names: antiderivative advection "
        "diffusion_reaction darcy burgers_operator ns_vorticity)",
    )
    args = parser.parse_args(argv)
    root = (args.data_dir or default_root()).resolve()
    console = Console(soft_wrap=True)  # one line per dataset, even in a narrow log
    datasets = [d for d in default_datasets() if not args.only or d.name in args.only]

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
