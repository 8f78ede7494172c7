"""How numpy's large host arrays get their memory: ordinary pages where rnnjax builds datasets.

NumPy marks every array of 4 MiB or more for transparent huge pages (``madvise(MADV_HUGEPAGE)``).
Where the kernel's ``/sys/kernel/mm/transparent_hugepage/defrag`` is ``madvise`` (a common
default) and no huge page is free, the first touch of such memory stalls in a synchronous
compaction instead of falling back to ordinary pages (numpy/numpy#31590), and the mark outlives
the array on memory the allocator hands out again. On the development VM filling a fresh 50 MB
array took 0.16–0.48 s with the mark and 0.02 s without, and the first IMDB load, which builds
arrays the size of the corpus, ~1 s of its ~3 (BUILD_NOTES.md, "CPU fast path"). A whole
training run showed no difference above the VM's noise, so only the dataset builds use this.

``NUMPY_MADVISE_HUGEPAGE`` (numpy's own switch, read when numpy starts) always wins: when a user
sets it, rnnjax leaves numpy's choice alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

# numpy's runtime switch (since 1.19; every platform has it, a no-op off Linux).
_set_madvise_hugepage = getattr(np._core.multiarray, "_set_madvise_hugepage", None)


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """Within the block, numpy's new arrays take ordinary pages, not huge pages; numpy's setting
    from before the block is restored after it. Does nothing when ``NUMPY_MADVISE_HUGEPAGE`` is
    set in the environment."""
    if _set_madvise_hugepage is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    previous = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(previous)
