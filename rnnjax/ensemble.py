"""K models trained at once: one compiled program, ``jax.vmap`` over a stacked ``TrainState``.

Model ``k`` is the run a single ``fit`` would make with its own initial state and shuffling seed:
its own batch order, dropout masks, early-stopping record and best weights. A model whose early
stopping has fired stops updating (its state is carried unchanged); the run ends when every model
has stopped. Shape letter K: models.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import steps
from rnnjax.batches import batch_indices, seed_key, to_device
from rnnjax.early_stopping import EarlyStopping
from rnnjax.metrics import History, Metrics
from rnnjax.progress import Progress
from rnnjax.train_state import TrainState
from rnnjax.validation import check_batch_size, check_dataset

Arrays = tuple[np.ndarray, np.ndarray]


def stack(states: Sequence[TrainState]) -> TrainState:
    """One ``TrainState`` whose leaves have a leading axis of K; the static fields (model,
    optimizer, loss) are the first state's, so the K states must share them — hyperparameters
    that differ must live in the optimizer state (``optax.inject_hyperparams``)."""
    treedef = jax.tree.structure(states[0])
    per_state = [jax.tree.leaves(state) for state in states]
    return jax.tree.unflatten(treedef, [jnp.stack(leaves) for leaves in zip(*per_state)])


def unstack(stacked: TrainState) -> list[TrainState]:
    """The K single states of a stacked one."""
    count = jax.tree.leaves(stacked)[0].shape[0]
    return [jax.tree.map(lambda leaf, k=k: leaf[k], stacked) for k in range(count)]


def _select(keep_new: jax.Array, new, old):
    """Per model: ``new`` where ``keep_new[k]``, else ``old``."""

    def pick(n, o):
        return jnp.where(keep_new.reshape(keep_new.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def _model(totals: Metrics, k: int) -> Metrics:
    return jax.tree.map(lambda leaf: leaf[k], totals)


@jax.jit
def _train_epochs(states, active, data, indices, weights):
    new, totals, step_losses = jax.vmap(steps.train_epoch, in_axes=(0, None, 0, 0))(
        states, data, indices, weights
    )
    return _select(active, new, states), totals, step_losses


_evaluate = jax.jit(jax.vmap(steps.evaluate_epoch, in_axes=(0, None, None, None)))


@functools.partial(jax.jit, static_argnames=("n", "batch_size"))
def _epoch_indices(seeds, epoch, n, batch_size):
    """``[K, S, B]`` indices and weights: every model shuffles with its own seed."""
    return jax.vmap(lambda seed: batch_indices(seed, epoch, n=n, batch_size=batch_size))(seeds)


_val_indices = jax.jit(batch_indices, static_argnames=("n", "batch_size", "shuffle"))


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    """Per-model results: the stacked final state (best weights restored where early stopping
    restores them), one ``History`` and one ``EarlyStopping`` record per model, and per model the
    ``(epoch, step)`` (1-based) of a non-finite loss that stopped it, or None."""

    state: TrainState
    histories: tuple[History, ...]
    early_stopping: tuple[EarlyStopping, ...]
    nan_at: tuple[tuple[int, int] | None, ...]


def fit_ensemble(
    states: TrainState,
    train: Arrays,
    validation: Arrays | None = None,
    *,
    seeds: Sequence[int],
    epochs: int = 1,
    batch_size: int = 32,
    early_stopping: EarlyStopping | None = None,
    progress: Progress | None = None,
) -> EnsembleResult:
    """``fit`` for K models at once.

    Args:
      states: a stacked ``TrainState`` (``stack``) of K models.
      train, validation: shared ``(ids [N, T], labels [N])`` numpy arrays.
      seeds: K shuffling seeds, one per model (``fit``'s ``seed``).
      epochs, batch_size: as ``fit``.
      early_stopping: the rule every model follows, each with its own record.
      progress: one line per epoch with the mean of the K models' logs.

    Returns:
      An ``EnsembleResult``.
    """
    config = states.model.config
    batch_size = check_batch_size(batch_size)
    train = check_dataset(train, config.vocab_size, config.num_classes, "training data")
    count = len(seeds)
    if jax.tree.leaves(states)[0].shape[0] != count:
        raise ValueError(f"{count} seeds for {jax.tree.leaves(states)[0].shape[0]} stacked models")
    train_data = to_device(*train)
    num_examples = len(train[0])
    val_args = None
    if validation is not None:
        validation = check_dataset(
            validation, config.vocab_size, config.num_classes, "validation data"
        )
        val_args = (
            to_device(*validation),
            *_val_indices(0, 0, n=len(validation[0]), batch_size=batch_size, shuffle=False),
        )
    progress = progress or Progress(epochs, math.ceil(num_examples / batch_size), quiet=True)
    states = jax.tree.map(jnp.copy, states)
    records = [early_stopping] * count if early_stopping is not None else [None] * count
    histories = [History()] * count
    active = np.ones(count, bool)
    nan_at: list[tuple[int, int] | None] = [None] * count
    best_params = states.params
    seeds_array = jnp.stack([seed_key(seed) for seed in seeds])

    for epoch in range(epochs):
        start = time.perf_counter()
        progress.epoch_begin(epoch)
        indices, weights = _epoch_indices(seeds_array, epoch, n=num_examples, batch_size=batch_size)
        states, totals, step_losses = _train_epochs(
            states, jnp.asarray(active), train_data, indices, weights
        )
        step_losses = np.asarray(step_losses)
        finite = np.isfinite(step_losses).all(axis=1)
        logs = [_model(totals, k).compute() for k in range(count)]
        if val_args is not None:
            val_totals = _evaluate(states, *val_args)
            for k in range(count):
                logs[k] |= _model(val_totals, k).compute("val_")
        seconds = time.perf_counter() - start
        improved = np.zeros(count, bool)
        for k in np.flatnonzero(active):
            if not finite[k]:  # TerminateOnNaN, per model; the epoch is not recorded
                active[k] = False
                nan_at[k] = (epoch + 1, int(np.argmin(np.isfinite(step_losses[k]))) + 1)
                continue
            histories[k] = histories[k].append(logs[k] | {"seconds": seconds})
            if records[k] is not None:
                records[k] = records[k].update(epoch, logs[k])
                improved[k] = records[k].improved and records[k].restore_best_weights
                active[k] = not records[k].stop_training
        if improved.any():
            best_params = _select(jnp.asarray(improved), states.params, best_params)
        progress.epoch_end(
            {key: float(np.mean([logs[k][key] for k in range(count)])) for key in logs[0]}
        )
        if not active.any():
            break

    restore = np.asarray([r is not None and r.restores for r in records])
    if restore.any():
        states = states.replace(params=_select(jnp.asarray(restore), best_params, states.params))
    return EnsembleResult(states, tuple(histories), tuple(records), tuple(nan_at))


def evaluate_ensemble(states: TrainState, data: Arrays, batch_size: int = 32) -> list[dict]:
    """``evaluate`` for each of K stacked models: K dicts of loss and accuracy."""
    config = states.model.config
    data = check_dataset(data, config.vocab_size, config.num_classes, "evaluation data")
    indices, weights = _val_indices(
        0, 0, n=len(data[0]), batch_size=check_batch_size(batch_size), shuffle=False
    )
    totals = _evaluate(states, to_device(*data), indices, weights)
    count = jax.tree.leaves(states)[0].shape[0]
    return [_model(totals, k).compute() for k in range(count)]
