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
from rnnjax.batches import batch_indices, seed_key, steps_per_epoch, to_device
from rnnjax.checkpoint import Checkpoints
from rnnjax.early_stopping import EarlyStopping
from rnnjax.metrics import History, Metrics
from rnnjax.models import probabilities
from rnnjax.progress import Progress
from rnnjax.sharding import batch_sharding, replicate
from rnnjax.train_state import TrainState
from rnnjax.validation import check_batch_size, check_dataset, check_ids, check_loss
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
    ``stopped`` says why training ended for good ("early_stopping" or "nan", at ``nan_at``), so a
    resumed run that finds it only finishes. ``run`` identifies the schedule (batch size, seed,
    examples) a resumed run must share.
    """

    epoch: int = 0
    step: int = 0
    totals: tuple[float, float, float] = (0.0, 0.0, 0.0)
    history: History = History()
    early_stopping: EarlyStopping | None = None
    stopped: str | None = None
    nan_at: tuple[int, int] | None = None
    run: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "totals": list(self.totals),
            "history": list(self.history.epochs),
            "early_stopping": None
            if self.early_stopping is None
            else dataclasses.asdict(self.early_stopping),
            "stopped": self.stopped,
            "nan_at": self.nan_at,
            "run": self.run,
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
            stopped=data.get("stopped"),
            nan_at=None if data.get("nan_at") is None else tuple(data["nan_at"]),
            run=data.get("run", {}),
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


def _check_same_schedule(saved: dict, current: dict, directory: str) -> None:
    """A resumed run continues the saved one only with the same batches (size, seed, data)."""
    changed = [f"{k} {saved[k]} -> {current[k]}" for k in current if saved.get(k) != current[k]]
    if changed:
        raise ValueError(
            f"cannot resume the run in {directory}: its checkpoint was made with another "
            f"schedule ({', '.join(changed)}); resume with the same arguments or start a new run"
        )


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
      batch_size: examples per step (validation uses the same); larger than N means one batch.
      seed: the shuffling seed (any Python int).
      early_stopping: Keras ``EarlyStopping`` record, or None.
      checkpoints: where to keep the best (by ``checkpoints.monitor``) and, after every epoch, the
        latest checkpoint (state, best weights, loop position, history). Without ``resume`` it
        must hold no checkpoints yet.
      checkpoint_config: JSON config stored with each checkpoint (to rebuild the model).
      resume: continue from ``checkpoints``' newest intact latest checkpoint, when there is one.
        Shuffling and dropout depend only on the seed, epoch and step, so the result equals an
        uninterrupted run; a run that had already stopped (early stopping, a non-finite loss, or
        every epoch done) trains nothing more and only finishes. The batch size, seed and number
        of examples must be the checkpoint's.
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
    check_loss(state.loss, config.num_classes)
    train = check_dataset(train, config.vocab_size, config.num_classes, "training data")
    if validation is not None:
        validation = check_dataset(
            validation, config.vocab_size, config.num_classes, "validation data"
        )
    num_examples = len(train[0])
    schedule = {"batch_size": batch_size, "seed": int(seed), "examples": num_examples}
    loop = LoopState(early_stopping=early_stopping, run=schedule)
    # Weights that must outlive the epoch that made them (the next epoch donates the state): the
    # best checkpoint's and the ones early stopping restores (the same arrays when the same epoch).
    best = {"best_params": None, "restore_params": None}
    if checkpoints is not None:
        if resume:
            like = {name: state.params for name in best}
            restored = checkpoints.restore_latest(state, like)
            if restored is not None:
                state, arrays, saved = restored
                loop = LoopState.from_json(saved)
                _check_same_schedule(loop.run, schedule, checkpoints.directory)
                if loop.stopped is None and loop.epoch > epochs:
                    raise ValueError(
                        f"the run in {checkpoints.directory} has done {loop.epoch} epochs; "
                        f"resume it with epochs >= {loop.epoch}, not {epochs}"
                    )
                best.update(arrays)
                if best["restore_params"] is None and loop.early_stopping is not None:
                    best["restore_params"] = best["best_params"]
            checkpoints.reconcile_best(best["best_params"], checkpoint_config or {})
        elif checkpoints.latest_step is not None or checkpoints.best_epoch is not None:
            raise ValueError(
                f"{checkpoints.directory} holds another run's checkpoints; pass resume=True to "
                "continue it or use an empty directory"
            )
    # Epochs donate the state's buffers; copy once so the caller's state stays usable.
    state = jax.tree.map(jnp.copy, state)
    place, split = _placement(mesh, min(batch_size, num_examples))
    state = place(state)
    train_data = place(to_device(*train))
    shuffle_key = seed_key(seed)
    val_data = val_indices = val_weights = None
    if validation is not None:
        val_data = place(to_device(*validation))
        val_indices, val_weights = place(
            _batch_indices(
                seed_key(0), 0, n=len(validation[0]), batch_size=batch_size, shuffle=False
            )
        )
    num_steps = steps_per_epoch(num_examples, batch_size)
    progress = progress or Progress(epochs, num_steps, quiet=True)
    history, early_stopping = loop.history, loop.early_stopping
    nan_at, interrupted = loop.nan_at, False
    finished = loop.stopped is not None

    def save_latest(position: LoopState) -> None:
        if checkpoints is None:
            return
        arrays = {}
        if best["best_params"] is not None:
            arrays["best_params"] = best["best_params"]
        if best["restore_params"] is not None and best["restore_params"] is not best["best_params"]:
            arrays["restore_params"] = best["restore_params"]
        config = checkpoint_config or {}
        checkpoints.save_latest(int(state.step), state, arrays, position.to_json(), config)

    for epoch in range(loop.epoch, epochs if not finished else loop.epoch):
        start = time.perf_counter()
        progress.epoch_begin(epoch)
        indices, weights = place(
            _batch_indices(shuffle_key, epoch, n=num_examples, batch_size=batch_size)
        )
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
            if checkpoints is not None:
                checkpoints.seal()  # the last epoch's saves, while this one computes
            totals, done = totals.merge(epoch_totals), num_steps
        bad_step = _first_non_finite(np.asarray(step_losses))
        if bad_step is not None:
            nan_at = (epoch + 1, first_step + bad_step)
            save_latest(
                LoopState(
                    epoch, 0, (0.0, 0.0, 0.0), history, early_stopping, "nan", nan_at, schedule
                )
            )
            break
        if done < num_steps:  # interrupted inside the epoch
            totals_host = tuple(
                float(v)
                for v in jax.device_get((totals.loss_sum, totals.correct_sum, totals.count))
            )
            save_latest(LoopState(epoch, done, totals_host, history, early_stopping, run=schedule))
            interrupted = True
            break
        logs = totals.compute()
        if val_data is not None:
            logs |= _evaluate_epoch(state, val_data, val_indices, val_weights, split).compute(
                "val_"
            )
        logs["seconds"] = time.perf_counter() - start
        history = history.append(logs)

        snapshot = None  # one copy of this epoch's weights, shared by whoever keeps them
        if early_stopping is not None:
            early_stopping = early_stopping.update(epoch, logs)
            if early_stopping.improved and early_stopping.restore_best_weights:
                snapshot = jax.tree.map(jnp.copy, state.params)
                best["restore_params"] = snapshot
        if checkpoints is not None and checkpoints.is_new_best(logs):
            if snapshot is None:
                snapshot = jax.tree.map(jnp.copy, state.params)
            best["best_params"] = snapshot
            checkpoints.save_best(epoch, snapshot, logs, checkpoint_config or {})
        stopped = "early_stopping" if early_stopping and early_stopping.stop_training else None
        save_latest(
            LoopState(
                epoch + 1, 0, (0.0, 0.0, 0.0), history, early_stopping, stopped, None, schedule
            )
        )
        if history_path is not None:
            write_atomic(history_path, history.to_json())
        progress.epoch_end({k: v for k, v in logs.items() if k != "seconds"})
        if stopped:
            break
        if should_stop():
            interrupted = epoch + 1 < epochs
            break

    if history_path is not None:
        write_atomic(history_path, history.to_json())
    if nan_at is not None:
        progress.print(f"Epoch {nan_at[0]}, step {nan_at[1]}: invalid loss, terminating training")
    if early_stopping is not None and not interrupted:
        for line in early_stopping.messages():
            progress.print(line)
        if early_stopping.restores and best["restore_params"] is not None:
            state = state.replace(params=best["restore_params"])
    return FitResult(state, history, early_stopping, nan_at, interrupted)


def evaluate(state: TrainState, data: Arrays, batch_size: int = 32) -> dict[str, float]:
    """Keras ``model.evaluate``: ``{"loss", "accuracy"}`` over ``data`` in inference mode."""
    config = state.model.config
    check_loss(state.loss, config.num_classes)
    data = check_dataset(data, config.vocab_size, config.num_classes, "evaluation data")
    batch_size = check_batch_size(batch_size)
    indices, weights = _batch_indices(
        seed_key(0), 0, n=len(data[0]), batch_size=batch_size, shuffle=False
    )
    return _evaluate_epoch(state, to_device(*data), indices, weights).compute()


def predict(state: TrainState, ids: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Keras ``model.predict``: probabilities ``[N, C]`` (sigmoid or softmax of the logits)."""
    ids = check_ids(ids, state.model.config.vocab_size, "predict ids")
    batch_size = min(check_batch_size(batch_size), len(ids))
    outputs = []
    for start in range(0, len(ids), batch_size):
        chunk = np.asarray(ids[start : start + batch_size])
        padded = np.zeros((batch_size, *chunk.shape[1:]), chunk.dtype)
        padded[: len(chunk)] = chunk  # one compiled shape; the padding rows are dropped
        outputs.append(np.asarray(_predict(state, padded))[: len(chunk)])
    return np.concatenate(outputs)
