"""An on-disk cache of named numpy arrays, keyed by every parameter that changes them.

An entry is one ``.npz`` file, ``<cache_dir>/<name>-<digest>.npz``, where ``digest`` hashes the
canonical JSON of the key (every parameter, the identity of the data source and
``FORMAT_VERSION``). The key is stored in the entry too and compared on read, so a hash collision
or a renamed file is a miss, not a wrong hit.

Writes are atomic: the arrays go to a hidden temporary file in the same directory, which is
flushed, fsynced and then renamed over the entry with ``os.replace``. A run killed mid-write leaves
at most a ``.<name>-<digest>.npz.<random>.tmp`` file, which no read ever opens; an entry that
exists is complete. An entry that cannot be read (damaged on disk) is a miss and is rebuilt. A
cache directory that cannot be written is skipped, with one warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Bump when what any entry holds changes (its layout, or a fix to how data is encoded or
# tokenized): every older entry becomes a miss.
FORMAT_VERSION = 1

Arrays = dict[str, np.ndarray]
_KEY = "__key__"


def default_dir() -> Path:
    """``$RNNJAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/rnnjax``, else ``~/.cache/rnnjax``."""
    if os.environ.get("RNNJAX_CACHE_DIR"):
        return Path(os.environ["RNNJAX_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "rnnjax"


def entry_path(cache_dir: str | os.PathLike[str] | None, name: str, key: Mapping[str, Any]) -> Path:
    """Where the entry for ``name`` and ``key`` lives (in ``default_dir()`` when ``cache_dir`` is
    None)."""
    digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:20]
    return Path(cache_dir if cache_dir is not None else default_dir()) / f"{name}-{digest}.npz"


def cached(
    name: str,
    key: Mapping[str, Any],
    build: Callable[[], Arrays],
    cache_dir: str | os.PathLike[str] | None = None,
) -> Arrays:
    """The arrays stored under ``name`` and ``key``; on a miss, ``build()`` them and store them.

    Args:
      name: a short prefix for the file name, e.g. "imdb".
      key: JSON-serializable parameters; any change to them is a different entry.
      build: makes the arrays (a dict of array name to array; no object arrays).
      cache_dir: the cache directory; ``default_dir()`` when None. Created if missing.
    """
    path = entry_path(cache_dir, name, key)
    arrays = read(path, key)
    if arrays is None:
        arrays = build()
        store(path, key, arrays)
    return arrays


def store(path: Path, key: Mapping[str, Any], arrays: Arrays) -> None:
    """``write``s the entry where the directory may be written; else warns (once per directory)
    and goes on without it."""
    try:
        if not writable(path.parent):
            raise PermissionError("the directory has no write permission")
        write(path, key, arrays)
    except OSError as error:
        _warn_uncached(path.parent, error)


def writable(directory: Path) -> bool:
    """Whether ``directory`` (or, if missing, its nearest existing parent) may be written: the
    OS allows it and its mode has a write bit — so a directory made read-only stays read-only
    for root too."""
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    return os.access(existing, os.W_OK) and bool(existing.stat().st_mode & 0o222)


_warned: set[Path] = set()


def _warn_uncached(directory: Path, error: OSError) -> None:
    if directory not in _warned:  # once per directory and process
        _warned.add(directory)
        warnings.warn(
            f"cannot write the data cache in {directory} ({error.strerror or error}); continuing "
            "without it (set RNNJAX_CACHE_DIR to a writable directory to cache)",
            stacklevel=4,
        )


def read(path: Path, key: Mapping[str, Any]) -> Arrays | None:
    """The entry's arrays, or None when it is missing, unreadable or stored under another key."""
    try:
        with np.load(path, allow_pickle=False) as entry:
            if strings_from_array(entry[_KEY]) != (_canonical(key),):
                return None
            return {name: entry[name] for name in entry.files if name != _KEY}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing, or damaged on disk: the caller rebuilds and replaces it


def write(path: Path, key: Mapping[str, Any], arrays: Arrays) -> None:
    """Stores ``arrays`` at ``path`` atomically (temporary file in the same dir, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{_KEY: strings_to_array([_canonical(key)])})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def strings_to_array(strings: Sequence[str]) -> np.ndarray:
    """uint8 ``[bytes]``: strings stored without pickling (UTF-8 JSON)."""
    return np.frombuffer(json.dumps(list(strings)).encode(), np.uint8)


def strings_from_array(array: np.ndarray) -> tuple[str, ...]:
    """Inverse of ``strings_to_array``."""
    return tuple(json.loads(array.tobytes().decode()))


def _canonical(key: Mapping[str, Any]) -> str:
    return json.dumps({**key, "format_version": FORMAT_VERSION}, sort_keys=True, default=_number)


def _number(value: Any) -> Any:
    """A numpy scalar (a user's ``np.int64`` maxlen) keys the entry as the number it equals."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a cache key holds {value!r}, which is not JSON")
