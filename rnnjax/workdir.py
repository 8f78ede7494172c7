"""A run's work directory: where it is, and writing files there so a crash never half-writes one."""

from __future__ import annotations

import datetime
import os
import tempfile


def default_workdir(experiment: str) -> str:
    """``runs/<experiment>/<timestamp>`` under the current directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", experiment, stamp)


def write_atomic(path: str, data: str | bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, then renames it over ``path``: a reader
    (or a later run) sees the old file or the new one, never a partial one."""
    directory = os.path.dirname(os.path.abspath(path))
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
