"""Data larger than memory: batches from a data source, streamed to the device in fixed-shape
chunks while the previous chunk computes.

A data source is any iterable that is not itself a pytree of arrays (a list, tuple or dict of
arrays are a model's inputs): a generator, a ``grain.MapDataset``/``IterDataset`` or
``grain.DataLoader``, any object with ``__iter__``. Its elements are batches: ``(x, y)``,
``(x, y, sample_weight)`` or ``{"x": ..., "y": ...[, "sample_weight": ...]}`` of numpy-compatible
arrays with a leading batch axis (for ``predict``, just ``x``). The first batch fixes the batch
size B; a smaller batch (the last one) is padded with rows that count nowhere (``valid`` 0), so
every step has one compiled shape.

Epochs (Keras' rules): a re-iterable source (``iter()`` gives a fresh iterator) starts over every
epoch, and shuffles as it was built to (``grain`` with a seed and ``repeat``/``shuffle`` per epoch,
say); an iterator is read on across epochs, so give ``steps_per_epoch``. An epoch ends after
``steps_per_epoch`` batches, or when the source is exhausted.

Chunks of K batches are stacked on the host (``[K, B, ...]``), put on the device by a background
thread one chunk ahead (prefetch), and run as one compiled call; a last shorter chunk is padded
with empty batches that no step runs. With several processes each one's source yields only its
own share of every global batch (``grain``'s ``ShardByJaxProcess``, or its own TFDS shard), and
the global batch is assembled from the process-local pieces
(``jax.make_array_from_process_local_data``); metrics are then computed over the global batch.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from rnnjax.batches import StackedBatches

STREAM_CHUNK = 32  # batches a compiled call when an epoch is not cut for a live progress bar


def is_source(x: Any) -> bool:
    """Whether ``x`` is a data source rather than arrays: an iterable other than an array, dict,
    tuple or list."""
    if x is None or isinstance(x, (np.ndarray, jax.Array, dict, tuple, list, str, bytes)):
        return False
    return hasattr(x, "__iter__")


class ArrayBatches:
    """Arrays as a re-iterable source of consecutive batches (evaluation order): through
    ``Stream`` every dataset of one batch size runs the same compiled chunk, whatever its length.
    With several processes each yields only its share of every batch's rows (see ``Stream``).

    Args:
      data: ``{"x": inputs[, "y": targets][, "sample_weight": w]}``, leaves ``[N, ...]``.
      batch_size: B (more than N means N).
    """

    def __init__(self, data: dict, batch_size: int):
        self.data = data
        self.n = len(jax.tree.leaves(data)[0])
        self.batch_size = min(batch_size, self.n)

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        processes, index = jax.process_count(), jax.process_index()
        for start in range(0, self.n, self.batch_size):
            rows = np.arange(start, min(start + self.batch_size, self.n))
            if processes > 1:
                rows = np.array_split(rows, processes)[index]
            yield jax.tree.map(lambda a, r=rows: np.asarray(a)[r], self.data)


def _split_element(element: Any, inputs_only: bool) -> dict:
    if isinstance(element, dict) and "x" in element:
        batch = dict(element)
    elif isinstance(element, tuple) and not inputs_only:
        if not 1 <= len(element) <= 3:
            raise ValueError(
                f"a batch must be (x, y) or (x, y, sample_weight), got a tuple of {len(element)}"
            )
        batch = dict(zip(("x", "y", "sample_weight"), element))
    elif isinstance(element, tuple):
        batch = {"x": element[0]}
    else:
        if not inputs_only:
            raise ValueError(
                "a training or evaluation batch must be (x, y), (x, y, sample_weight) or a "
                f"dict with 'x' and 'y', got {type(element).__name__}"
            )
        batch = {"x": element}
    if inputs_only:
        return {"x": batch["x"]}
    if batch.get("y") is None:
        raise ValueError("a training or evaluation batch needs targets y")
    if batch.get("sample_weight") is None:
        batch.pop("sample_weight", None)
    return {k: jax.tree.map(np.asarray, v) for k, v in batch.items()}


def _rows(batch: dict) -> int:
    sizes = {np.shape(leaf)[0] for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1:
        raise ValueError(f"a batch's arrays disagree on its size: {sorted(sizes)}")
    return sizes.pop()


class Stream:
    """A data source read as fixed-shape chunks (see the module docstring).

    Args:
      source: the data source.
      steps_per_epoch: batches an epoch (default: ``len(source)`` when it has one, else until
        the source is exhausted).
      sharding: a batch's split over the devices of a data-parallel mesh (None: one device).
      inputs_only: batches are inputs alone (``predict``).
    """

    def __init__(
        self,
        source: Any,
        steps_per_epoch: int | None = None,
        sharding=None,
        inputs_only: bool = False,
    ):
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool) or steps_per_epoch < 1
        ):
            raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch!r}")
        self.source = source
        self.inputs_only = inputs_only
        self.sharding = sharding
        length = len(source) if hasattr(source, "__len__") else None
        self.steps = steps_per_epoch or length
        self._reiterable = not hasattr(source, "__next__")  # an iterator is read on
        self._iterator: Iterator | None = None
        self._peeked: list[dict] = []  # read ahead from an iterator, still to be trained on
        self._example: dict | None = None
        self.batch_size: int | None = None

    def _elements(self, epoch: int) -> Iterator[dict]:
        """The epoch's batches, as dicts of host arrays."""
        if self._iterator is None or self._reiterable:
            self._iterator = iter(self.source)
        count = 0
        while self.steps is None or count < self.steps:
            if self._peeked:
                batch = self._peeked.pop(0)
            else:
                try:
                    batch = _split_element(next(self._iterator), self.inputs_only)
                except StopIteration:
                    if count == 0:
                        raise ValueError(
                            f"the data source yielded no batch in epoch {epoch + 1}: an iterator "
                            "is read on across epochs, so give steps_per_epoch (or a "
                            "re-iterable source)"
                        ) from None
                    return
            count += 1
            yield batch

    def _first(self) -> dict:
        """The source's first batch, which fixes the batch size and the shapes."""
        if self._example is None:
            if self._reiterable:
                iterator = iter(self.source)
            else:
                iterator = self._iterator = self._iterator or iter(self.source)
            try:
                self._example = _split_element(next(iterator), self.inputs_only)
            except StopIteration:
                raise ValueError("the data source is empty") from None
            if not self._reiterable:
                self._peeked.append(self._example)
            self.batch_size = _rows(self._example)
        return self._example

    def _pad(self, batch: dict) -> dict:
        rows = _rows(batch)
        if rows > self.batch_size:
            raise ValueError(
                f"a batch of {rows} rows follows batches of {self.batch_size}; a source's "
                "batches may shrink (the last one) but not grow"
            )
        padded = jax.tree.map(
            lambda a: (
                np.concatenate([a, np.zeros((self.batch_size - rows, *a.shape[1:]), a.dtype)])
                if rows < self.batch_size
                else a
            ),
            batch,
        )
        padded["valid"] = (np.arange(self.batch_size) < rows).astype(np.float32)
        return padded

    def _stack(self, batches: list[dict], size: int) -> StackedBatches:
        empty = jax.tree.map(np.zeros_like, batches[0])
        batches = batches + [empty] * (size - len(batches))
        stacked = jax.tree.map(lambda *parts: np.stack(parts), *batches)
        return StackedBatches(self._put(stacked), self.sharding)

    def _put(self, stacked: dict) -> dict:
        if self.sharding is None:
            return jax.device_put(stacked)
        spec = jax.sharding.PartitionSpec(None, *self.sharding.spec)
        chunk_sharding = jax.sharding.NamedSharding(self.sharding.mesh, spec)
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(chunk_sharding, a), stacked
        )

    def chunks(self, epoch: int, first_step: int, chunk: int | None):
        """``(StackedBatches, 0, count, offset)`` for each chunk of the epoch from ``first_step``
        (earlier batches are read and dropped, to resume inside an epoch), one chunk ahead on a
        background thread; global step = ``offset`` + local step."""
        self._first()
        size = chunk or STREAM_CHUNK  # one compiled shape, whatever the source's length
        ready: queue.Queue = queue.Queue(maxsize=1)
        finished = threading.Event()

        def hand_over(item) -> bool:
            while not finished.is_set():
                try:
                    ready.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                elements = self._elements(epoch)
                for _ in range(first_step):
                    next(elements, None)
                offset, pending = first_step, []
                for element in elements:
                    pending.append(self._pad(element))
                    if len(pending) == size:
                        if not hand_over((self._stack(pending, size), 0, size, offset)):
                            return
                        offset, pending = offset + size, []
                if pending:
                    hand_over((self._stack(pending, size), 0, len(pending), offset))
                hand_over(None)
            except BaseException as error:  # handed to the consumer
                hand_over(error)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while (item := ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:  # also when the consumer stops early: release the producer
            finished.set()
            worker.join()

    def example_batches(self) -> StackedBatches:
        """A one-batch chunk shaped like the epoch's (for tracing)."""
        return self._stack([self._pad(self._first())], 1)
