"""Epoch batches as Keras' ``fit`` makes them, on the host or gathered on device.

Keras (``ArrayDataAdapter``) runs ``ceil(N / B)`` steps per epoch over one fresh permutation of
the N examples; batches are consecutive slices of it and the last one is partial (N mod B
examples, when that is not 0), weighted by its size in the epoch means. The same batches here come
in two forms:

* ``iterate_batches(x, y, batch_size, seed=, epoch=)``: numpy batches on the host, the last one
  smaller, for a per-step loop with a progress bar.
* ``batch_indices(seed, epoch, n=, batch_size=)``: jittable ``indices [S, B]`` and
  ``weights [S, B]`` for a dataset kept on device (``to_device``). The last batch is padded to B
  with valid rows at weight 0, so one compiled ``lax.scan`` over the S steps can
  ``gather_batch`` every step, and weight-averaged losses and metrics equal Keras' means.

Epoch ``e`` visits the rows in the order ``epoch_permutation(seed, e, n)``:
``jax.random.permutation(jax.random.fold_in(jax.random.key(seed), e), n)`` with the threefry2x32
PRNG, the same on host and device. (Keras master uses ``np.random.default_rng(e + 1)``, which
cannot run under ``jit``; Keras <= 3.15 the global NumPy generator.) ``shuffle=False`` keeps the
given order, for validation and evaluation.

Shape letters: N examples, T time steps, S steps per epoch, B batch size.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def steps_per_epoch(n: int, batch_size: int) -> int:
    """``ceil(n / batch_size)``: Keras counts the last partial batch as a step."""
    return math.ceil(n / batch_size)


def seed_key(seed: int) -> Array:
    """The PRNG key of a run's integer seed; any Python int is a seed.

    Seeds in ``[-2**31, 2**32)`` give ``jax.random.key(seed)`` (what every earlier run used);
    larger ones fold their further 32-bit words (and sign) into the key of the lowest word, so
    no two seeds share a key and nothing overflows.
    """
    seed = operator.index(seed)
    if -(2**31) <= seed < 2**32:
        return jax.random.key(seed, impl="threefry2x32")
    magnitude = abs(seed)
    key = jax.random.key(magnitude & 0xFFFFFFFF, impl="threefry2x32")
    magnitude >>= 32
    while magnitude:
        key = jax.random.fold_in(key, magnitude & 0xFFFFFFFF)
        magnitude >>= 32
    return jax.random.fold_in(key, 1 if seed < 0 else 0)


def batch_indices(
    seed: int | Array, epoch: int | Array, *, n: int, batch_size: int, shuffle: bool = True
) -> tuple[Array, Array]:
    """Which rows each step of an epoch reads, padded to a fixed shape. Jittable with ``n``,
    ``batch_size`` and ``shuffle`` static.

    Args:
      seed: the run's shuffling seed: a PRNG key (``seed_key``), or an int (int32 range when
        traced).
      epoch: the epoch number; each epoch draws a new order.
      n: the number of examples N, >= 1.
      batch_size: >= 1; B = ``min(batch_size, N)`` (a batch larger than the data is all of it,
        as in Keras).
      shuffle: False keeps rows in order ``0 .. N-1``.

    Returns:
      ``indices`` int32 ``[S, B]`` and ``weights`` float32 ``[S, B]``, ``S = ceil(N / B)``:
      step ``s`` reads rows ``indices[s]``; weights are 1, except 0 on the ``S * B - N`` padding
      slots at the end of the last step, which repeat rows from the start of the order.

    >>> indices, weights = batch_indices(0, 0, n=5, batch_size=2, shuffle=False)
    >>> indices.tolist(), weights.tolist()
    ([[0, 1], [2, 3], [4, 0]], [[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    """
    _check_sizes(n, batch_size)
    batch_size = min(batch_size, n)
    steps = steps_per_epoch(n, batch_size)
    order = _permutation(seed, epoch, n) if shuffle else jnp.arange(n)
    slots = jnp.arange(steps * batch_size)
    indices = order[slots % n].astype(jnp.int32).reshape(steps, batch_size)
    weights = (slots < n).astype(jnp.float32).reshape(steps, batch_size)
    return indices, weights


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """int32 ``[N]``: the order in which epoch ``epoch`` visits the rows (same seed and epoch, same
    order)."""
    _check_sizes(n, 1)
    return np.asarray(_jit_permutation(seed_key(seed), epoch, n))


def iterate_batches(
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int = 32,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Keras-style host batches of one epoch: ``ceil(N / B)`` of them, the last one smaller when
    ``B`` does not divide ``N``; the same rows in the same order as ``batch_indices``.

    Args:
      x: ``[N, ...]``.
      y: ``[N, ...]``.
      batch_size: B.
      seed, epoch, shuffle: as ``batch_indices``.

    Yields:
      ``(x[rows], y[rows])`` with ``len(rows) == B``, except ``N - (S - 1) * B`` for the last.
    """
    n = len(x)
    if len(y) != n:
        raise ValueError(f"x has {n} examples but y has {len(y)}")
    indices, _ = _jit_batch_indices(
        seed_key(seed), epoch, n=n, batch_size=batch_size, shuffle=shuffle
    )
    for step, rows in enumerate(np.asarray(indices)):
        rows = rows[: n - step * len(rows)]  # the last step drops its padding
        yield x[rows], y[rows]


class DeviceData(NamedTuple):
    """A whole dataset held on device once.

    Attributes:
      x: int32 ``[N, T]`` padded id sequences.
      y: ``[N]`` labels (int32) or targets (float32).
    """

    x: Array
    y: Array


def to_device(x: np.ndarray, y: np.ndarray, device: Any = None) -> DeviceData:
    """Puts ``x`` (as int32) and ``y`` (int32, or float32 when floating) on ``device`` (default:
    JAX's default device)."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(
            f"x must be integer [N, T] (pad_sequences output), got {x.dtype} {x.shape}"
        )
    y = y.astype(np.float32 if np.issubdtype(y.dtype, np.floating) else np.int32)
    return DeviceData(jax.device_put(x.astype(np.int32), device), jax.device_put(y, device))


def gather_batch(data: DeviceData, rows: Array) -> tuple[Array, Array]:
    """``(x [B, T], y [B])`` of ``rows [B]`` (one row of ``batch_indices``), gathered on device."""
    return jnp.take(data.x, rows, axis=0), jnp.take(data.y, rows, axis=0)


def _permutation(seed: int | Array, epoch: int | Array, n: int) -> Array:
    if not (isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)):
        seed = jax.random.key(seed, impl="threefry2x32")
    return jax.random.permutation(jax.random.fold_in(seed, epoch), n)


def _check_sizes(n: int, batch_size: int) -> None:
    if n < 1:
        raise ValueError(f"cannot batch an empty split (n={n})")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


# The host forms go through the same compiled functions as a jitted training loop would.
_jit_permutation = jax.jit(_permutation, static_argnames="n")
_jit_batch_indices = jax.jit(batch_indices, static_argnames=("n", "batch_size", "shuffle"))
