"""Keras ``EarlyStopping`` as an immutable record: ``update(epoch, logs)`` returns the next one.

The rule is Keras 3's (keras/src/callbacks/early_stopping.py), which differs from
``flax.training.early_stopping`` (that one stops an epoch later for ``patience >= 1``):

* an epoch whose monitored value is missing (warned about once), or earlier than
  ``start_from_epoch``, is skipped;
* ``wait`` is incremented *before* comparing; an improvement (strictly better than the best by
  more than ``min_delta``; the first value always improves; NaN never does after that) resets it to
  0, unless a ``baseline`` is set and the value does not also beat the baseline;
* otherwise training stops once ``wait >= patience`` (never at epoch 0);
* at the end of training the best weights are restored whenever ``restore_best_weights`` is set and
  a best exists, whether or not training stopped early.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Literal

Mode = Literal["auto", "min", "max"]
# Metrics rnnjax logs and whether larger is better (Keras' metric _direction).
METRIC_DIRECTIONS = {"loss": "min", "accuracy": "max", "acc": "max"}


def monitor_direction(monitor: str, mode: Mode = "auto") -> Literal["min", "max"]:
    """Keras' ``MonitorCallback`` rule: explicit ``mode``, else loss is minimised and accuracy
    maximised; an unknown metric under ``auto`` is an error."""
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    name = monitor.removeprefix("val_")
    if name not in METRIC_DIRECTIONS:
        raise ValueError(
            f"cannot infer whether {monitor!r} should go up or down; monitor one of "
            f"{sorted(METRIC_DIRECTIONS)} (with or without 'val_') or pass mode='min'/'max'"
        )
    return METRIC_DIRECTIONS[name]


def is_improvement(
    current: float, reference: float | None, direction: str, min_delta: float
) -> bool:
    """``current`` beats ``reference`` by more than ``|min_delta|`` (always, if no reference)."""
    if reference is None:
        return True
    if direction == "min":
        return current + abs(min_delta) < reference
    return current - abs(min_delta) > reference


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Keras' ``EarlyStopping`` callback, as data.

    Configuration fields have Keras' names and defaults. The remaining fields are its state;
    ``improved`` says whether the last update found a new best (so the caller snapshots the
    weights), ``stop_training`` whether the loop should end after this epoch.
    """

    monitor: str = "val_loss"
    min_delta: float = 0.0
    patience: int = 0
    mode: Mode = "auto"
    baseline: float | None = None
    restore_best_weights: bool = False
    start_from_epoch: int = 0

    wait: int = 0
    best: float | None = None
    best_epoch: int = 0
    stopped_epoch: int = 0
    improved: bool = False
    stop_training: bool = False
    warned_missing: bool = False

    def __post_init__(self):
        monitor_direction(self.monitor, self.mode)
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0, got {self.patience}")
        if self.start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be >= 0, got {self.start_from_epoch}")

    @property
    def direction(self) -> Literal["min", "max"]:
        return monitor_direction(self.monitor, self.mode)

    def update(self, epoch: int, logs: dict[str, float]) -> EarlyStopping:
        """The record after epoch ``epoch`` (0-based) ended with ``logs``."""
        current = logs.get(self.monitor)
        if current is None and not self.warned_missing:
            warnings.warn(  # once, where Keras warns every epoch and Python's filter dedupes
                f"Early stopping conditioned on metric `{self.monitor}` which is not available. "
                f"Available metrics are: {','.join(k for k in logs if k != 'seconds')}",
                stacklevel=2,
            )
            return dataclasses.replace(self, improved=False, warned_missing=True)
        if current is None or epoch < self.start_from_epoch:
            return dataclasses.replace(self, improved=False)
        wait = self.wait + 1
        if is_improvement(current, self.best, self.direction, self.min_delta):
            beats_baseline = self.baseline is None or is_improvement(
                current, self.baseline, self.direction, self.min_delta
            )
            return dataclasses.replace(
                self,
                best=current,
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

    @property
    def restores(self) -> bool:
        """Whether training ends by restoring the best weights (Keras 3: even without a stop)."""
        return self.restore_best_weights and self.best is not None

    def messages(self) -> list[str]:
        """What Keras prints at the end of training with ``verbose=1``."""
        lines = []
        if self.stopped_epoch > 0:
            lines.append(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restores:
            lines.append(
                f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}."
            )
        return lines
