"""The host-side loop: Keras' ``fit``, ``evaluate`` and ``predict`` over on-device data.

Everything traced lives in ``rnnjax.steps``; this module is Python control flow: epochs, early
stopping decisions, checkpoints, the history file and progress output.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rnnjax import steps
from rnnjax.batches import batch_indices, to_device
from rnnjax.checkpoint import Checkpoints
from rnnjax.early_stopping import EarlyStopping
from rnnjax.metrics import History, Metrics
from rnnjax.models import probabilities
from rnnjax.progress import Progress
from rnnjax.sharding import batch_sharding, replicate
from rnnjax.train_state import TrainState
from rnnjax.validation import check_batch_size, check_dataset, check_ids
from rnnjax.workdir import write_atomic

Arrays = tuple[np.ndarray, np.ndarray]  # (ids [N, T], labels [N])

_train_epoch = jax.jit(steps.train_epoch, donate_argnums=0, static_argnames="sharding")
_train_step = jax.jit(steps.train_step, donate_argnums=0)
_evaluate_epoch = jax.jit(steps.evaluate_epoch, static_argnames="sharding")
_make_batch = jax.jit(steps.make_batch, static_argnames="sharding")
_batch_indices = jax.jit(batch_indices, static_argnames=("n", "batch_size", "shuffle"))
_predict = jax.jit(lambda state, ids: probabilities(steps.predict_logits(state, ids)))


@dataclasses.dataclass(frozen=True)
class LoopState:
    """Where ``fit`` is, besides the ``TrainState``: what a resumed run needs to continue exactly.

    ``epoch`` is the epoch in progress (0-based) and ``step`` how many of its steps are done
    (non-zero only after an interrupt in per-step mode), with ``totals`` their metric sums.
    """

    epoch: int = 0
    step: int = 0
    totals: tuple[float, float, float] = (0.0, 0.0, 0.0)
    history: History = History()
    early_stopping: EarlyStopping | None = None

    def to_json(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "totals": list(self.totals),
            "history": list(self.history.epochs),
            "early_stopping": None
            if self.early_stopping is None
            else dataclasses.asdict(self.early_stopping),
        }

    @classmethod
    def from_json(cls, data: dict) -> LoopState:
        stopping = data.get("early_stopping")
        return cls(
            epoch=data["epoch"],
            step=data["step"],
            totals=tuple(data["totals"]),
            history=History(tuple(data["history"])),
            early_stopping=None if stopping is None else EarlyStopping(**stopping),
        )


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` ends with. ``state`` holds the restored best weights when early stopping
    restores them; ``nan_at`` is ``(epoch, step)`` (1-based) when a non-finite loss ended it;
    ``interrupted`` when ``should_stop`` asked it to stop (the latest checkpoint has the rest)."""

    state: TrainState
    history: History
    early_stopping: EarlyStopping | None
    nan_at: tuple[int, int] | None = None
    interrupted: bool = False


def _first_non_finite(step_losses: np.ndarray) -> int | None:
    bad = np.flatnonzero(~np.isfinite(step_losses))
    return int(bad[0]) + 1 if bad.size else None


def _totals(values: tuple[float, float, float]) -> Metrics:
    return Metrics(*(jnp.asarray(v, jnp.float32) for v in values))


def _run_per_step(
    state, data, indices, weights, totals, first_step, progress, should_stop, sharding
):
    """Steps ``first_step..S`` of an epoch, one jitted dispatch each, for a live progress bar.

    Stops after a non-finite loss, or after any step once ``should_stop()`` is true; returns the
    state, the epoch's running totals, the per-step losses and the number of steps done.
    """
    step_losses = []
    step = first_step
    while step < indices.shape[0]:
        batch = _make_batch(data, indices[step], weights[step], sharding)
        with steps.mesh_context(sharding):
            state, metrics = _train_step(state, batch, steps.step_rng(state))
        totals = totals.merge(metrics)
        step += 1
        step_losses.append(float(metrics.loss_sum / jnp.maximum(metrics.count, 1.0)))
        progress.step_end(step, totals.compute())
        if not math.isfinite(step_losses[-1]) or should_stop():
            break
    return state, totals, np.asarray(step_losses), step


def _placement(mesh: Mesh | None, batch_size: int):
    """``(place, batch sharding)``: identity and None on one device; replication and the batch
    split for a data-parallel mesh."""
    if mesh is None:
        return (lambda tree: tree), None
    if batch_size % mesh.size:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {mesh.size} devices")
    return (lambda tree: replicate(tree, mesh)), batch_sharding(mesh)


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
    resume: bool = False,
    history_path: str | None = None,
    progress: Progress | None = None,
    per_step: bool = False,
    should_stop=lambda: False,
    mesh: Mesh | None = None,
) -> FitResult:
    """Keras ``model.fit(x, y, validation_data=..., epochs, batch_size, callbacks=[...])``.

    Each epoch draws a fresh shuffled order from ``(seed, epoch)`` and runs ``ceil(N / batch_size)``
    steps, the last one partial (its padding has weight 0). By default the whole epoch is one
    compiled call; ``per_step=True`` dispatches step by step so a live bar can follow.

    Args:
      state: the initial ``TrainState`` (also the structure a resumed state is restored into).
      train, validation: ``(ids [N, T] int, labels [N])`` numpy arrays.
      epochs: the number of epochs (Keras' ``epochs``).
      batch_size: examples per step (validation uses the same).
      seed: the shuffling seed.
      early_stopping: Keras ``EarlyStopping`` record, or None.
      checkpoints: where to keep the best (by ``checkpoints.monitor``) and, after every epoch, the
        latest checkpoint (state, best weights, loop position, history).
      checkpoint_config: JSON config stored with each checkpoint (to rebuild the model).
      resume: continue from ``checkpoints``' latest checkpoint, when there is one. Shuffling and
        dropout depend only on the seed, epoch and step, so the result equals an uninterrupted run.
      history_path: ``history.json`` rewritten atomically after every epoch.
      progress: where progress goes (a quiet one when None).
      per_step: one dispatch per step instead of one per epoch.
      should_stop: polled after every step (per-step mode) or epoch; when it returns True the run
        saves the latest checkpoint and returns with ``interrupted=True`` (Ctrl-C handling).
      mesh: a ``sharding.data_mesh``: each batch is split over its devices, the state and data
        are replicated (``batch_size`` must divide evenly). Same results as one device.

    Returns:
      A ``FitResult``. Validation logs are prefixed ``val_``; every epoch also logs ``seconds``.
    """
    config = state.model.config
    batch_size = check_batch_size(batch_size)
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    train = check_dataset(train, config.vocab_size, config.num_classes, "training data")
    if validation is not None:
        validation = check_dataset(
            validation, config.vocab_size, config.num_classes, "validation data"
        )
    loop = LoopState(early_stopping=early_stopping)
    best_params = None
    if resume and checkpoints is not None and checkpoints.latest_step is not None:
        state, best_params, saved = checkpoints.restore_latest(state)
        loop = LoopState.from_json(saved)
    # Epochs donate the state's buffers; copy once so the caller's state stays usable.
    state = jax.tree.map(jnp.copy, state)
    place, split = _placement(mesh, batch_size)
    state = place(state)
    train_data = place(to_device(*train))
    num_examples = len(train[0])
    val_data = val_indices = val_weights = None
    if validation is not None:
        val_data = place(to_device(*validation))
        val_indices, val_weights = place(
            _batch_indices(0, 0, n=len(validation[0]), batch_size=batch_size, shuffle=False)
        )
    num_steps = math.ceil(num_examples / batch_size)
    progress = progress or Progress(epochs, num_steps, quiet=True)
    history, early_stopping = loop.history, loop.early_stopping
    nan_at = None
    interrupted = False

    def save_latest(position: LoopState) -> None:
        if checkpoints is not None:
            checkpoints.save_latest(
                int(state.step), state, best_params, position.to_json(), checkpoint_config or {}
            )

    for epoch in range(loop.epoch, epochs):
        start = time.perf_counter()
        progress.epoch_begin(epoch)
        indices, weights = place(_batch_indices(seed, epoch, n=num_examples, batch_size=batch_size))
        first_step = loop.step if epoch == loop.epoch else 0
        totals = _totals(loop.totals) if first_step else Metrics.zeros()
        if per_step:
            state, totals, step_losses, done = _run_per_step(
                state,
                train_data,
                indices,
                weights,
                totals,
                first_step,
                progress,
                should_stop,
                split,
            )
        else:
            state, epoch_totals, step_losses = _train_epoch(
                state, train_data, indices[first_step:], weights[first_step:], split
            )
            totals, done = totals.merge(epoch_totals), num_steps
        bad_step = _first_non_finite(np.asarray(step_losses))
        if bad_step is not None:
            nan_at = (epoch + 1, first_step + bad_step)
            progress.print(
                f"Epoch {epoch + 1}, step {nan_at[1]}: invalid loss "
                f"{step_losses[bad_step - 1]}, terminating training"
            )
            break
        if done < num_steps:  # interrupted inside the epoch
            totals_host = tuple(
                float(v)
                for v in jax.device_get((totals.loss_sum, totals.correct_sum, totals.count))
            )
            save_latest(LoopState(epoch, done, totals_host, history, early_stopping))
            interrupted = True
            break
        logs = totals.compute()
        if val_data is not None:
            logs |= _evaluate_epoch(state, val_data, val_indices, val_weights, split).compute(
                "val_"
            )
        logs["seconds"] = time.perf_counter() - start
        history = history.append(logs)

        if early_stopping is not None:
            early_stopping = early_stopping.update(epoch, logs)
            if early_stopping.improved and early_stopping.restore_best_weights:
                best_params = jax.tree.map(jnp.copy, state.params)  # the next epoch donates state
        if checkpoints is not None and checkpoints.is_new_best(logs):
            checkpoints.save_best(epoch, state.params, logs, checkpoint_config or {})
        save_latest(LoopState(epoch + 1, 0, (0.0, 0.0, 0.0), history, early_stopping))
        if history_path is not None:
            write_atomic(history_path, history.to_json())
        progress.epoch_end({k: v for k, v in logs.items() if k != "seconds"})
        if early_stopping is not None and early_stopping.stop_training:
            break
        if should_stop():
            interrupted = epoch + 1 < epochs
            break

    if early_stopping is not None and not interrupted:
        for line in early_stopping.messages():
            progress.print(line)
        if early_stopping.restores and best_params is not None:
            state = state.replace(params=best_params)
    return FitResult(state, history, early_stopping, nan_at, interrupted)


def evaluate(state: TrainState, data: Arrays, batch_size: int = 32) -> dict[str, float]:
    """Keras ``model.evaluate``: ``{"loss", "accuracy"}`` over ``data`` in inference mode."""
    config = state.model.config
    data = check_dataset(data, config.vocab_size, config.num_classes, "evaluation data")
    batch_size = check_batch_size(batch_size)
    indices, weights = _batch_indices(0, 0, n=len(data[0]), batch_size=batch_size, shuffle=False)
    return _evaluate_epoch(state, to_device(*data), indices, weights).compute()


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
