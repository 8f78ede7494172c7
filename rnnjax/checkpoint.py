"""Orbax checkpoints as callbacks: ``ModelCheckpoint`` (the best epoch's weights, Keras'
``save_best_only``) and ``BackupAndRestore`` (the whole run, for an exact resume), and
``load_model``.

Layout: ``<ModelCheckpoint dir>/<epoch>/`` holds ``params`` (and ``model_state`` when the model
has one), the monitored value as Orbax metrics and an optional JSON ``config`` that rebuilds the
model; ``<BackupAndRestore dir>/<step>/`` holds ``arrays`` (the ``TrainState``, the callbacks'
weights and a partial epoch's statistics, one Orbax item: fewer files per save, measured 0.5-1.3 s
less for a 41-epoch recipe) and ``loop`` (JSON: the loop's position and every callback's state);
the two newest are kept.

Integrity. Orbax writes each checkpoint in a temporary directory and renames it when complete, so
a crash mid-save leaves the previous one intact. After Orbax has committed a checkpoint, a
manifest (``rnnjax-manifest.json``: every file's size and SHA-256) is written into it, last and
atomically, by a thread that waits for the save; a checkpoint is trusted only when its manifest is
there and every file matches it: one without a manifest was cut short, one that differs was
damaged on disk. A resume falls back to the newest intact backup (removing newer, untrustworthy
ones and saying so); ``load_model`` refuses a damaged checkpoint with one line naming the file.

The best checkpoint is derived data: ``ModelCheckpoint``'s state (the best epoch, its value and
its weights) is part of the backup, so after any resume the directory is made to hold exactly
that epoch again — whether it was lost, damaged, or newer than the position resumed from.

Each callback claims its directory (``rnnjax.workdir.Claim``) for the length of ``fit``: a second
run writing there fails at once naming the holder.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from rnnjax.callbacks import Callback
from rnnjax.early_stopping import is_improvement
from rnnjax.train_state import TrainState
from rnnjax.workdir import Claim, write_atomic

MANIFEST = "rnnjax-manifest.json"
INCOMPLETE = "it has no manifest (its save did not finish)"


class CheckpointError(ValueError):
    """A checkpoint is damaged, incomplete or missing; the message names the path."""


def write_manifest(step_dir: str) -> None:
    """Records the size and SHA-256 of every file under ``step_dir`` in its manifest."""
    write_atomic(os.path.join(step_dir, MANIFEST), json.dumps(_digests(step_dir), indent=0))


def damage(step_dir: str) -> str | None:
    """Why the checkpoint in ``step_dir`` cannot be trusted, or None when it matches its
    manifest."""
    try:
        with open(os.path.join(step_dir, MANIFEST)) as f:
            expected = json.load(f)
    except FileNotFoundError:
        return INCOMPLETE
    except (OSError, ValueError) as error:
        return f"its manifest is unreadable ({error})"
    if not isinstance(expected, dict):
        return "its manifest is unreadable"
    actual = _digests(step_dir)
    for name, entry in expected.items():
        if name not in actual:
            return f"{os.path.join(step_dir, name)} is missing"
        if actual[name] != entry:
            return f"{os.path.join(step_dir, name)} differs from its checksum"
    return None


def _digests(step_dir: str) -> dict[str, list]:
    digests = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, step_dir)
            if relative == MANIFEST:
                continue
            sha = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    sha.update(block)
            digests[relative] = [os.path.getsize(path), sha.hexdigest()]
    return digests


class _Store:
    """One checkpoint directory: an Orbax manager, its claim, and the sealing of each save (the
    manifest written by a thread once Orbax has committed it). With several processes every one
    saves and restores (Orbax coordinates them); process 0 alone claims the directory and writes
    manifests."""

    def __init__(self, directory: str, **options: Any):
        self.directory = os.path.abspath(directory)
        self._primary = jax.process_index() == 0
        self._claim = Claim.hold(self.directory) if self._primary else None
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                create=True, cleanup_tmp_directories=True, **options
            ),
        )
        self._sealer: threading.Thread | None = None
        self._failure: BaseException | None = None

    def steps(self) -> list[int]:
        self.seal()
        return sorted(self.manager.all_steps())

    def step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def save(self, step: int, items: dict, metrics: dict | None = None) -> None:
        self.seal()
        if step in self.manager.all_steps():
            self.manager.delete(step)  # the same position saved again (a resumed interrupt)
        # Orbax serializes JSON items in its background thread, after ``save`` returns; the
        # callers' live lists (History's epochs, the best epochs) would by then hold the next
        # epoch too. A snapshot taken now is what this step saves.
        items = {
            name: ocp.args.JsonSave(json.loads(json.dumps(arg.item)))
            if isinstance(arg, ocp.args.JsonSave)
            else arg
            for name, arg in items.items()
        }
        # ``force``: without it Orbax skips, silently, a step at or below the newest one on disk,
        # which a later ``fit`` of a ModelCheckpoint (or one replacing another run's
        # checkpoints) saves. ``max_to_keep`` keeps the newest saves in the order they were made.
        self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)

        def seal_when_committed():
            try:
                self.manager.wait_until_finished()
                # max_to_keep may already have removed it.
                if self._primary and os.path.isdir(self.step_dir(step)):
                    write_manifest(self.step_dir(step))
            except BaseException as error:  # raised where the run waits for it (``seal``)
                self._failure = error

        self._sealer = threading.Thread(target=seal_when_committed, daemon=True)
        self._sealer.start()

    def seal(self) -> None:
        """Waits until the last save is committed and its manifest written; raises what made
        it fail (a full disk, say)."""
        if self._sealer is not None:
            self._sealer.join()
            self._sealer = None
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure

    def delete(self, step: int) -> None:
        self.seal()
        self.manager.delete(step)

    def restore(self, step: int, items: dict) -> dict:
        self.seal()
        return self.manager.restore(step, args=ocp.args.Composite(**items))

    def close(self) -> None:
        try:
            self.seal()
            self.manager.wait_until_finished()
        finally:
            self.manager.close()
            if self._claim is not None:
                self._claim.release()


def _abstract(tree: Any) -> Any:
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class ModelCheckpoint(Callback):
    """``keras.callbacks.ModelCheckpoint`` saving the weights into ``directory/<epoch>/``.

    ``save_best_only=True`` keeps only the best epoch by ``monitor`` (Keras' rule: the first epoch
    always saves, even NaN; later ones when strictly better than the best so far, or
    ``initial_value_threshold``; a missing monitor warns once and saves); otherwise the newest
    epoch is kept. As in Keras, ``best`` is kept across ``fit`` calls of one instance: a later
    ``fit`` saves only what beats it, and its save replaces the earlier one. ``config`` (JSON)
    is stored beside the weights so ``load_model`` can rebuild the model; a run's experiment
    config does this. ``verbose=1`` prints Keras' messages.

    A directory holding another run's checkpoints is an error before the first epoch, unless a
    restored ``BackupAndRestore`` claims them (then the directory is made to hold exactly the
    restored best epoch) or ``overwrite=True`` (they are replaced as epochs end).
    """

    def __init__(
        self,
        directory: str,
        monitor: str = "val_loss",
        verbose: int = 0,
        save_best_only: bool = False,
        mode: str = "auto",
        initial_value_threshold: float | None = None,
        config: dict | None = None,
        overwrite: bool = False,
    ):
        self.directory = os.path.abspath(directory)
        self.overwrite = overwrite
        self.monitor, self.verbose, self.mode = monitor, verbose, mode
        self.save_best_only = save_best_only
        self.initial_value_threshold = initial_value_threshold
        self.config = config
        self.best = initial_value_threshold
        self.best_epoch: int | None = None
        self._best_params: Any = None
        self._best_model_state: Any = None
        self._store: _Store | None = None
        self._foreign: list[int] = []
        self._warned = False

    def on_train_begin(self, logs=None):
        self._direction = self.loop.monitor_direction(self.monitor, self.mode)
        # The callback saves only what it keeps (with save_best_only, improvements only): the
        # newest save is the one to keep, and it replaces the previous one once committed.
        self._store = _Store(self.directory, max_to_keep=1)
        # Keras keeps ``best`` across ``fit`` calls of one instance, so the directory may hold
        # this instance's own epoch. Others are another run's: an error, unless a restored
        # backup claims them or ``overwrite`` says to replace them.
        own = [] if self.best_epoch is None else [self.best_epoch]
        self._foreign = [] if self.overwrite else [s for s in self._store.steps() if s not in own]

    def on_epoch_begin(self, epoch, logs=None):
        if self._foreign:
            raise ValueError(
                f"{self.directory} holds another run's checkpoints (epochs "
                f"{', '.join(str(s + 1) for s in self._foreign)}); resume that run "
                "(BackupAndRestore, --resume) or use an empty directory"
            )

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        current = logs.get(self.monitor)
        if self.save_best_only:
            if current is None:
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"Can save best model only with {self.monitor} available; the logs "
                        f"have {', '.join(sorted(logs))}",
                        stacklevel=2,
                    )
            elif not is_improvement(float(current), self.best, self._direction, 0.0):
                if self.verbose and self.loop.primary:
                    print(
                        f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}"
                    )
                return
            if self.verbose and self.loop.primary:
                previous = "None" if self.best is None else f"{self.best:.5f}"
                print(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from {previous} to "
                    f"{float(current):.5f}, saving model to {self.directory}/{epoch}"
                )
        if current is not None:
            self.best = float(current)
        self.best_epoch = epoch
        self._best_params, self._best_model_state = self.loop.snapshot_weights()
        self._save()

    def _save(self):
        items = {"params": ocp.args.StandardSave(self._best_params)}
        if jax.tree.leaves(self._best_model_state):
            items["model_state"] = ocp.args.StandardSave(self._best_model_state)
        if self.config is not None:
            items["config"] = ocp.args.JsonSave(self.config)
        value = float("nan") if self.best is None else self.best
        self._store.save(self.best_epoch, items, metrics={self.monitor: value})

    def on_train_end(self, logs=None):
        self.release()

    def release(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def checkpoint_state(self) -> dict:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "warned": self._warned,
            "params": self._best_params,
            "model_state": self._best_model_state or None,
        }

    def restore_state(self, state):
        """Takes the resumed position's best epoch back and makes the directory hold exactly it:
        other epochs (saved after that position) are removed, a lost or damaged one rewritten."""
        self.best, self.best_epoch, self._warned = (
            state["best"],
            state["best_epoch"],
            state["warned"],
        )
        self._best_params = state["params"]
        self._best_model_state = state["model_state"] or {}
        self._foreign = []
        for step in self._store.steps():
            if step != self.best_epoch or damage(self._store.step_dir(step)) is not None:
                self._store.delete(step)
        if self.best_epoch is not None and self.best_epoch not in self._store.steps():
            self._save()


class BackupAndRestore(Callback):
    """``keras.callbacks.BackupAndRestore``, exact: after every epoch (and at an interrupt inside
    one) it saves the ``TrainState``, the loop's position, the partial epoch's statistics and
    every callback's ``checkpoint_state`` into ``directory/<step>/``; at the start of ``fit`` it
    restores the newest intact backup, so the run continues as if never stopped (shuffling and
    dropout depend only on the seed, epoch and step). A run that had stopped (early stopping, a
    non-finite loss) or done every epoch only finishes; a larger ``epochs`` extends a run that
    used its budget. The backup is kept at the end (``--resume`` after a finished run rewrites
    the same outputs).

    Raises (from ``fit``):
      CheckpointError: backups exist, none is intact, and some are damaged; or the backup is
        in the layout of an earlier rnnjax (one Orbax item per array tree).
      ValueError: the backup was made with another batch size, seed or data size.
    """

    order = 20

    def __init__(self, directory: str, keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.directory = os.path.abspath(directory)
        self.keep = keep
        self._store: _Store | None = None
        self.restored_step: int | None = None

    def on_train_begin(self, logs=None):
        self._store = _Store(self.directory, max_to_keep=self.keep)
        self.restored_step = None
        step = self._newest_intact()
        if step is not None:
            self._restore(step)

    def _newest_intact(self) -> int | None:
        steps = sorted(self._store.steps(), reverse=True)
        untrusted = {}
        for step in steps:
            reason = damage(self._store.step_dir(step))
            if reason is None:
                break
            untrusted[step] = reason
        else:
            step = None
        base = os.path.basename(self.directory)
        if untrusted and step is None and any(r != INCOMPLETE for r in untrusted.values()):
            raise CheckpointError(
                f"no intact checkpoint to resume from under {self.directory}: "
                f"{'; '.join(f'{base}/{s}: {r}' for s, r in untrusted.items())}; start a new "
                "run (another --workdir)"
            )
        for bad in untrusted:
            self._store.delete(bad)
        if untrusted:
            removed = "; ".join(f"{base}/{s} ({r})" for s, r in untrusted.items())
            start = f"resuming from {base}/{step}" if step is not None else "starting over"
            warnings.warn(f"{start}; removed {removed}", stacklevel=3)
        return step  # None: only saves that never finished, so the run starts from its beginning

    def _restore(self, step: int) -> None:
        loop = self.loop
        if not os.path.isdir(os.path.join(self._store.step_dir(step), "arrays")):
            raise CheckpointError(
                f"{self._store.step_dir(step)} is a backup in the layout of an earlier rnnjax "
                "(one item per array tree); resume it with that version, or start a new run "
                "(another --workdir)"
            )
        saved = self._store.restore(step, {"loop": ocp.args.JsonRestore()})["loop"]
        _check_schedule(saved["schedule"], loop.schedule, self.directory)
        if not saved["stop_training"] and saved["epoch"] > loop.epochs:
            raise ValueError(
                f"the run in {self.directory} has done {saved['epoch']} epochs; resume it with "
                f"epochs >= {saved['epoch']}, not {loop.epochs}"
            )
        _check_same_model(os.path.join(self._store.step_dir(step), "arrays"), loop.state)
        like = {"state": _abstract(loop.state)}
        params_like = _abstract(loop.state.params)
        model_state_like = _abstract(loop.state.model_state)
        for name in saved["arrays"]:
            like[name] = model_state_like if name.startswith("model_state") else params_like
        if saved["epoch_stats"]:
            like["epoch_stats"] = _abstract(loop.epoch_stats)
        restored = self._store.restore(step, {"arrays": ocp.args.StandardRestore(like)})["arrays"]
        loop.state = restored["state"]
        loop.epoch, loop.step = saved["epoch"], saved["step"]
        loop.stop_training = saved["stop_training"]
        if saved["epoch_stats"]:
            loop.epoch_stats = restored["epoch_stats"]
        arrays = {name: restored[name] for name in saved["arrays"]}
        by_key = _callback_keys(loop.callbacks)
        missing = sorted(set(saved["callbacks"]) - set(by_key))
        if missing:
            raise ValueError(
                f"cannot resume the run in {self.directory}: it was saved with callbacks this "
                f"run lacks ({', '.join(missing)}); resume with the same callbacks"
            )
        for key, state in saved["callbacks"].items():
            by_key[key].restore_state(_unpack(state, arrays))
        self.restored_step = step

    def on_epoch_end(self, epoch, logs=None):
        self._save(position=(epoch + 1, 0), epoch_stats=None)

    def on_train_end(self, logs=None):
        if self.loop.interrupted:  # inside an epoch: its position and partial statistics
            self._save(
                position=(self.loop.epoch, self.loop.step), epoch_stats=self.loop.epoch_stats
            )
        self.release()

    def release(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def _save(self, position: tuple[int, int], epoch_stats: Any) -> None:
        loop = self.loop
        arrays: dict[str, Any] = {}
        callbacks = {}
        for key, callback in _callback_keys(loop.callbacks).items():
            state = callback.checkpoint_state()
            if state:
                callbacks[key] = _pack(state, arrays)
        trees = {"state": loop.state, **arrays}
        if epoch_stats is not None:
            trees["epoch_stats"] = epoch_stats
        items = {
            "arrays": ocp.args.StandardSave(trees),
            "loop": ocp.args.JsonSave(
                {
                    "epoch": position[0],
                    "step": position[1],
                    "stop_training": loop.stop_training,
                    "schedule": loop.schedule,
                    "epoch_stats": epoch_stats is not None,
                    "arrays": sorted(arrays),
                    "callbacks": callbacks,
                }
            ),
        }
        self._store.save(int(loop.state.step), items)

    def checkpoint_state(self) -> dict:
        return {}


def _check_same_model(arrays_dir: str, state: TrainState) -> None:
    """A backup restores only into the model and optimizer that made it: every parameter and
    optimizer array at the same place with the same shape (Orbax's own errors say neither)."""
    saved = ocp.StandardCheckpointHandler().metadata(epath.Path(arrays_dir)).tree["state"]
    changed = []
    for part in ("params", "opt_state"):
        before, now = _shapes(saved[part]), _shapes(getattr(state, part))
        for path in sorted(before.keys() | now.keys()):
            if before.get(path) != now.get(path):
                changed.append(
                    f"{part}{path}: {before.get(path, 'absent')} -> {now.get(path, 'absent')}"
                )
    if changed:
        raise CheckpointError(
            f"the backup in {os.path.dirname(os.path.dirname(arrays_dir))} was made with another "
            f"model or optimizer ({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}); "
            "resume with the same model and optimizer, or start a new run (another directory)"
        )


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of a tree's arrays; paths spelled alike for dicts, named tuples and
    lists (Orbax's metadata holds the state's named tuples as dicts)."""
    shapes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, "shape"):
            names = (getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)
            shapes["".join(f"[{name}]" for name in names)] = tuple(leaf.shape)
    return shapes


def _callback_keys(callbacks: list[Callback]) -> dict[str, Callback]:
    """Callbacks by class name (``EarlyStopping``, a second one ``EarlyStopping_1``, ...), so a
    resumed run finds each saved state's callback by what it is, not where it stands."""
    keys: dict[str, Callback] = {}
    for callback in callbacks:
        name = type(callback).__name__
        count = sum(1 for k in keys if k == name or k.startswith(f"{name}_"))
        keys[name if count == 0 else f"{name}_{count}"] = callback
    return keys


def _is_tree_of_arrays(value: Any) -> bool:
    leaves = jax.tree.leaves(value)
    return bool(leaves) and all(isinstance(x, (jax.Array, np.ndarray)) for x in leaves)


def _pack(state: dict, arrays: dict) -> dict:
    """``state`` with its array pytrees moved into ``arrays`` (once per object: callbacks that
    keep the same epoch's weights share one copy) and replaced by references."""
    packed = {}
    for key, value in state.items():
        if isinstance(value, dict | list | tuple) and _is_tree_of_arrays(value):
            prefix = "model_state" if key == "model_state" else "params"
            name = next((n for n, tree in arrays.items() if tree is value), None)
            if name is None:
                name = f"{prefix}_{len(arrays)}"
                arrays[name] = value
            packed[key] = {"$arrays": name}
        else:
            packed[key] = value
    return packed


def _unpack(state: dict, restored: dict) -> dict:
    return {
        key: restored[value["$arrays"]] if isinstance(value, dict) and "$arrays" in value else value
        for key, value in state.items()
    }


def _check_schedule(saved: dict, current: dict, directory: str) -> None:
    """A resumed run continues the saved one only with the same batches (size, seed, data)."""
    changed = [f"{k} {saved.get(k)} -> {current[k]}" for k in current if saved.get(k) != current[k]]
    if changed:
        raise ValueError(
            f"cannot resume the run in {directory}: its checkpoint was made with another "
            f"schedule ({', '.join(changed)}); resume with the same arguments or start a new run"
        )


def load_model(directory: str, state: TrainState | None = None) -> TrainState:
    """``keras.models.load_model``: the newest (the best, with ``save_best_only``) checkpoint of a
    ``ModelCheckpoint`` directory, as a ``TrainState`` that ``evaluate`` and ``predict`` take.
    Reads only; never writes.

    Args:
      directory: a ``ModelCheckpoint`` directory, or a run's ``checkpoints/`` (its ``best/``).
      state: restore the weights into this state (a custom model's: any structure); without it
        the checkpoint's ``config`` must describe an experiment (``rnnjax.experiment``), which
        rebuilds the model, its optimizer, loss and metrics.

    Raises:
      CheckpointError: no checkpoint, or it is incomplete or damaged.
    """
    directory = os.path.abspath(directory)
    if os.path.isdir(os.path.join(directory, "best")):
        directory = os.path.join(directory, "best")
    steps = sorted(int(name) for name in _listdir(directory) if name.isdigit())
    if not steps:
        raise CheckpointError(
            f"no checkpoint under {directory!r}; pass a ModelCheckpoint directory or a run's "
            "checkpoints/"
        )
    step_dir = os.path.join(directory, str(steps[-1]))
    reason = damage(step_dir)
    if reason is not None:
        raise CheckpointError(
            f"the checkpoint {step_dir} cannot be trusted: {reason}; resume the run "
            "(--resume) to rewrite it from its latest backup"
        )
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        if state is None:
            if not os.path.isdir(os.path.join(step_dir, "config")):
                raise CheckpointError(
                    f"{step_dir} has no config to rebuild the model from; pass the model's "
                    "state: load_model(directory, state)"
                )
            config = checkpointer.restore(
                step_dir, args=ocp.args.Composite(config=ocp.args.JsonRestore())
            )["config"]
            from rnnjax.experiment import Experiment, create_state  # the recipe's model

            experiment = Experiment.from_dict(config)
            state = create_state(experiment, experiment.train.seed)
        items = {"params": ocp.args.StandardRestore(_abstract(state.params))}
        has_model_state = os.path.isdir(os.path.join(step_dir, "model_state"))
        if has_model_state:
            items["model_state"] = ocp.args.StandardRestore(_abstract(state.model_state))
        restored = checkpointer.restore(step_dir, args=ocp.args.Composite(**items))
    finally:
        checkpointer.close()
    model_state = restored["model_state"] if has_model_state else state.model_state
    return state.replace(params=restored["params"], model_state=model_state)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
