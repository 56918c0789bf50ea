"""Dataset cache: reuse valid files, rebuild (loudly) stale or damaged ones, write atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mpsciml.data import cache as cache_mod
from mpsciml.data.cache import cache_path, cached, checksum, default_root

PARAMS = {"n": 5, "seed": 0, "version": 1}


class Builder:
    """Counts calls, so a test can tell a cache hit from a rebuild."""

    def __init__(self, scale: float = 1.0) -> None:
        self.calls = 0
        self.scale = scale

    def __call__(self) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"a": self.scale * np.arange(12.0).reshape(3, 4), "b": np.array([1, 2, 3])}


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.suffix != ".npz"]


def test_second_call_loads_without_building(tmp_path: Path) -> None:
    build = Builder()
    first = cached("toy", PARAMS, build, tmp_path)
    second = cached("toy", dict(reversed(PARAMS.items())), build, tmp_path)  # key order irrelevant
    assert build.calls == 1
    assert set(second) == {"a", "b"}
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
        assert first[key].dtype == second[key].dtype
    assert [p.name for p in tmp_path.iterdir()] == [cache_path("toy", PARAMS, tmp_path).name]


def test_changed_params_make_a_new_file(tmp_path: Path) -> None:
    build = Builder()
    cached("toy", PARAMS, build, tmp_path)
    cached("toy", {**PARAMS, "seed": 1}, build, tmp_path)
    cached("toy", {**PARAMS, "version": 2}, build, tmp_path)
    cached("other", PARAMS, build, tmp_path)
    assert build.calls == 4
    assert len(list(tmp_path.glob("*.npz"))) == 4


def test_force_rebuilds(tmp_path: Path) -> None:
    build = Builder()
    cached("toy", PARAMS, build, tmp_path)
    cached("toy", PARAMS, build, tmp_path, force=True)
    assert build.calls == 2


def test_truncated_file_is_regenerated_with_warning(tmp_path: Path) -> None:
    build = Builder()
    cached("toy", PARAMS, build, tmp_path)
    path = cache_path("toy", PARAMS, tmp_path)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.warns(UserWarning, match=path.name):
        again = cached("toy", PARAMS, build, tmp_path)
    assert build.calls == 2
    np.testing.assert_array_equal(again["a"], Builder()()["a"])
    cached("toy", PARAMS, build, tmp_path)  # the rewritten file is valid again
    assert build.calls == 2


def test_empty_file_is_regenerated(tmp_path: Path) -> None:
    build = Builder()
    path = cache_path("toy", PARAMS, tmp_path)
    path.write_bytes(b"")
    with pytest.warns(UserWarning, match="unreadable"):
        cached("toy", PARAMS, build, tmp_path)
    assert build.calls == 1


def _rewrite(path: Path, **changes: np.ndarray) -> None:
    """Rewrite a cache file as a valid zip with some members replaced (a tampered file)."""
    with np.load(path) as npz:
        members = {k: npz[k] for k in npz.files}
    members.update(changes)
    with path.open("wb") as fh:
        np.savez(fh, **members)


def test_wrong_checksum_is_regenerated(tmp_path: Path) -> None:
    build = Builder()
    cached("toy", PARAMS, build, tmp_path)
    path = cache_path("toy", PARAMS, tmp_path)
    _rewrite(path, __checksum__=np.array("0" * 64))
    with pytest.warns(UserWarning, match="checksum"):
        cached("toy", PARAMS, build, tmp_path)
    assert build.calls == 2


def test_altered_data_is_regenerated(tmp_path: Path) -> None:
    build = Builder()
    cached("toy", PARAMS, build, tmp_path)
    path = cache_path("toy", PARAMS, tmp_path)
    _rewrite(path, a=np.zeros((3, 4)))  # stored checksum kept, contents changed
    with pytest.warns(UserWarning, match="checksum"):
        got = cached("toy", PARAMS, build, tmp_path)
    assert build.calls == 2
    assert got["a"][2, 3] == 11.0


def test_file_with_other_params_is_not_used(tmp_path: Path) -> None:
    other = {**PARAMS, "seed": 99}
    cached("toy", other, Builder(scale=-1.0), tmp_path)
    # Simulate a hash collision / hand-copied file: the other dataset under this key's name.
    cache_path("toy", other, tmp_path).rename(cache_path("toy", PARAMS, tmp_path))
    build = Builder()
    with pytest.warns(UserWarning, match="parameters differ"):
        got = cached("toy", PARAMS, build, tmp_path)
    assert build.calls == 1 and got["a"][0, 1] == 1.0


def test_write_is_atomic_and_leaves_no_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached("toy", PARAMS, Builder(), tmp_path)
    assert _leftovers(tmp_path) == []
    good = cache_path("toy", PARAMS, tmp_path).read_bytes()

    def crash(fh, **arrays) -> None:  # dies half-way through writing
        fh.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        cached("toy", PARAMS, Builder(), tmp_path, force=True)
    with pytest.raises(OSError, match="disk full"):
        cached("toy", {**PARAMS, "seed": 5}, Builder(), tmp_path)
    assert _leftovers(tmp_path) == []
    assert cache_path("toy", PARAMS, tmp_path).read_bytes() == good  # old file untouched
    assert not cache_path("toy", {**PARAMS, "seed": 5}, tmp_path).exists()


def test_params_must_carry_seed_and_version(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="version"):
        cached("toy", {"n": 5, "seed": 0}, Builder(), tmp_path)


def test_numpy_scalars_hash_like_python_numbers(tmp_path: Path) -> None:
    as_numpy = {"n": np.int64(5), "seed": np.int32(0), "version": 1}
    assert cache_path("toy", as_numpy, tmp_path) == cache_path("toy", PARAMS, tmp_path)


def test_checksum_sees_dtype_and_shape() -> None:
    a = np.arange(6.0)
    assert checksum({"a": a}) != checksum({"a": a.reshape(2, 3)})
    assert checksum({"a": a}) != checksum({"a": a.astype(np.float32)})


def test_default_root_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPSCIML_DATA_DIR", str(tmp_path / "elsewhere"))
    assert default_root() == tmp_path / "elsewhere"
    monkeypatch.delenv("MPSCIML_DATA_DIR")
    (tmp_path / "proj" / "sub").mkdir(parents=True)
    (tmp_path / "proj" / "pyproject.toml").write_text("")
    monkeypatch.chdir(tmp_path / "proj" / "sub")
    assert default_root() == (tmp_path / "proj" / "data_cache").resolve()
