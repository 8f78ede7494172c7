"""Orbax checkpoints of a run: the best by the monitored metric and the latest, with the config.

``<dir>/best/<epoch>/``: the parameters of the best epoch so far (Keras
``ModelCheckpoint(save_best_only=True)``), with the monitored value as Orbax metrics, so the best is
still known after a restart. ``<dir>/latest/<epoch>/``: the whole ``TrainState`` plus the host-side
loop state, for resuming. Both hold the run's config as JSON, so ``load_model(dir)`` rebuilds and
evaluates the model from the directory alone. Orbax writes each checkpoint in a temporary directory
and renames it when complete, so a crash mid-save leaves the previous one intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from rnnjax.early_stopping import is_improvement
from rnnjax.models import Classifier, ModelConfig, init_params


def _manager(directory: str, **options: Any) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, cleanup_tmp_directories=True, **options
        ),
    )


class Checkpoints:
    """The best and latest checkpoints of one run directory."""

    def __init__(self, directory: str, monitor: str = "val_loss", direction: str = "min"):
        self.monitor = monitor
        self.direction = direction
        self._best = _manager(
            os.path.join(directory, "best"),
            best_fn=lambda metrics: metrics[monitor],
            best_mode=direction,
        )
        self._latest = _manager(os.path.join(directory, "latest"))
        step = self._best.best_step()
        # Persisted with the checkpoint, so a restarted run knows the best it must beat.
        self.best_value: float | None = (
            None if step is None else float(self._best.metrics(step)[monitor])
        )

    @property
    def best_epoch(self) -> int | None:
        return self._best.best_step()

    @property
    def latest_step(self) -> int | None:
        """Optimizer steps of the latest checkpoint (None before the first save)."""
        return self._latest.latest_step()

    def is_new_best(self, logs: dict[str, float]) -> bool:
        """Keras ``ModelCheckpoint(save_best_only=True)``: the first epoch always saves, later
        ones only when strictly better than the best saved; a missing metric saves anyway."""
        current = logs.get(self.monitor)
        if current is None:
            return True
        return is_improvement(current, self.best_value, self.direction, 0.0)

    def save_best(self, epoch: int, params: Any, logs: dict[str, float], config: dict) -> None:
        self.best_value = float(logs.get(self.monitor, float("nan")))
        self._best.save(
            epoch,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), config=ocp.args.JsonSave(config)
            ),
            metrics={self.monitor: self.best_value},
        )

    def save_latest(
        self, step: int, state: Any, best_params: Any, loop: dict, config: dict
    ) -> None:
        """``state``: the ``TrainState`` pytree; ``best_params``: the weights early stopping would
        restore (or None); ``loop``: JSON host state (position, history, early stopping)."""
        items = dict(
            state=ocp.args.StandardSave(state),
            loop=ocp.args.JsonSave(loop),
            config=ocp.args.JsonSave(config),
        )
        if best_params is not None:
            items["best_params"] = ocp.args.StandardSave(best_params)
        self._latest.save(step, args=ocp.args.Composite(**items))

    def restore_best_params(self, abstract_params: Any) -> Any:
        self._best.wait_until_finished()
        restored = self._best.restore(
            self._best.best_step(),
            args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract_params)),
        )
        return restored["params"]

    def restore_latest(self, like_state: Any) -> tuple[Any, Any, dict]:
        """``(state, best_params or None, loop)`` of the latest checkpoint, restored into the
        structure (and static fields) of ``like_state``."""
        self._latest.wait_until_finished()
        step = self._latest.latest_step()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
        items = dict(state=ocp.args.StandardRestore(abstract), loop=ocp.args.JsonRestore())
        has_best = os.path.isdir(os.path.join(self._latest.directory, str(step), "best_params"))
        if has_best:
            items["best_params"] = ocp.args.StandardRestore(abstract.params)
        restored = self._latest.restore(step, args=ocp.args.Composite(**items))
        return restored["state"], restored["best_params"] if has_best else None, restored["loop"]

    def close(self) -> None:
        """Waits for asynchronous saves to land, then releases the managers."""
        for manager in (self._best, self._latest):
            manager.wait_until_finished()
            manager.close()


def load_model(directory: str) -> tuple[Classifier, Any, dict]:
    """``keras.models.load_model`` for a run's checkpoints: ``(model, params, config)`` of the best
    checkpoint under ``directory`` (a run's ``checkpoints/`` folder).

    ``config`` is the JSON stored with the checkpoint; ``config["model"]`` is the ``ModelConfig``.
    """
    manager = _manager(os.path.join(directory, "best"))
    try:
        step = manager.latest_step()
        if step is None:
            raise ValueError(
                f"no best checkpoint under {directory!r}; pass a run's checkpoints/ dir"
            )
        config = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))[
            "config"
        ]
        model_config = ModelConfig.from_dict(config["model"])
        abstract = jax.eval_shape(lambda: init_params(model_config, jax.random.key(0)))
        params = manager.restore(
            step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract))
        )["params"]
    finally:
        manager.close()
    return Classifier(model_config), params, config
