"""Fresh ``RNNJAX_CACHE_DIR``s for child processes that still hold the fused kernels' build.

A test that needs an empty data cache would otherwise make its child process compile the kernels
again (about 12 s of CPU per build); this copies the library this session already built.
"""

import shutil
from pathlib import Path

from rnnjax import fused


def fresh_cache(path: Path) -> str:
    """Creates ``path`` holding only the compiled kernel library; returns it as a string."""
    path.mkdir(parents=True, exist_ok=True)
    if fused.available():
        library = fused._build()  # built (or found) in this process's cache by available()
        for built in (library, library.with_suffix(".sha256")):  # the library and its digest
            shutil.copy2(built, path / built.name)
    return str(path)
