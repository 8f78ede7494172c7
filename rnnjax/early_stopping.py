"""Keras' ``EarlyStopping``: the rule as an immutable record (``EarlyStoppingState``) and the
callback that applies it each epoch and restores the best weights at the end.

The rule is Keras 3.15's (keras/src/callbacks/early_stopping.py, monitor_callback.py), which
differs from ``flax.training.early_stopping`` (that one stops an epoch later for
``patience >= 1``):

* an epoch whose monitored value is missing (warned about once), or earlier than
  ``start_from_epoch``, is skipped;
* ``wait`` is incremented *before* comparing; an improvement (strictly better than the best by
  more than ``|min_delta|``, compared in float32; the first value always improves; NaN never does
  after that) resets it to 0, unless a ``baseline`` is set and the value does not also beat the
  baseline;
* otherwise training stops once ``wait >= patience`` (never at epoch 0);
* at the end of training the best weights are restored whenever ``restore_best_weights`` is set and
  a best exists, whether or not training stopped early.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Literal

import numpy as np

from rnnjax.callbacks import Callback

Direction = Literal["min", "max"]


def is_improvement(
    current: float, reference: float | None, direction: str, min_delta: float
) -> bool:
    """``current`` beats ``reference`` by more than ``|min_delta|`` in float32, as Keras
    compares (always, if there is no reference; never, if ``current`` is NaN)."""
    if reference is None:
        return True
    current32, reference32 = np.float32(current), np.float32(reference)
    delta = np.float32(abs(min_delta))
    if direction == "min":
        return bool(current32 + delta < reference32)
    return bool(current32 - delta > reference32)


@dataclasses.dataclass(frozen=True)
class EarlyStoppingState:
    """Keras' early-stopping rule as data: configuration, then state.

    ``update(epoch, value)`` returns the record after an epoch that logged ``value`` (None when
    the monitored key was missing); ``improved`` says whether it found a new best, so the caller
    snapshots the weights; ``stop_training`` whether training should end after this epoch.
    """

    direction: Direction = "min"
    min_delta: float = 0.0
    patience: int = 0
    baseline: float | None = None
    start_from_epoch: int = 0

    wait: int = 0
    best: float | None = None
    best_epoch: int = 0
    stopped_epoch: int = 0
    improved: bool = False
    stop_training: bool = False

    def __post_init__(self):
        if self.direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {self.direction!r}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be >= 0, got {self.start_from_epoch}")

    def update(self, epoch: int, current: float | None) -> EarlyStoppingState:
        """The record after epoch ``epoch`` (0-based) ended with the monitored ``current``."""
        if current is None or epoch < self.start_from_epoch:
            return dataclasses.replace(self, improved=False)
        wait = self.wait + 1
        if is_improvement(current, self.best, self.direction, self.min_delta):
            beats_baseline = self.baseline is None or is_improvement(
                current, self.baseline, self.direction, self.min_delta
            )
            return dataclasses.replace(
                self,
                best=float(current),
                best_epoch=epoch,
                wait=0 if beats_baseline else wait,
                improved=True,
            )
        stop = wait >= self.patience and epoch > 0
        return dataclasses.replace(
            self,
            wait=wait,
            improved=False,
            stop_training=stop,
            stopped_epoch=epoch if stop else self.stopped_epoch,
        )


class EarlyStopping(Callback):
    """``keras.callbacks.EarlyStopping``, Keras' arguments and defaults.

    Each epoch's end applies the rule (``EarlyStoppingState``) to ``logs[monitor]`` and sets
    ``loop.stop_training`` when it says so; with ``restore_best_weights`` it keeps the best
    epoch's weights (``params`` and ``model_state``, e.g. batch statistics, as Keras'
    ``get_weights`` holds non-trainable weights) and puts them back into ``loop.state`` at the
    end of training (Keras 3: even without a stop). ``mode="auto"`` takes the direction of the
    monitored metric (losses decrease). ``verbose=1`` prints Keras' two messages. ``state`` is
    the rule's record.
    """

    def __init__(
        self,
        monitor: str = "val_loss",
        min_delta: float = 0.0,
        patience: int = 0,
        verbose: int = 0,
        mode: str = "auto",
        baseline: float | None = None,
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.verbose = monitor, mode, verbose
        self.restore_best_weights = restore_best_weights
        self._config = dict(
            min_delta=min_delta,
            patience=patience,
            baseline=baseline,
            start_from_epoch=start_from_epoch,
        )
        self.state = EarlyStoppingState(**self._config)  # checks the arguments
        self.best_weights: Any = None
        self.best_model_state: Any = None
        self._warned = False

    def on_train_begin(self, logs=None):
        direction = self.loop.monitor_direction(self.monitor, self.mode)
        self.state = EarlyStoppingState(direction=direction, **self._config)
        self.best_weights = self.best_model_state = None

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None and not self._warned and epoch >= self.state.start_from_epoch:
            self._warned = True
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                f"Available metrics are: {','.join(logs or {})}",
                stacklevel=2,
            )
        self.state = self.state.update(epoch, None if current is None else float(current))
        if self.state.improved and self.restore_best_weights:
            self.best_weights, self.best_model_state = self.loop.snapshot_weights()
        if self.state.stop_training:
            self.loop.stop_training = True

    def on_train_end(self, logs=None):
        if self.loop.interrupted:  # paused, not ended: the backup keeps the current weights
            return
        if self.state.stopped_epoch > 0 and self.verbose and self.loop.primary:
            print(f"Epoch {self.state.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose and self.loop.primary:
                print(
                    "Restoring model weights from the end of the best epoch: "
                    f"{self.state.best_epoch + 1}."
                )
            state = self.loop.state
            model_state = self.best_model_state
            if model_state is None:
                model_state = state.model_state
            self.loop.state = state.replace(params=self.best_weights, model_state=model_state)

    @property
    def stopped_epoch(self) -> int:
        return self.state.stopped_epoch

    @property
    def best_epoch(self) -> int | None:
        """The best epoch (0-based), or None before any value was monitored."""
        return None if self.state.best is None else self.state.best_epoch

    def checkpoint_state(self) -> dict:
        return {
            "state": dataclasses.asdict(self.state),
            "warned": self._warned,
            "best_weights": self.best_weights,
            "model_state": self.best_model_state or None,
        }

    def restore_state(self, state):
        self.state = EarlyStoppingState(**state["state"])
        self._warned = state["warned"]
        self.best_weights = state["best_weights"]
        # None: the model has no other collections, or the backup was made before they were kept.
        self.best_model_state = state.get("model_state")
