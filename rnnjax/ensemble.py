"""K models trained at once: one compiled program, ``jax.vmap`` over a stacked ``TrainState``.

Model ``k`` is the run a single ``fit`` would make with its own initial state and shuffling seed:
its own batch order, dropout masks, early-stopping record and best weights. Hyperparameters that
differ between the models live in their optimizer states: rnnjax's ``rmsprop``/``adam``/``sgd``
keep theirs there (``optax.inject_hyperparams``), so ``stack([state(lr) for lr in grid])`` is a
learning-rate grid. A model whose early stopping has fired, or whose loss stopped being finite,
stops updating (its state is carried unchanged); the run ends when every model has stopped.
Shape letter K: models.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rnnjax import objective, steps
from rnnjax.batches import IndexedBatches, batch_indices, num_examples, seed_key, to_device
from rnnjax.early_stopping import EarlyStopping, EarlyStoppingState
from rnnjax.progress import format_value
from rnnjax.train_state import TrainState
from rnnjax.validation import check_batch_size


def stack(states: Sequence[TrainState]) -> TrainState:
    """One ``TrainState`` whose leaves have a leading axis of K; the static fields (model,
    optimizer, objective) are the first state's, so the K states must share them — numbers that
    differ must be leaves (parameters, optimizer hyperparameters)."""
    treedef = jax.tree.structure(states[0])
    for index, state in enumerate(states[1:], 1):
        if jax.tree.structure(state).num_leaves != treedef.num_leaves:
            raise ValueError(f"state {index} has another structure than state 0; they cannot stack")
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


_BATCH_AXES = IndexedBatches(data=None, indices=0, valid=0)


@jax.jit
def _train_epochs(states, stats, active, batches, stop):
    new, stats, done = jax.vmap(steps.train_steps, in_axes=(0, 0, _BATCH_AXES, None, None))(
        states, stats, batches, 0, stop
    )
    return _select(active, new, states), stats, done


@jax.jit
def _evaluate(states, stats, batches, stop):
    return jax.vmap(steps.eval_steps, in_axes=(0, 0, None, None, None))(
        states, stats, batches, 0, stop
    )


@functools.partial(jax.jit, static_argnames=("n", "batch_size"))
def _epoch_indices(keys, epoch, n, batch_size):
    """``[K, S, B]`` indices and validity: every model shuffles with its own key."""
    return jax.vmap(lambda key: batch_indices(key, epoch, n=n, batch_size=batch_size))(keys)


@dataclasses.dataclass(frozen=True)
class EnsembleResult:
    """Per-model results: the stacked final state (best weights restored where early stopping
    restores them); per model its logs each epoch, its early-stopping record, and the
    ``(epoch, step)`` (1-based) of a non-finite loss that stopped it, or None."""

    state: TrainState
    histories: tuple[tuple[dict, ...], ...]
    early_stopping: tuple[EarlyStoppingState | None, ...]
    nan_at: tuple[tuple[int, int] | None, ...]


def fit_ensemble(
    states: TrainState,
    x: Any,
    y: Any,
    *,
    seeds: Sequence[int],
    epochs: int = 1,
    batch_size: int = 32,
    validation_data: tuple | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_config: dict | None = None,
    verbose: int = 1,
) -> EnsembleResult:
    """``fit`` for K models at once.

    Args:
      states: a stacked ``TrainState`` (``stack``) of K models.
      x, y: shared training arrays (pytrees ``[N, ...]``).
      seeds: K shuffling seeds, one per model (``fit``'s ``seed``).
      epochs, batch_size: as ``fit``.
      validation_data: shared ``(x, y)`` arrays, logged as ``val_*`` per model.
      early_stopping: an ``EarlyStopping`` whose settings every model follows with its own
        record (a loss or a metric whose direction ``mode="auto"`` knows).
      checkpoint_dir: keep the best weights of every model there, stacked
        (``<dir>/<epoch>/params``, each model's best epoch in ``config``), saved when any
        improves.
      checkpoint_config: JSON stored with them.
      verbose: 1 or 2: one line per epoch with the mean of the models' logs; 0 silent.

    Returns:
      An ``EnsembleResult``.
    """
    count = len(seeds)
    if jax.tree.leaves(states)[0].shape[0] != count:
        raise ValueError(f"{count} seeds for {jax.tree.leaves(states)[0].shape[0]} stacked models")
    batch_size = check_batch_size(batch_size)
    data = to_device({"x": x, "y": y})
    n = num_examples(data, "training data")
    batch_size = min(batch_size, n)
    num_steps = math.ceil(n / batch_size)
    validation = None
    if validation_data is not None:
        val = to_device({"x": validation_data[0], "y": validation_data[1]})
        val_n = num_examples(val, "validation data")
        val_size = min(batch_size, val_n)
        indices, valid = batch_indices(0, 0, n=val_n, batch_size=val_size, shuffle=False)
        validation = IndexedBatches(val, indices, valid)
    keys = jnp.stack([seed_key(seed) for seed in seeds])
    states = jax.tree.map(jnp.copy, states)
    example = IndexedBatches(data, *batch_indices(0, 0, n=n, batch_size=batch_size, shuffle=False))
    single = jax.tree.map(lambda leaf: leaf[0], states)
    zeros = steps.zero_stats(single, example)
    directions = objective.directions(zeros)
    stacked_zeros = jax.tree.map(lambda z: jnp.zeros((count, *z.shape), z.dtype), zeros)

    records: list[EarlyStoppingState | None] = [None] * count
    if early_stopping is not None:
        direction = _direction(early_stopping, directions)
        records = [EarlyStoppingState(direction=direction, **early_stopping._config)] * count
    histories: list[list[dict]] = [[] for _ in range(count)]
    nan_at: list[tuple[int, int] | None] = [None] * count
    active = np.ones(count, bool)
    best_params = states.params
    best_epochs: list[int | None] = [None] * count
    store = None if checkpoint_dir is None else _BestStore(checkpoint_dir)

    try:
        for epoch in range(epochs):
            start = time.perf_counter()
            if verbose and epochs > 1:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            indices, valid = _epoch_indices(keys, epoch, n=n, batch_size=batch_size)
            batches = IndexedBatches(data, indices, valid)
            states, stats, done = _train_epochs(
                states, stacked_zeros, jnp.asarray(active), batches, num_steps
            )
            logs = [_model_logs(stats, k) for k in range(count)]
            if validation is not None:
                val_stats = _evaluate(states, stacked_zeros, validation, validation.num_steps)
                for k in range(count):
                    logs[k] |= {f"val_{key}": v for key, v in _model_logs(val_stats, k).items()}
            seconds = time.perf_counter() - start
            done = np.asarray(done)
            improved = np.zeros(count, bool)
            for k in np.flatnonzero(active):
                if not math.isfinite(logs[k]["loss"]):  # TerminateOnNaN, per model
                    active[k] = False
                    nan_at[k] = (epoch + 1, int(done[k]))
                histories[k].append(logs[k] | {"seconds": seconds})
                if records[k] is not None:
                    records[k] = records[k].update(epoch, logs[k].get(early_stopping.monitor))
                    improved[k] = records[k].improved
                    if records[k].stop_training:
                        active[k] = False
                elif nan_at[k] is None:
                    improved[k] = True
            if improved.any():
                best_params = _select(jnp.asarray(improved), states.params, best_params)
                for k in np.flatnonzero(improved):
                    best_epochs[k] = epoch
                if store is not None:
                    store.save(epoch, best_params, best_epochs, checkpoint_config)
            if verbose:
                print(_mean_line(logs, active, seconds), flush=True)
            if not active.any():
                break
    finally:
        if store is not None:
            store.close()

    restore = np.asarray(
        [
            r is not None and early_stopping.restore_best_weights and r.best is not None
            for r in records
        ]
    )
    if restore.any():
        states = states.replace(params=_select(jnp.asarray(restore), best_params, states.params))
    return EnsembleResult(states, tuple(map(tuple, histories)), tuple(records), tuple(nan_at))


def _direction(early_stopping: EarlyStopping, directions: dict) -> str:
    if early_stopping.mode in ("min", "max"):
        return early_stopping.mode
    name = early_stopping.monitor.removeprefix("val_")
    if name.endswith("loss"):
        return "min"
    if directions.get(name) is None:
        raise ValueError(
            f"cannot infer whether {early_stopping.monitor!r} should go up or down; pass "
            "mode='min' or mode='max'"
        )
    return directions[name]


def _model_logs(stats, k: int) -> dict[str, float]:
    return objective.to_logs(objective.results(jax.tree.map(lambda leaf: leaf[k], stats)))


def _mean_line(logs: list[dict], active: np.ndarray, seconds: float) -> str:
    keys = sorted(k for k in logs[0] if np.ndim(logs[0][k]) == 0)
    means = {k: float(np.nanmean([log[k] for log in logs])) for k in keys}
    metrics = " - ".join(f"mean {k}: {format_value(v)}" for k, v in means.items())
    return f"{len(logs)} models ({int(active.sum())} training) - {seconds:.0f}s - {metrics}"


class _BestStore:
    """The stacked best weights of K models under one directory (the newest save kept)."""

    def __init__(self, directory: str):
        from rnnjax.checkpoint import _Store

        self._store = _Store(os.path.abspath(directory), max_to_keep=1)

    def save(self, epoch: int, params: Any, best_epochs: list, config: dict | None) -> None:
        items = {
            "params": ocp.args.StandardSave(jax.tree.map(jnp.copy, params)),
            "config": ocp.args.JsonSave({**(config or {}), "best_epochs": best_epochs}),
        }
        self._store.save(epoch, items)

    def close(self) -> None:
        self._store.close()
