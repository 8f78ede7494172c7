"""The host loop: Keras' ``fit``, ``evaluate`` and ``predict`` for any model in a ``TrainState``.

``fit`` reads as Keras' does: epochs -> compiled chunks of steps -> callbacks. Everything traced
lives in ``rnnjax.steps``; early stopping, checkpoints, history, progress and NaN handling are
callbacks (``rnnjax.callbacks``, ``early_stopping``, ``checkpoint``) run between chunks.

Data: ``x``/``y`` (and ``sample_weight``) are pytrees of arrays with a leading example axis N —
integer ids ``[N, T]``, float features ``[N, T, D]``, dicts of several inputs, class ids, one-hot
or float targets, per-step targets ``[N, T]``, several outputs — held on device and gathered batch
by batch inside the compiled loop; or ``x`` is a data source (an iterable or a ``grain`` dataset
of batches, ``rnnjax.streams``) streamed to the device in chunks while the previous one computes.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rnnjax import objective, steps
from rnnjax.batches import ArrayData, num_examples, seed_key, to_device
from rnnjax.callbacks import Callback, CallbackList, History, Loop, ProgbarLogger, TerminateOnNaN
from rnnjax.sharding import batch_sharding, replicate
from rnnjax.streams import ArrayBatches, Stream, is_source
from rnnjax.train_state import TrainState
from rnnjax.validation import check_batch_size

_train_steps = jax.jit(steps.train_steps, donate_argnums=(0, 1))
_eval_steps = jax.jit(steps.eval_steps, donate_argnums=1)
_predict_steps = jax.jit(steps.predict_steps)
_zero_stats = jax.jit(steps.zero_stats)

LIVE_UPDATES = 20  # chunks an epoch while a progress bar is drawn live


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` ends with: the final ``state`` (the best weights when ``EarlyStopping``
    restored them), the ``History`` callback, every callback in run order, and whether an
    ``Interrupt`` ended it inside the run (``BackupAndRestore`` saved where)."""

    state: TrainState
    history: History
    callbacks: tuple[Callback, ...]
    interrupted: bool = False

    @property
    def nan_at(self) -> tuple[int, int] | None:
        """``(epoch, step)`` (1-based) where ``TerminateOnNaN`` stopped training, if it did."""
        found = [c.nan_at for c in self.callbacks if isinstance(c, TerminateOnNaN)]
        return found[0] if found else None


def fit(
    state: TrainState,
    x: Any = None,
    y: Any = None,
    *,
    batch_size: int | None = None,
    epochs: int = 1,
    verbose: int | str = "auto",
    callbacks: Sequence[Callback] | Callback | None = None,
    validation_split: float = 0.0,
    validation_data: Any = None,
    shuffle: bool = True,
    class_weight: dict[int, float] | None = None,
    sample_weight: Any = None,
    seed: int = 0,
    steps_per_epoch: int | None = None,
    validation_batch_size: int | None = None,
    validation_freq: int | Sequence[int] = 1,
    steps_per_execution: int | str = "auto",
    mesh: Mesh | None = None,
    initial_epoch: int = 0,
) -> FitResult:
    """Keras' ``model.fit``: trains ``state`` for ``epochs`` epochs.

    Args:
      state: the model, optimizer, loss and metrics (``TrainState.create``), also the structure
        a ``BackupAndRestore`` backup is restored into.
      x: inputs, a pytree of arrays ``[N, ...]``; or a data source (``rnnjax.streams``) of
        ``(x, y)``, ``(x, y, sample_weight)`` or ``{"x", "y"[, "sample_weight"]}`` batches, with
        ``y`` None.
      y: targets, a pytree of arrays ``[N, ...]`` matching the model's outputs.
      batch_size: examples per step (default 32; a source brings its own); larger than N means
        one batch of N, as in Keras. The last partial batch is padded with rows that count
        nowhere, so every step has one compiled shape.
      epochs: the epoch to end at (Keras: an end index; a resumed run continues to it).
      verbose: 0 silent, 1 (``"auto"``) Keras' progress bar, 2 one line per epoch.
      callbacks: ``rnnjax.callbacks.Callback``s (or one), run in order before rnnjax's
        ``History`` and ``ProgbarLogger``.
      validation_split: the last fraction of the arrays (before shuffling) held out for
        validation, as Keras does.
      validation_data: ``(x, y)`` or ``(x, y, sample_weight)`` arrays, or a data source;
        evaluated after every ``validation_freq``-th epoch with the post-epoch weights; logged
        with the prefix ``val_``.
      shuffle: a fresh order of the arrays each epoch, from ``(seed, epoch)`` alone.
      class_weight: ``{class id: weight}``, turned into per-example weights from ``y`` (Keras;
        not with ``sample_weight``, one output only).
      sample_weight: ``[N]`` per example, or ``[N, T]`` per step of per-step targets.
      seed: the shuffling seed (any Python int); dropout keys come from the state's ``rng``.
      steps_per_epoch: for a source without a length: steps that make an epoch (arrays make
        ``ceil(N / batch_size)``).
      validation_batch_size: default ``batch_size``.
      validation_freq: validate every this many epochs, or after the epochs (1-based) listed.
      steps_per_execution: steps per compiled call; ``"auto"``: the whole epoch, or about
        1/20 of it while a progress bar is drawn live. Callbacks' ``on_train_batch_*`` run
        between calls.
      mesh: a ``sharding.data_mesh``: each batch is split over its devices, the state and data
        are replicated (``batch_size`` must divide evenly). Same results as one device.
      initial_epoch: the epoch to start at (Keras: to continue a run by hand, with the state it
        ended with; an epoch's shuffle depends on its number, dropout on the state's step). A
        restored ``BackupAndRestore`` backup sets it instead.

    Returns:
      A ``FitResult``.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    epochs = int(epochs)
    integer = isinstance(initial_epoch, numbers.Integral) and not isinstance(initial_epoch, bool)
    if not integer or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be an integer >= 0, got {initial_epoch!r}")
    verbose = _verbosity(verbose)
    if not 0 <= validation_split < 1:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    validates = _validation_epochs(validation_freq)
    callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or ())
    if state.tx is None or not state.objective.loss:
        raise ValueError(
            "fit needs a state with an optimizer and a loss: TrainState.create(tx=, loss=)"
        )
    place, sharding = _placement(mesh)
    state = place(jax.tree.map(jnp.copy, state))  # fit donates; the caller's state stays usable

    if is_source(x):
        if y is not None or sample_weight is not None or class_weight is not None:
            raise ValueError("with a data source, its batches carry y and sample_weight")
        if validation_split:
            raise ValueError("validation_split needs arrays; give validation_data for a source")
        train = Stream(x, steps_per_epoch=steps_per_epoch, sharding=sharding)
        schedule = {"source": type(x).__name__}
    else:
        if steps_per_epoch is not None:
            raise ValueError(
                "steps_per_epoch is for a data source without a length; arrays make epochs of "
                "ceil(N / batch_size) steps (give fewer examples, a larger batch_size, or the "
                "arrays as a source: rnnjax.streams)"
            )
        data = _arrays(x, y, sample_weight, class_weight, "training data")
        _check(state, data, "training data")
        if validation_split:
            data, validation_data = _split(data, validation_split)
        batch_size = check_batch_size(32 if batch_size is None else batch_size)
        _check_mesh(mesh, min(batch_size, num_examples(data)))
        train = ArrayData(
            place(to_device(data)), batch_size, seed_key(seed), shuffle=shuffle, sharding=sharding
        )
        schedule = {"batch_size": batch_size, "seed": int(seed), "examples": train.n}
    if validation_batch_size is not None:
        validation_batch_size = check_batch_size(validation_batch_size)
    validation = _validation(
        validation_data, validation_batch_size or batch_size, place, sharding, state=state
    )

    zeros = _zero_stats(state, train.example_batches())
    loop = Loop(state=state, epochs=epochs, steps_per_epoch=train.steps, schedule=schedule)
    loop.epoch = int(initial_epoch)
    loop.epoch_stats = _fresh(zeros)
    loop.directions = objective.directions(zeros)
    loop.directions |= {f"val_{k}": v for k, v in loop.directions.items()}
    history = History()
    progbar = ProgbarLogger(verbose)
    callback_list = CallbackList([*callbacks, history, progbar], loop)
    chunk = _chunk_size(steps_per_execution, progbar, train.steps)

    try:
        callback_list.on_train_begin({})
        logs: dict[str, Any] = {}
        for epoch in range(loop.epoch, epochs):
            if loop.stop_training:  # restored from a backup of a run that had stopped
                break
            loop.epoch = epoch
            callback_list.on_epoch_begin(epoch, {})
            logs = _train_epoch(loop, train, epoch, chunk, callback_list)
            if loop.interrupted:
                break
            if validation is not None and validates(epoch + 1):
                logs |= _validate(loop.state, validation, zeros, callback_list)
            callback_list.on_epoch_end(epoch, logs)
            loop.epoch, loop.step, loop.epoch_stats = epoch + 1, 0, _fresh(zeros)
            if loop.stop_training or loop.interrupted:
                break
        callback_list.on_train_end(logs)
    finally:
        callback_list.release()
    return FitResult(loop.state, history, tuple(callback_list.callbacks), loop.interrupted)


def _train_epoch(loop: Loop, train, epoch: int, chunk: int | None, callback_list) -> dict:
    """Runs the epoch's steps from ``loop.step`` in compiled chunks, callbacks between them;
    returns the epoch's (running) training logs."""
    for batches, start, stop, offset in train.chunks(epoch, loop.step, chunk):
        while start < stop:  # a non-finite loss ends a call early: the rest runs on from there
            callback_list.on_train_batch_begin(offset + start, {})
            state, stats, done = _train_steps(loop.state, loop.epoch_stats, batches, start, stop)
            loop.state, loop.epoch_stats, start = state, stats, int(done)
            loop.step = offset + start
            logs = objective.to_logs(objective.results(stats))
            callback_list.on_train_batch_end(loop.step - 1, logs)
            if loop.stop_training or loop.interrupted:
                return logs
    # Also when a resumed run finds the epoch's steps all done.
    return objective.to_logs(objective.results(loop.epoch_stats))


def _validate(state, validation, zeros, callback_list) -> dict[str, Any]:
    callback_list.on_test_begin({})
    stats, logs = _fresh(zeros), {}
    for batches, start, stop, offset in validation.chunks(0, 0, None):
        callback_list.on_test_batch_begin(offset + start, {})
        stats = _eval_steps(state, stats, batches, start, stop)
        logs = objective.to_logs(objective.results(stats))
        callback_list.on_test_batch_end(offset + stop - 1, logs)
    callback_list.on_test_end(logs)
    return {f"val_{k}": v for k, v in logs.items()}


def evaluate(
    state: TrainState,
    x: Any = None,
    y: Any = None,
    *,
    batch_size: int | None = None,
    sample_weight: Any = None,
    steps: int | None = None,
    callbacks: Sequence[Callback] | Callback | None = None,
    mesh: Mesh | None = None,
) -> dict[str, float]:
    """Keras' ``model.evaluate(..., return_dict=True)``: the loss and metrics over ``x``/``y``
    (arrays, or a data source) in inference mode — each over all examples, padding left out."""
    place, sharding = _placement(mesh)
    state = place(state)
    data = (x, y, sample_weight) if not is_source(x) else x
    validation = _validation(data, batch_size, place, sharding, steps, state=state)
    zeros = _zero_stats(state, validation.example_batches())
    loop = Loop(state=state, epochs=1, steps_per_epoch=validation.steps)
    callbacks = [callbacks] if isinstance(callbacks, Callback) else list(callbacks or ())
    callback_list = CallbackList(callbacks, loop)
    logs = _validate(state, validation, zeros, callback_list)
    return {k.removeprefix("val_"): v for k, v in logs.items()}


def predict(
    state: TrainState,
    x: Any,
    *,
    batch_size: int | None = None,
    steps: int | None = None,
    mesh: Mesh | None = None,
) -> Any:
    """Keras' ``model.predict``: the model's outputs on ``x`` in inference mode, numpy arrays
    ``[N, ...]`` (a pytree for several outputs). ``x`` is a pytree of arrays, or a data source
    of inputs (or of ``(x, ...)``/``{"x": ...}`` batches)."""
    place, sharding = _placement(mesh)
    state = place(state)
    if is_source(x):
        source = Stream(x, steps_per_epoch=steps, sharding=sharding, inputs_only=True)
    else:
        _check(state, {"x": x}, "predict data")
        if num_examples({"x": x}, "predict data") == 0:
            raise ValueError("predict data is empty")
        batch_size = check_batch_size(32 if batch_size is None else batch_size)
        source = Stream(ArrayBatches({"x": x}, batch_size), sharding=sharding, inputs_only=True)
    pieces = []
    for batches, _, _, _ in source.chunks(0, 0, None):
        outputs, valid = jax.device_get((_predict_steps(state, batches), batches.valid))
        rows = np.asarray(valid).reshape(-1) > 0
        pieces.append(jax.tree.map(lambda o, r=rows: o.reshape(-1, *o.shape[2:])[r], outputs))
    return jax.tree.map(lambda *parts: np.concatenate(parts), *pieces)


def _fresh(zeros):
    """A copy of the empty statistics (each compiled call donates the statistics it is given)."""
    return jax.tree.map(jnp.copy, zeros)


def _verbosity(verbose: int | str) -> int:
    if verbose == "auto":
        return 1
    if verbose not in (0, 1, 2) or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', got {verbose!r}")
    return int(verbose)


def _chunk_size(steps_per_execution: int | str, progbar: ProgbarLogger, steps: int | None):
    if steps_per_execution == "auto":
        if progbar.live and steps:
            return max(1, math.ceil(steps / LIVE_UPDATES))
        return None  # the whole epoch
    if isinstance(steps_per_execution, bool) or not isinstance(steps_per_execution, int):
        raise ValueError(
            f"steps_per_execution must be 'auto' or an int, got {steps_per_execution!r}"
        )
    if steps_per_execution < 1:
        raise ValueError(f"steps_per_execution must be >= 1, got {steps_per_execution}")
    return steps_per_execution


def _check(state: TrainState, data: dict, name: str) -> None:
    """A dataset's inputs and targets against the model and its losses, once, on the host."""
    check_inputs = getattr(state.model, "check_inputs", None)
    if check_inputs is not None:
        check_inputs(data["x"], name)
    if "y" in data and state.objective.loss:
        first = jax.tree.map(lambda a: np.asarray(a)[:1], data["x"])
        shapes = jax.eval_shape(lambda: state.apply(state.params, first)[0])
        objective.check_targets(state.objective, data["y"], shapes, name)


def _arrays(x, y, sample_weight, class_weight, name: str) -> dict:
    """The training arrays as one pytree ``{"x", "y"[, "sample_weight"]}``, checked."""
    if x is None or y is None:
        raise ValueError(f"{name}: give x and y (or a data source as x)")
    data = {"x": x, "y": y}
    if class_weight is not None:
        if sample_weight is not None:
            raise ValueError("give class_weight or sample_weight, not both (as Keras)")
        sample_weight = _class_weights(y, class_weight)
    if sample_weight is not None:
        try:
            data["sample_weight"] = np.asarray(sample_weight, np.float32)
        except (TypeError, ValueError):
            raise ValueError(
                "sample_weight must be one array of numbers, [N] or [N, T] (per-output weights "
                "are not supported: weigh the outputs' losses with "
                "TrainState.create(loss_weights=))"
            ) from None
    n = num_examples(data, name)
    if n == 0:
        raise ValueError(f"{name} is empty")
    return data


def _class_weights(y, class_weight: dict) -> np.ndarray:
    """Keras' ``class_weight_to_sample_weights``: each example's weight from its class id (the
    argmax of a one-hot target, a trailing 1 squeezed), 1.0 for classes not listed."""
    if len(jax.tree.leaves(y)) != 1:
        raise ValueError("class_weight needs a model with one output")
    y = np.asarray(jax.tree.leaves(y)[0])
    if y.ndim > 1 and y.shape[-1] == 1:
        y = y[..., 0]
    if y.ndim > 1:
        y = np.argmax(y, axis=-1)
    keys = [k for k in class_weight if isinstance(k, bool) or not isinstance(k, numbers.Integral)]
    if keys:
        raise ValueError(f"class_weight keys are class ids (integers), got {keys!r}")
    classes = np.rint(y).astype(np.int64)
    return np.asarray([class_weight.get(int(c), 1.0) for c in classes], np.float32)


def _split(data: dict, fraction: float) -> tuple[dict, tuple]:
    """Keras' ``validation_split``: the last ``N - floor(N (1 - fraction))`` examples, in order."""
    n = num_examples(data)
    cut = math.floor(n * (1 - fraction))
    if cut == 0 or cut == n:
        raise ValueError(
            f"validation_split={fraction} leaves an empty split of {n} examples; change it"
        )
    head = jax.tree.map(lambda a: np.asarray(a)[:cut], data)
    tail = jax.tree.map(lambda a: np.asarray(a)[cut:], data)
    return head, (tail["x"], tail["y"], tail.get("sample_weight"))


def _validation(data, batch_size, place, sharding, steps=None, state=None):
    """Validation (or evaluation) data as batches in order: arrays or a source; None if none."""
    if data is None:
        return None
    if is_source(data):
        return Stream(data, steps_per_epoch=steps, sharding=sharding)
    if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
        raise ValueError("validation_data must be (x, y), (x, y, sample_weight) or a data source")
    x, y, *weight = data
    arrays = _arrays(x, y, weight[0] if weight else None, None, "validation data")
    if state is not None:
        _check(state, arrays, "validation data")
    batch_size = check_batch_size(32 if batch_size is None else batch_size)
    # Streamed in chunks of one shape: validation, test and any other split share one compile.
    return Stream(ArrayBatches(arrays, batch_size), sharding=sharding)


def _validation_epochs(validation_freq: int | Sequence[int]) -> Callable[[int], bool]:
    """Keras' ``validation_freq``: an int validates every that many epochs, a list after the
    (1-based) epochs it names."""
    if isinstance(validation_freq, numbers.Integral) and not isinstance(validation_freq, bool):
        if validation_freq < 1:
            raise ValueError(f"validation_freq must be >= 1, got {validation_freq}")
        return lambda epoch: epoch % validation_freq == 0
    if isinstance(validation_freq, (list, tuple)) and all(
        isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in validation_freq
    ):
        return set(validation_freq).__contains__
    raise ValueError(
        f"validation_freq must be an int or a list of epochs (1-based), got {validation_freq!r}"
    )


def _placement(mesh: Mesh | None):
    """``(place, batch sharding)``: identity and None on one device; replication and the batch
    split for a data-parallel mesh."""
    if mesh is None:
        return (lambda tree: tree), None
    return (lambda tree: replicate(tree, mesh)), batch_sharding(mesh)


def _check_mesh(mesh: Mesh | None, batch_size: int) -> None:
    if mesh is not None and batch_size % mesh.size:
        raise ValueError(
            f"batch_size {batch_size} does not split evenly over {mesh.size} devices; use a "
            f"multiple of {mesh.size} (--batch-size)"
        )
