"""Epoch batches as Keras' ``fit`` makes them, on the host or gathered on device.

Keras (``ArrayDataAdapter``) runs ``ceil(N / B)`` steps per epoch over one fresh permutation of
the N examples; batches are consecutive slices of it and the last one is partial (N mod B
examples, when that is not 0), weighted by its size in the epoch means. The same batches here come
in two forms:

* ``iterate_batches(x, y, batch_size, seed=, epoch=)``: numpy batches on the host, the last one
  smaller.
* ``batch_indices(seed, epoch, n=, batch_size=)``: jittable ``indices [S, B]`` and
  ``valid [S, B]`` for a dataset kept on device (``ArrayData``, ``IndexedBatches``). The last
  batch is padded to B with rows that count nowhere (``valid`` 0), so one compiled loop over the
  S steps gathers every step's batch, and every logged value is Keras' over the real examples.

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
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

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
    x: Any,
    y: Any,
    batch_size: int = 32,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
) -> Iterator[tuple[Any, Any]]:
    """Keras-style host batches of one epoch: ``ceil(N / B)`` of them, the last one smaller when
    ``B`` does not divide ``N``; the same rows in the same order as ``batch_indices``.

    Args:
      x: inputs, a pytree of arrays ``[N, ...]``.
      y: targets, a pytree of arrays ``[N, ...]``.
      batch_size: B.
      seed, epoch, shuffle: as ``batch_indices``.

    Yields:
      ``(x[rows], y[rows])`` with ``len(rows) == B``, except ``N - (S - 1) * B`` for the last.
    """
    n = num_examples({"x": x, "y": y})
    indices, _ = _jit_batch_indices(
        seed_key(seed), epoch, n=n, batch_size=batch_size, shuffle=shuffle
    )
    for step, rows in enumerate(np.asarray(indices)):
        rows = rows[: n - step * len(rows)]  # the last step drops its padding
        yield jax.tree.map(lambda a, r=rows: np.asarray(a)[r], (x, y))


class IndexedBatches(struct.PyTreeNode):
    """An epoch's batches of a dataset held whole on device, gathered step by step.

    Attributes:
      data: ``{"x": inputs, "y": targets[, "sample_weight": w]}``, leaves ``[N, ...]``.
      indices: int32 ``[S, B]``, the rows of each step (``batch_indices``).
      valid: float32 ``[S, B]``, 0 on the padding of the last step.
      sharding: how a batch is split over devices (None: one device).
    """

    data: dict
    indices: Array
    valid: Array
    sharding: Any = struct.field(pytree_node=False, default=None)

    @property
    def num_steps(self) -> int:
        return self.indices.shape[-2]

    def at(self, step) -> dict:
        """The batch of step ``step``: ``data``'s rows ``indices[step]`` and their ``valid``."""
        rows = self.indices[step]
        batch = jax.tree.map(lambda leaf: jnp.take(leaf, rows, axis=0), self.data)
        return _constrain({**batch, "valid": self.valid[step]}, self.sharding)


class StackedBatches(struct.PyTreeNode):
    """Batches already formed on the host and stacked: every leaf ``[K, B, ...]``, with
    ``"valid"`` ``[K, B]`` (a streamed chunk of an epoch)."""

    batches: dict
    sharding: Any = struct.field(pytree_node=False, default=None)

    @property
    def num_steps(self) -> int:
        return self.batches["valid"].shape[0]

    @property
    def valid(self) -> Array:
        return self.batches["valid"]

    def at(self, step) -> dict:
        return _constrain(jax.tree.map(lambda leaf: leaf[step], self.batches), self.sharding)


class ArrayData:
    """A dataset of arrays held whole on device, cut into each epoch's batches (Keras'
    ``ArrayDataAdapter``): ``steps = ceil(N / B)`` a epoch, in the order ``batch_indices`` gives.

    Args:
      data: ``{"x", "y"[, "sample_weight"]}`` (or ``{"x"}`` to predict), leaves ``[N, ...]`` on
        device.
      batch_size: B (more than N means N).
      key: the shuffling key (``seed_key(seed)``); None when not shuffling.
      shuffle: a new order every epoch, else ``0 .. N-1``.
      sharding: a batch's split over devices (None: one device); the indices are replicated.
    """

    def __init__(self, data: dict, batch_size: int, key, shuffle: bool, sharding=None):
        self.data = data
        self.n = num_examples(data)
        self.batch_size = min(batch_size, self.n)
        self.steps = steps_per_epoch(self.n, self.batch_size)
        self.key = key if key is not None else seed_key(0)
        self.shuffle = shuffle
        self.sharding = sharding

    def epoch(self, epoch: int) -> IndexedBatches:
        indices, valid = _jit_batch_indices(
            self.key, epoch, n=self.n, batch_size=self.batch_size, shuffle=self.shuffle
        )
        if self.sharding is not None:
            replicated = jax.sharding.NamedSharding(
                self.sharding.mesh, jax.sharding.PartitionSpec()
            )
            indices, valid = jax.device_put((indices, valid), replicated)
        return IndexedBatches(self.data, indices, valid, self.sharding)

    def chunks(self, epoch: int, first_step: int, chunk: int | None):
        """``(batches, start, stop, offset)`` covering steps ``first_step .. steps - 1``:
        the epoch's ``IndexedBatches`` each time, in runs of ``chunk`` steps (None: one run);
        global step = ``offset + `` local step (``offset`` is 0 here)."""
        batches = self.epoch(epoch)
        step = first_step
        while step < self.steps:
            stop = self.steps if chunk is None else min(step + chunk, self.steps)
            yield batches, step, stop, 0
            step = stop

    def example_batches(self) -> IndexedBatches:
        """Batches shaped like every epoch's (for tracing)."""
        return self.epoch(0)


def _constrain(batch: dict, sharding) -> dict:
    return batch if sharding is None else jax.lax.with_sharding_constraint(batch, sharding)


def num_examples(tree: Any, name: str = "data") -> int:
    """N, the leading size every leaf of ``tree`` shares.

    Raises:
      ValueError: a leaf is a scalar, or two leaves disagree (both named).
    """
    sizes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        where = f"{name}{jax.tree_util.keystr(path)}"
        if not shape:
            raise ValueError(f"{where} is a scalar; every array needs a leading example axis")
        sizes[where] = shape[0]
    if not sizes:
        raise ValueError(f"{name} holds no arrays")
    first_name, first = next(iter(sizes.items()))
    for where, n in sizes.items():
        if n != first:
            raise ValueError(
                f"{where} has {n} examples but {first_name} has {first}; they must match"
            )
    return next(iter(sizes.values()))


def to_device(tree: Any, device: Any = None) -> Any:
    """``tree``'s arrays on ``device`` (default: JAX's), 64-bit numbers narrowed to 32 bits as
    JAX computes them."""

    def put(leaf):
        leaf = np.asarray(leaf)
        if leaf.dtype == np.float64:
            leaf = leaf.astype(np.float32)
        elif leaf.dtype in (np.int64, np.uint64):
            leaf = leaf.astype(np.int32)
        return jax.device_put(leaf, device)

    return jax.tree.map(put, tree)


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
