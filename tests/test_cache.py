"""The on-disk array cache: hits, misses, invalidation, and atomic writes (a killed writer leaves
nothing a later run trusts)."""

import signal
import textwrap
from pathlib import Path

import numpy as np
import pytest
from data_reference import run_python

from rnnjax.data import cache

KEY = {"dataset": "toy", "num_words": 10, "source": ["/data", [["a", 3, 7]]]}


def builder(value: int, calls: list):
    def build():
        calls.append(value)
        return {
            "x": np.arange(5, dtype=np.int32) * value,
            "words": cache.strings_to_array(["é", "b"]),
        }

    return build


def test_miss_then_hit(tmp_path):
    calls = []
    first = cache.cached("toy", KEY, builder(2, calls), tmp_path)
    second = cache.cached("toy", KEY, builder(3, calls), tmp_path)
    assert calls == [2]
    np.testing.assert_array_equal(second["x"], first["x"])
    assert second["x"].dtype == np.int32
    assert cache.strings_from_array(second["words"]) == ("é", "b")
    assert [p.name for p in tmp_path.iterdir()] == [cache.entry_path(tmp_path, "toy", KEY).name]


@pytest.mark.parametrize(
    "change",
    [{"num_words": 11}, {"num_words": None}, {"source": ["/data", [["a", 3, 8]]]}, {"extra": 1}],
)
def test_any_key_change_is_a_miss(tmp_path, change):
    calls = []
    cache.cached("toy", KEY, builder(2, calls), tmp_path)
    out = cache.cached("toy", {**KEY, **change}, builder(3, calls), tmp_path)
    assert calls == [2, 3]
    np.testing.assert_array_equal(out["x"], np.arange(5) * 3)
    assert len(list(tmp_path.iterdir())) == 2


def test_key_order_does_not_matter_and_format_version_does(tmp_path, monkeypatch):
    calls = []
    cache.cached("toy", KEY, builder(2, calls), tmp_path)
    cache.cached("toy", dict(reversed(list(KEY.items()))), builder(3, calls), tmp_path)
    assert calls == [2]
    monkeypatch.setattr(cache, "FORMAT_VERSION", cache.FORMAT_VERSION + 1)
    cache.cached("toy", KEY, builder(4, calls), tmp_path)
    assert calls == [2, 4]


def test_entry_under_another_key_is_a_miss(tmp_path):
    path = cache.entry_path(tmp_path, "toy", KEY)
    cache.write(path, {"something": "else"}, {"x": np.zeros(1)})
    assert cache.read(path, KEY) is None
    calls = []
    cache.cached("toy", KEY, builder(5, calls), tmp_path)
    assert calls == [5] and cache.read(path, KEY) is not None


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 truncated zip", b"not an npz at all"])
def test_damaged_entry_is_rebuilt(tmp_path, damage):
    path = cache.entry_path(tmp_path, "toy", KEY)
    cache.cached("toy", KEY, builder(2, []), tmp_path)
    full = path.read_bytes()
    path.write_bytes(damage or full[: len(full) // 2])
    calls = []
    out = cache.cached("toy", KEY, builder(7, calls), tmp_path)
    assert calls == [7]
    np.testing.assert_array_equal(out["x"], np.arange(5) * 7)
    np.testing.assert_array_equal(cache.read(path, KEY)["x"], np.arange(5) * 7)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def explode(file, **arrays):
        file.write(b"PK\x03\x04 half an entry")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", explode)
    with pytest.warns(
        UserWarning, match=r"cannot write the data cache .*\(disk full\); continuing"
    ):
        arrays = cache.cached("toy", KEY, builder(2, []), tmp_path)
    assert list(arrays) and list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_only_an_untrusted_temporary(tmp_path):
    """A child process is SIGKILLed in the middle of writing an entry; the next run misses."""
    child = textwrap.dedent(
        f"""
        import os, signal
        import numpy as np
        from rnnjax.data import cache

        def savez(file, **arrays):
            file.write(b"PK\\x03\\x04" + b"0" * 4096)
            file.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        np.savez = savez
        cache.cached("toy", {KEY!r}, lambda: {{"x": np.arange(5)}}, {str(tmp_path)!r})
        """
    )
    result = run_python(child)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    leftovers = list(tmp_path.iterdir())
    assert (
        len(leftovers) == 1 and leftovers[0].name.startswith(".") and leftovers[0].suffix == ".tmp"
    )
    calls = []
    out = cache.cached("toy", KEY, builder(3, calls), tmp_path)
    assert calls == [3]
    np.testing.assert_array_equal(out["x"], np.arange(5) * 3)


def test_default_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.default_dir() == tmp_path / "mine"
    monkeypatch.delenv("RNNJAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_dir() == tmp_path / "xdg" / "rnnjax"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_dir() == Path.home() / ".cache" / "rnnjax"


def test_cached_creates_the_directory_and_uses_default(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNJAX_CACHE_DIR", str(tmp_path / "a" / "b"))
    cache.cached("toy", KEY, builder(1, []), None)
    assert cache.entry_path(tmp_path / "a" / "b", "toy", KEY).is_file()
