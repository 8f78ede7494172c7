"""Variable-length integer sequences: ragged storage, Keras' ``pad_sequences``, a seeded split.

Shape letters: N sequences, T padded length, M values over all sequences.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True, eq=False)
class Ragged:
    """N rows of different lengths stored flat: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``.

    Attributes:
      values: ``[M]``, the rows one after another.
      lengths: int64 ``[N]``, the length of each row; ``lengths.sum() == M``.
    """

    values: np.ndarray
    lengths: np.ndarray

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], dtype: Any = np.int32) -> Ragged:
        """Packs rows (lists or 1-D arrays) into one flat array."""
        lengths = np.fromiter(map(len, rows), np.int64, len(rows))
        parts = [np.asarray(row, dtype) for row in rows]
        return cls(np.concatenate(parts) if parts else np.zeros(0, dtype), lengths)

    @property
    def num_rows(self) -> int:
        return len(self.lengths)

    @property
    def offsets(self) -> np.ndarray:
        """int64 ``[N + 1]``: where each row starts, then ``M``."""
        return np.concatenate([[0], np.cumsum(self.lengths)])

    def take(self, rows: np.ndarray) -> Ragged:
        """The given rows, in the given order (a row may repeat)."""
        rows = np.asarray(rows, np.int64)
        starts, lengths = self.offsets[:-1][rows], self.lengths[rows]
        # One slice per row: an index per value would take several times the values' memory,
        # which costs more to page in than the copy does (rows are documents, not single values).
        parts = [
            self.values[start : start + length]
            for start, length in zip(starts.tolist(), lengths.tolist(), strict=True)
        ]
        return Ragged(np.concatenate(parts) if parts else self.values[:0], lengths)

    def to_arrays(self) -> np.ndarray:
        """object ``[N]`` of 1-D views into ``values``, laid out as Keras' ``load_data`` outputs."""
        out = np.empty(self.num_rows, dtype=object)
        offsets = self.offsets.tolist()
        for i in range(self.num_rows):
            out[i] = self.values[offsets[i] : offsets[i + 1]]
        return out


def pad_sequences(
    sequences: Sequence[Sequence[Any]],
    maxlen: int | None = None,
    dtype: Any = "int32",
    padding: str = "pre",
    truncating: str = "pre",
    value: float = 0.0,
) -> np.ndarray:
    """Pads (and truncates) sequences to one length, exactly as ``keras.utils.pad_sequences``.

    Bad arguments fail up front (Keras: only once a non-empty sequence reaches them), and no
    sequences with ``maxlen=None`` give ``[0, 0]`` (Keras: an error).

    Args:
      sequences: N sequences (lists, 1-D arrays or ``[L_i, *S]`` arrays for sequences of vectors).
      maxlen: the output length T; None means the longest sequence. Must be >= 1.
      dtype: the output dtype; ``value`` is cast to it.
      padding: 'pre' pads on the left, 'post' on the right.
      truncating: 'pre' keeps the last T items of a longer sequence, 'post' the first T.
      value: the padding value.

    Returns:
      ``[N, T, *S]`` of ``dtype``. Empty sequences are all ``value``.

    >>> pad_sequences([[1, 2, 3], [4]], maxlen=2)
    array([[2, 3],
           [0, 4]], dtype=int32)
    """
    if padding not in ("pre", "post"):
        raise ValueError(f"padding must be 'pre' or 'post', got {padding!r}")
    if truncating not in ("pre", "post"):
        raise ValueError(f"truncating must be 'pre' or 'post', got {truncating!r}")
    if maxlen is not None and maxlen < 1:
        raise ValueError(f"maxlen must be >= 1 (or None for the longest sequence), got {maxlen}")
    lengths = [len(s) for s in sequences]
    nonempty = [s for s in sequences if len(s)]
    sample_shape = np.asarray(nonempty[0]).shape[1:] if nonempty else ()
    if maxlen is None:
        maxlen = max(lengths, default=0)
    out = np.full((len(sequences), maxlen, *sample_shape), value, dtype=dtype)
    for i, s in enumerate(sequences):
        if not len(s):
            continue
        kept = np.asarray(s[-maxlen:] if truncating == "pre" else s[:maxlen], dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError(
                f"sequence {i} has items of shape {kept.shape[1:]}, the others {sample_shape}"
            )
        if padding == "pre":
            out[i, maxlen - len(kept) :] = kept
        else:
            out[i, : len(kept)] = kept
    return out


def train_validation_split(
    x: Sequence[Any], y: Sequence[Any], fraction: float = 0.2, seed: int = 42
) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """Shuffles once with ``seed`` and holds out ``ceil(fraction * N)`` examples for validation.

    The indices are those of scikit-learn's
    ``train_test_split(x, y, test_size=fraction, random_state=seed)``: with
    ``p = np.random.RandomState(seed).permutation(N)``, validation is ``p[:n_val]`` and training
    ``p[n_val:]``. (Keras' ``fit(validation_split=...)`` instead takes the last ``floor`` share
    without shuffling; the sizes agree: 25,000 -> 20,000 / 5,000 and 8,982 -> 7,185 / 1,797.)

    Args:
      x: N examples: an array (an object array of sequences is fine) or a list.
      y: N labels.
      fraction: the validation share, strictly between 0 and 1.
      seed: the shuffling seed.

    Returns:
      ``(x_train, y_train), (x_val, y_val)``, each taken in permutation order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must be in (0, 1), got {fraction}")
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    n_val = math.ceil(fraction * n)
    if n_val == 0 or n_val == n:
        raise ValueError(
            f"a validation fraction of {fraction} of {n} examples leaves an empty split "
            f"({n - n_val} train / {n_val} validation)"
        )
    order = np.random.RandomState(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    return (_take(x, train), _take(y, train)), (_take(x, val), _take(y, val))


def _take(a: Sequence[Any], rows: np.ndarray) -> Any:
    return a[rows] if isinstance(a, np.ndarray) else [a[i] for i in rows]
