"""One way to derive random streams: numpy's `SeedSequence`, keyed by what the stream is for.

Every random draw of a run (collocation points, the functions of a step, the points sampled per
function, datasets) comes from `seed_stream(seed, *keys)`, e.g. `seed_stream(seed, "conditions",
step)` or `seed_stream(data_seed, "test_functions")`. Offsets such as `seed + 1_000_003 * step`
were the alternative: streams of different purposes can meet (seed 1 at step 0 is seed 0 at
a later offset), and every file invented its own constant. A SeedSequence with a spawn key per
purpose gives streams that are independent by construction and identical on every machine.

The keys are turned into the spawn key without Python's `hash()` (randomised per process):
integers stand for themselves and strings for a fixed digest of their UTF-8 bytes, so the same
(seed, keys) gives the same numbers in any process, on any rank of any world size. A
`seed_stream(seed, 3)` is the fourth child of `SeedSequence(seed).spawn(...)`, the convention
the dataset builders in `mpsciml.data` already follow.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import torch

#: a root seed: a non-negative integer, or a stream already derived from one
Seed = int | np.random.SeedSequence
#: what a stream is for: a name ("conditions") or an index (a step, a term, a face)
Key = int | str

_INT_KEY_LIMIT = 1 << 63  # int keys below this; string keys map above 2^64, so none can collide
_STRING_KEY_BASE = 1 << 64


def seed_stream(seed: Seed, *keys: Key) -> np.random.SeedSequence:
    """The stream of `seed` for the purpose named by `keys` (a child of `seed` when it is a
    stream already, so derived streams can be derived further)."""
    words = tuple(_key_word(key) for key in keys)
    if isinstance(seed, np.random.SeedSequence):
        return np.random.SeedSequence(
            seed.entropy, spawn_key=(*seed.spawn_key, *words), pool_size=seed.pool_size
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed={seed!r} must be a non-negative integer")
    return np.random.SeedSequence(int(seed), spawn_key=words)


def int_seed(seed: Seed, *keys: Key) -> int:
    """The stream as one integer below 2^63: for APIs that take an int seed (torch's
    `manual_seed`, `SobolEngine(seed=)`, scipy's qmc engines, a dataset's cache key)."""
    state = seed_stream(seed, *keys).generate_state(1, np.uint64)[0]
    return int(state) >> 1


def torch_generator(seed: Seed, *keys: Key, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded from the stream (CPU by default, where all our data are drawn)."""
    return torch.Generator(device=device).manual_seed(int_seed(seed, *keys))


def numpy_generator(seed: Seed, *keys: Key) -> np.random.Generator:
    """A numpy Generator on the stream itself (PCG64 seeded by the SeedSequence)."""
    return np.random.default_rng(seed_stream(seed, *keys))


def _key_word(key: Key) -> int:
    if isinstance(key, str):
        return _string_word(key)
    if isinstance(key, bool) or not isinstance(key, int | np.integer):
        raise TypeError(f"seed key {key!r} must be an int or a str, not {type(key).__name__}")
    if not 0 <= key < _INT_KEY_LIMIT:
        raise ValueError(f"seed key {key} must be in [0, 2^63)")
    return int(key)


@lru_cache(maxsize=256)
def _string_word(key: str) -> int:
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return _STRING_KEY_BASE + int.from_bytes(digest, "little")
