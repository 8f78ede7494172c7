"""Orbax checkpoints of a run: the best by the monitored metric and the latest, with the config.

``<dir>/best/<epoch>/``: the parameters of the best epoch so far (Keras
``ModelCheckpoint(save_best_only=True)``), with the monitored value as Orbax metrics.
``<dir>/latest/<step>/``: the whole ``TrainState``, the best epoch's parameters and the host-side
loop state, for resuming; the two newest are kept. Both hold the run's config as JSON, so
``load_model(dir)`` rebuilds the model from the directory alone.

Integrity. Orbax writes each checkpoint in a temporary directory and renames it when complete, so
a crash mid-save leaves the previous one intact. After Orbax has committed a checkpoint, a
manifest (``rnnjax-manifest.json``: every file's size and SHA-256) is written into it, last and
atomically. A checkpoint is trusted only when its manifest is there and every file matches it:
one without a manifest was cut short, one that differs was damaged on disk. Resuming falls back
to the newest intact latest checkpoint (removing newer, untrustworthy ones and saying so);
``load_model`` refuses a damaged best checkpoint with one line naming the file.

The best checkpoint is derived data: the latest checkpoint records which epoch is best and
carries its parameters, so after any resume ``reconcile_best`` makes ``best/`` hold exactly that
epoch — whether it was lost, damaged, or newer than the position resumed from.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from typing import Any

import jax
import orbax.checkpoint as ocp

from rnnjax.early_stopping import is_improvement
from rnnjax.models import Classifier, ModelConfig, init_params
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


def _manager(directory: str, **options: Any) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=True, cleanup_tmp_directories=True, **options),
    )


class Checkpoints:
    """The best and latest checkpoints of one run directory, which it holds exclusively (a second
    ``Checkpoints`` on the same directory in another process fails) until ``close()``."""

    def __init__(
        self,
        directory: str,
        monitor: str = "val_loss",
        direction: str = "min",
        keep_latest: int = 2,
    ):
        if keep_latest < 1:
            raise ValueError(f"keep_latest must be >= 1, got {keep_latest}")
        self.directory = os.path.abspath(directory)
        self.monitor = monitor
        self.direction = direction
        self._claim = Claim.hold(self.directory)
        self._best = _manager(
            os.path.join(self.directory, "best"),
            max_to_keep=1,
            best_fn=lambda metrics: metrics[monitor],
            best_mode=direction,
        )
        self._latest = _manager(os.path.join(self.directory, "latest"), max_to_keep=keep_latest)
        self._unsealed: list[tuple[ocp.CheckpointManager, int]] = []
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self._warned_missing = False

    @property
    def latest_step(self) -> int | None:
        """Optimizer steps of the newest latest checkpoint (None before the first save)."""
        return self._latest.latest_step()

    def is_new_best(self, logs: dict[str, float]) -> bool:
        """Keras ``ModelCheckpoint(save_best_only=True)``: the first epoch always saves, later
        ones only when strictly better than the best saved; a missing metric saves anyway (with
        a warning, once)."""
        current = logs.get(self.monitor)
        if current is None:
            if not self._warned_missing:
                self._warned_missing = True
                warnings.warn(
                    f"Can save best model only with {self.monitor} available; the logs have "
                    f"{', '.join(sorted(logs))}",
                    stacklevel=2,
                )
            return True
        return is_improvement(current, self.best_value, self.direction, 0.0)

    def save_best(self, epoch: int, params: Any, logs: dict[str, float], config: dict) -> None:
        self.seal()
        self.best_epoch = epoch
        self.best_value = float(logs.get(self.monitor, float("nan")))
        self._best.save(
            epoch,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), config=ocp.args.JsonSave(config)
            ),
            metrics={self.monitor: self.best_value},
        )
        self._unsealed.append((self._best, epoch))

    def save_latest(
        self, step: int, state: Any, arrays: dict[str, Any], loop: dict, config: dict
    ) -> None:
        """``state``: the ``TrainState`` pytree; ``arrays``: named pytrees (best weights) saved
        beside it; ``loop``: JSON host state (position, history, early stopping, the best
        checkpoint's epoch and value)."""
        self.seal()
        if step in self._latest.all_steps():
            self._latest.delete(step)  # the same position saved again (a resumed interrupt)
        items = dict(
            state=ocp.args.StandardSave(state),
            loop=ocp.args.JsonSave(loop | {"best_checkpoint": [self.best_epoch, self.best_value]}),
            config=ocp.args.JsonSave(config),
        )
        items.update({name: ocp.args.StandardSave(tree) for name, tree in arrays.items()})
        self._latest.save(step, args=ocp.args.Composite(**items))
        self._unsealed.append((self._latest, step))

    def seal(self) -> None:
        """Waits for the saves in flight and writes the manifests of the checkpoints they
        committed. Cheap when nothing is in flight; ``fit`` calls it while an epoch computes."""
        for manager in {id(m): m for m, _ in self._unsealed}.values():
            manager.wait_until_finished()
        for manager, step in self._unsealed:
            step_dir = os.path.join(manager.directory, str(step))
            if os.path.isdir(step_dir):  # max_to_keep may already have removed it
                write_manifest(step_dir)
        self._unsealed = []

    def restore_latest(self, like_state: Any, like_arrays: dict[str, Any]) -> tuple | None:
        """``(state, arrays, loop)`` of the newest intact latest checkpoint, restored into the
        structure (and static fields) of ``like_state`` and ``like_arrays`` (name -> pytree of
        the arrays that may have been saved beside the state); None when there is none.

        Newer checkpoints that are incomplete or damaged are removed, with a warning naming them.
        When every checkpoint is incomplete (the run was killed before one was sealed), they are
        removed and None is returned: the run starts over, which ends as it would have.

        Raises:
          CheckpointError: checkpoints exist, none is intact, and some are damaged.
        """
        self.seal()
        steps = sorted(self._latest.all_steps(), reverse=True)
        untrusted = {}
        for step in steps:
            step_dir = os.path.join(self._latest.directory, str(step))
            reason = damage(step_dir)
            if reason is None:
                break
            untrusted[step] = reason
        else:
            step = None
        if untrusted and step is None and any(r != INCOMPLETE for r in untrusted.values()):
            raise CheckpointError(
                f"no intact checkpoint to resume from under {self._latest.directory}: "
                f"{'; '.join(f'latest/{s}: {r}' for s, r in untrusted.items())}; start a new "
                "run (another --workdir)"
            )
        for bad in untrusted:
            self._latest.delete(bad)
        if untrusted:
            removed = "; ".join(f"latest/{s} ({r})" for s, r in untrusted.items())
            start = f"resuming from latest/{step}" if step is not None else "starting over"
            warnings.warn(f"{start}; removed {removed}", stacklevel=2)
        if step is None:
            return None  # only saves that never finished: the run starts from its beginning
        step_dir = os.path.join(self._latest.directory, str(step))
        return self._restore_step(step, step_dir, like_state, like_arrays)

    def _restore_step(self, step, step_dir, like_state, like_arrays):
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        items = dict(state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore())
        saved = [name for name in like_arrays if os.path.isdir(os.path.join(step_dir, name))]
        for name in saved:
            items[name] = ocp.args.StandardRestore(
                jax.tree.map(ocp.utils.to_shape_dtype_struct, like_arrays[name])
            )
        restored = self._latest.restore(step, args=ocp.args.Composite(**items))
        loop = dict(restored["loop"])
        self.best_epoch, self.best_value = loop.pop("best_checkpoint", [None, None])
        return restored["state"], {name: restored[name] for name in saved}, loop

    def reconcile_best(self, params: Any, config: dict) -> None:
        """Makes ``best/`` hold exactly the best epoch the resumed position knows (``best_epoch``,
        whose weights are ``params``): newer epochs (saved after that position) are removed, a
        lost or damaged best is written again."""
        self.seal()
        for step in self._best.all_steps():
            step_dir = os.path.join(self._best.directory, str(step))
            if step != self.best_epoch or damage(step_dir) is not None:
                self._best.delete(step)
        if self.best_epoch is None or self.best_epoch in self._best.all_steps():
            return
        if params is None:
            raise CheckpointError(
                f"{self._best.directory} lacks the best epoch {self.best_epoch + 1} and the latest "
                "checkpoint does not carry its weights; start a new run (another --workdir)"
            )
        self.save_best(self.best_epoch, params, {self.monitor: self.best_value}, config)

    def close(self) -> None:
        """Waits for asynchronous saves to land and be sealed, then releases the managers and the
        directory."""
        try:
            self.seal()
        finally:
            for manager in (self._best, self._latest):
                manager.close()
            self._claim.release()


def load_model(directory: str) -> tuple[Classifier, Any, dict]:
    """``keras.models.load_model`` for a run's checkpoints: ``(model, params, config)`` of the best
    checkpoint under ``directory`` (a run's ``checkpoints/`` folder). Reads only; never writes.

    ``config`` is the JSON stored with the checkpoint; ``config["model"]`` is the ``ModelConfig``.

    Raises:
      CheckpointError: there is no best checkpoint, or it is incomplete or damaged.
    """
    best = os.path.join(os.path.abspath(directory), "best")
    steps = sorted(int(name) for name in _listdir(best) if name.isdigit())
    if not steps:
        raise CheckpointError(
            f"no best checkpoint under {directory!r}; pass a run's checkpoints/ directory"
        )
    step_dir = os.path.join(best, str(steps[-1]))
    reason = damage(step_dir)
    if reason is not None:
        raise CheckpointError(
            f"the best checkpoint {step_dir} cannot be trusted: {reason}; resume the run "
            "(--resume) to rewrite it from its latest checkpoint"
        )
    checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
    try:
        config = checkpointer.restore(
            step_dir, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        )["config"]
        model_config = ModelConfig.from_dict(config["model"])
        abstract = jax.eval_shape(lambda: init_params(model_config, jax.random.key(0)))
        params = checkpointer.restore(
            step_dir, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract))
        )["params"]
    finally:
        checkpointer.close()
    return Classifier(model_config), params, config


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
