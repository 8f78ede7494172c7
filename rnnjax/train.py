"""The host-side loop: Keras' ``fit``, ``evaluate`` and ``predict`` over on-device data.

Everything traced lives in ``rnnjax.steps``; this module is Python control flow: epochs, early
stopping decisions, checkpoints, the history file and progress output.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import steps
from rnnjax.batches import epoch_indices
from rnnjax.checkpoint import Checkpoints
from rnnjax.early_stopping import EarlyStopping
from rnnjax.metrics import History, Metrics
from rnnjax.models import probabilities
from rnnjax.progress import Progress
from rnnjax.train_state import TrainState
from rnnjax.validation import check_batch_size, check_dataset, check_ids
from rnnjax.workdir import write_atomic

Arrays = tuple[np.ndarray, np.ndarray]  # (ids [N, T], labels [N])

_train_epoch = jax.jit(steps.train_epoch, donate_argnums=0)
_train_step = jax.jit(steps.train_step, donate_argnums=0)
_evaluate_epoch = jax.jit(steps.evaluate_epoch)
_gather_batch = jax.jit(steps.gather_batch)
_predict = jax.jit(lambda state, ids: probabilities(steps.predict_logits(state, ids)))


def to_device(arrays: Arrays) -> steps.Dataset:
    """Puts ``(ids [N, T], labels [N])`` on the default device once, for on-device batching."""
    ids, labels = arrays
    return {"ids": jnp.asarray(ids, jnp.int32), "label": jnp.asarray(labels)}


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` ends with. ``state`` holds the restored best weights when early stopping
    restores them; ``nan_at`` is ``(epoch, step)`` (1-based) when a non-finite loss ended it."""

    state: TrainState
    history: History
    early_stopping: EarlyStopping | None
    nan_at: tuple[int, int] | None = None


def _first_non_finite(step_losses: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(step_losses))
    return int(bad[0]) + 1 if bad.size else None


def _run_per_step(state, data, indices, weights, progress):
    """An epoch one jitted step at a time, for a live progress bar; stops at a non-finite loss."""
    totals = Metrics.zeros()
    step_losses = []
    for step in range(indices.shape[0]):
        batch = _gather_batch(data, indices[step], weights[step])
        state, metrics = _train_step(state, batch, steps.step_rng(state))
        totals = totals.merge(metrics)
        step_losses.append(float(metrics.loss_sum / jnp.maximum(metrics.count, 1.0)))
        progress.step_end(step + 1, totals.compute())
        if not math.isfinite(step_losses[-1]):
            break
    return state, totals, np.asarray(step_losses)


def fit(
    state: TrainState,
    train: Arrays,
    validation: Arrays | None = None,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    early_stopping: EarlyStopping | None = None,
    checkpoints: Checkpoints | None = None,
    checkpoint_config: dict | None = None,
    history_path: str | None = None,
    progress: Progress | None = None,
    per_step: bool = False,
    initial_epoch: int = 0,
    history: History = History(),
) -> FitResult:
    """Keras ``model.fit(x, y, validation_data=..., epochs, batch_size, callbacks=[...])``.

    Each epoch draws a fresh shuffled order from ``(seed, epoch)`` and runs ``ceil(N / batch_size)``
    steps, the last one partial (its padding has weight 0). By default the whole epoch is one
    compiled call; ``per_step=True`` dispatches step by step so a live bar can follow.

    Args:
      state: the initial ``TrainState``.
      train, validation: ``(ids [N, T] int, labels [N])`` numpy arrays.
      epochs: the last epoch to run (Keras' ``epochs``; with ``initial_epoch`` it resumes).
      batch_size: examples per step (validation uses the same).
      seed: the shuffling seed.
      early_stopping: Keras ``EarlyStopping`` record, or None.
      checkpoints: where to keep the best (by ``checkpoints.monitor``) and the latest checkpoint.
      checkpoint_config: JSON config stored with each checkpoint (to rebuild the model).
      history_path: ``history.json`` rewritten atomically after every epoch.
      progress: where progress goes (a quiet one when None).
      per_step: one dispatch per step instead of one per epoch.
      initial_epoch, history: where a resumed run continues.

    Returns:
      A ``FitResult``. Validation logs are prefixed ``val_``; every epoch also logs ``seconds``.
    """
    config = state.model.config
    batch_size = check_batch_size(batch_size)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train = check_dataset(train, config.vocab_size, config.num_classes, "training data")
    if validation is not None:
        validation = check_dataset(validation, config.vocab_size, config.num_classes,
                                   "validation data")
    # Epochs donate the state's buffers; copy once so the caller's state stays usable.
    state = jax.tree.map(jnp.copy, state)
    train_data = to_device(train)
    num_examples = len(train[0])
    val_data = val_indices = val_weights = None
    if validation is not None:
        val_data = to_device(validation)
        val_indices, val_weights = epoch_indices(len(validation[0]), batch_size, shuffle=False)
    num_steps = math.ceil(num_examples / batch_size)
    progress = progress or Progress(epochs, num_steps, quiet=True)
    best_params = None
    nan_at = None

    for epoch in range(initial_epoch, epochs):
        start = time.perf_counter()
        progress.epoch_begin(epoch)
        indices, weights = epoch_indices(num_examples, batch_size, seed=seed, epoch=epoch)
        if per_step:
            state, totals, step_losses = _run_per_step(state, train_data, indices, weights, progress)
        else:
            state, totals, step_losses = _train_epoch(state, train_data, indices, weights)
        bad_step = _first_non_finite(np.asarray(step_losses))
        if bad_step is not None:
            nan_at = (epoch + 1, bad_step)
            progress.print(f"Epoch {epoch + 1}, step {bad_step}: invalid loss, terminating training")
            break
        logs = totals.compute()
        if val_data is not None:
            logs |= _evaluate_epoch(state, val_data, val_indices, val_weights).compute("val_")
        logs["seconds"] = time.perf_counter() - start
        history = history.append(logs)

        if early_stopping is not None:
            early_stopping = early_stopping.update(epoch, logs)
            if early_stopping.improved and early_stopping.restore_best_weights:
                best_params = jax.tree.map(jnp.copy, state.params)  # the next epoch donates state
        if checkpoints is not None:
            if checkpoints.is_new_best(logs):
                checkpoints.save_best(epoch, state.params, logs, checkpoint_config or {})
            checkpoints.save_latest(epoch, state, _loop_state(epoch, history, early_stopping),
                                    checkpoint_config or {})
        if history_path is not None:
            write_atomic(history_path, history.to_json())
        progress.epoch_end({k: v for k, v in logs.items() if k != "seconds"})
        if early_stopping is not None and early_stopping.stop_training:
            break

    if early_stopping is not None:
        for line in early_stopping.messages():
            progress.print(line)
        if early_stopping.restores and best_params is not None:
            state = state.replace(params=best_params)
    return FitResult(state, history, early_stopping, nan_at)


def _loop_state(epoch: int, history: History, early_stopping: EarlyStopping | None) -> dict:
    return {
        "epoch": epoch,
        "history": list(history.epochs),
        "early_stopping": None if early_stopping is None else dataclasses.asdict(early_stopping),
    }


def evaluate(state: TrainState, data: Arrays, batch_size: int = 32) -> dict[str, float]:
    """Keras ``model.evaluate``: ``{"loss", "accuracy"}`` over ``data`` in inference mode."""
    config = state.model.config
    data = check_dataset(data, config.vocab_size, config.num_classes, "evaluation data")
    batch_size = check_batch_size(batch_size)
    indices, weights = epoch_indices(len(data[0]), batch_size, shuffle=False)
    return _evaluate_epoch(state, to_device(data), indices, weights).compute()


def predict(state: TrainState, ids: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Keras ``model.predict``: probabilities ``[N, C]`` (sigmoid or softmax of the logits)."""
    ids = check_ids(ids, state.model.config.vocab_size, "predict ids")
    batch_size = check_batch_size(batch_size)
    outputs = []
    for start in range(0, len(ids), batch_size):
        chunk = np.asarray(ids[start : start + batch_size])
        padded = np.zeros((batch_size, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk  # one compiled shape; the padding rows are dropped
        outputs.append(np.asarray(_predict(state, padded))[: len(chunk)])
    return np.concatenate(outputs)
