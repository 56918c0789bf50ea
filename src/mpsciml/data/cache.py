"""On-disk cache for generated datasets: build once per parameter set, never trust a bad file.

A dataset is named by what produced it: `name` plus a sha256 of the canonical JSON of its
parameters (sorted keys; the parameters must carry the seed and the generator's version, so
changing either the randomness or the code makes a new file instead of reusing a stale one).

Each `.npz` stores, next to the arrays, the canonical parameter JSON and a sha256 over every
array's name, dtype, shape and bytes. A file is used only if it opens, its parameters equal the
requested ones (a hash collision or a hand-copied file cannot slip through) and its checksum
matches; otherwise it is rebuilt with a warning naming the file. Files are written to a
temporary file in the same directory and moved into place with os.replace, so a crash or a
concurrent writer leaves either the old file or the complete new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

ENV_VAR = "MPSCIML_DATA_DIR"
_PARAMS_KEY = "__params__"
_CHECKSUM_KEY = "__checksum__"
_REQUIRED = ("seed", "version")

Arrays = dict[str, np.ndarray]


def _jsonable(obj: Any) -> Any:
    """Map numpy scalars/arrays and paths to JSON so equal values hash equally."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cache parameter of type {type(obj).__name__} is not JSON-serialisable")


def canonical_params(params: Mapping[str, Any]) -> str:
    """The exact text that is hashed and stored: sorted keys, no whitespace freedom."""
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ValueError(
            f"cache params must include {list(_REQUIRED)} so a new seed or generator version "
            f"never reuses an old file; missing {missing}"
        )
    return json.dumps(dict(params), sort_keys=True, separators=(",", ":"), default=_jsonable)


def default_root() -> Path:
    """$MPSCIML_DATA_DIR, else data_cache/ at the nearest enclosing project root, else cwd."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "pyproject.toml").is_file() or (folder / ".git").exists():
            return folder / "data_cache"
    return cwd / "data_cache"


def cache_path(name: str, params: Mapping[str, Any], root: Path | None = None) -> Path:
    """Where the dataset for (name, params) lives: <root>/<name>-<first 16 hex of sha256>.npz."""
    if not name or any(c in name for c in "/\\") or name.startswith("."):
        raise ValueError(f"dataset name must be a plain file-name stem, got {name!r}")
    digest = hashlib.sha256(f"{name}\n{canonical_params(params)}".encode()).hexdigest()
    return Path(root if root is not None else default_root()) / f"{name}-{digest[:16]}.npz"


def checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, dtypes, shapes and C-order bytes, in sorted name order."""
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _read(path: Path, params_text: str) -> Arrays:
    """Load and verify a cached file; raise ValueError saying why it cannot be used."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stored = {key: npz[key] for key in npz.files}  # reads (and CRC-checks) every member
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if _PARAMS_KEY not in stored or _CHECKSUM_KEY not in stored:
        raise ValueError("missing the stored parameters or checksum")
    if str(stored.pop(_PARAMS_KEY)) != params_text:
        raise ValueError("stored parameters differ from the requested ones")
    expected = str(stored.pop(_CHECKSUM_KEY))
    if checksum(stored) != expected:
        raise ValueError("checksum mismatch: the arrays are not the ones that were written")
    return stored


def _write_atomic(path: Path, arrays: Mapping[str, np.ndarray], params_text: str) -> None:
    """Write to a temp file beside `path`, fsync, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(arrays)
    payload[_PARAMS_KEY] = np.array(params_text)
    payload[_CHECKSUM_KEY] = np.array(checksum(arrays))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared cache must be readable
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached(
    name: str,
    params: Mapping[str, Any],
    builder: Callable[[], Mapping[str, np.ndarray]],
    root: Path | None = None,
    *,
    force: bool = False,
) -> Arrays:
    """Return the dataset for (name, params), building and storing it if no valid file exists.

    `params` must describe everything `builder` depends on, including "seed" and "version".
    `force=True` rebuilds even when a valid file exists. A file that exists but cannot be used
    is rebuilt with a warning; it is never silently returned.
    """
    params_text = canonical_params(params)
    path = cache_path(name, params, root)
    if path.exists() and not force:
        try:
            return _read(path, params_text)
        except ValueError as why:
            warnings.warn(f"cached dataset {path} is invalid ({why}); regenerating", stacklevel=2)
    arrays = {key: np.asarray(value) for key, value in builder().items()}
    bad = [k for k in arrays if k.startswith("__") or arrays[k].dtype == object]
    if bad:
        raise ValueError(f"builder for {name!r} returned reserved or object-dtype arrays: {bad}")
    _write_atomic(path, arrays, params_text)
    return arrays


def builder_params(
    builder: Callable[..., Any], version: int, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """The cache key of `builder(*args, **kwargs)`: every argument by name, defaults filled in,
    plus the generator's version. Derived from the builder's own signature, so a new argument
    can never be left out of the key."""
    bound = inspect.signature(builder).bind(*args, **kwargs)
    bound.apply_defaults()
    return {**bound.arguments, "version": version}


def grid_dataset_params(n: int, seed: int, resolution: int, params: Any, version: int) -> dict:
    """The cache key of a grid operator set (Darcy, periodic Burgers, NS vorticity): every
    argument, every field of the generator's parameters (a dataclass) and the generator's
    VERSION. One function, so the three keys cannot drift apart or miss a field."""
    return {"n": n, "seed": seed, "resolution": resolution, **asdict(params), "version": version}


def cached_grid_dataset(
    name: str,
    version: int,
    make: Callable[[int, int, int, Any], Mapping[str, np.ndarray]],
    n: int,
    seed: int,
    resolution: int,
    params: Any,
    root: Path | None = None,
    force: bool = False,
) -> Arrays:
    """`make(n, seed, resolution, params)` through the cache (built once per key)."""
    key = grid_dataset_params(n, seed, resolution, params, version)
    return cached(name, key, lambda: make(n, seed, resolution, params), root, force=force)
