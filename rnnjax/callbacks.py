"""Keras' callback protocol, run on the host between compiled chunks of steps, and the simple
built-in callbacks.

A callback subclasses ``Callback`` and overrides the hooks it needs, with Keras' names and
arguments (``on_epoch_end(epoch, logs)``, ...). ``self.loop`` is the running ``Loop`` (Keras'
``self.model``): the ``TrainState`` (``loop.state``, which a callback may replace), where the loop
is, and ``loop.stop_training``. The hot loop stays compiled: ``on_train_batch_*`` run once per
compiled chunk (Keras' ``steps_per_execution``), with ``batch`` the chunk's last step.

Hook order is Keras': ``on_train_begin`` -> per epoch ``on_epoch_begin``, per chunk
``on_train_batch_begin``/``on_train_batch_end`` (running epoch means), validation
(``on_test_*``), ``on_epoch_end`` (training and ``val_`` logs) -> ``on_train_end``. Callbacks run
in list order, with rnnjax's own after the user's: ``History``, then ``BackupAndRestore`` (which
must see every other callback's epoch), then ``ProgbarLogger``; ``order`` sorts them.

Resuming. A callback whose decisions depend on earlier epochs returns them from
``checkpoint_state()`` (JSON values, and pytrees shaped like the parameters, e.g. best weights)
and takes them back in ``restore_state``; ``BackupAndRestore`` saves them with the training
state, so a resumed run continues every callback exactly.

Multi-host: every process runs every callback (decisions must agree); ``loop.primary`` is True on
process 0 only, and file-writing callbacks write only there.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.progress import format_line, format_time_per_step, format_value
from rnnjax.train_state import TrainState
from rnnjax.workdir import write_atomic

Logs = dict[str, Any]


@dataclasses.dataclass
class Loop:
    """The running ``fit`` as callbacks see it.

    Attributes:
      state: the ``TrainState``; a callback may replace it (restore weights, change a
        hyperparameter).
      epochs: the epoch count (an end index, as Keras' ``epochs``).
      steps_per_epoch: steps per epoch (None when a data source does not tell).
      epoch: the epoch in progress, or the next to run.
      step: steps of ``epoch`` done so far (non-zero only when resuming mid-epoch).
      epoch_stats: their statistics (None: none yet).
      stop_training: set by a callback to end training after the current chunk (Keras'
        ``model.stop_training``): the epoch still validates and ends (``on_epoch_end``).
      interrupted: set to end at once without ending the epoch (Ctrl-C): ``on_epoch_end`` is not
        called, ``BackupAndRestore`` saves the position inside the epoch.
      directions: ``"min"``/``"max"``/None per log name (``val_`` too), for ``mode="auto"``.
      schedule: what fixes the batches (batch size, seed, examples); a resumed run must match.
      callbacks: every callback of the run, in order.
    """

    state: TrainState
    epochs: int
    steps_per_epoch: int | None
    epoch: int = 0
    step: int = 0
    epoch_stats: Any = None
    stop_training: bool = False
    interrupted: bool = False
    directions: dict[str, str | None] = dataclasses.field(default_factory=dict)
    schedule: dict = dataclasses.field(default_factory=dict)
    callbacks: list[Callback] = dataclasses.field(default_factory=list)
    _snapshot: tuple[int, Any] | None = None

    @property
    def primary(self) -> bool:
        """Whether this process writes files and prints (process 0 of a multi-host run)."""
        return jax.process_index() == 0

    def snapshot_weights(self) -> tuple[Any, Any]:
        """Copies of the current ``(params, model_state)`` that outlive the next epoch (which
        donates the state's buffers): Keras' weights, non-trainable ones (batch statistics)
        included. Callbacks that keep weights of the same epoch share one copy."""
        if self._snapshot is None or self._snapshot[0] != int(self.state.step):
            weights = (self.state.params, self.state.model_state)
            self._snapshot = (int(self.state.step), jax.tree.map(jnp.copy, weights))
        return self._snapshot[1]

    def monitor_direction(self, monitor: str, mode: str = "auto") -> str:
        """Keras' ``MonitorCallback`` rule: an explicit ``mode``; else ``loss`` (any ``*loss``)
        is minimised and a metric follows its own direction; otherwise an error."""
        if mode in ("min", "max"):
            return mode
        if mode != "auto":
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if monitor.removeprefix("val_").endswith("loss"):
            return "min"
        direction = self.directions.get(monitor)
        if direction is None:
            raise ValueError(
                f"cannot infer whether {monitor!r} should go up or down; pass mode='min' or "
                f"mode='max' (logged values: {', '.join(sorted(self.directions))})"
            )
        return direction

    @property
    def learning_rate(self) -> float:
        """The optimizer's learning rate (needs ``optax.inject_hyperparams``, as rnnjax's
        ``rmsprop``/``adam``/``sgd`` are)."""
        return float(_hyperparams(self.state)["learning_rate"])

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        hyperparams = dict(_hyperparams(self.state, setting=True))
        old = hyperparams["learning_rate"]
        hyperparams["learning_rate"] = jnp.asarray(value, jnp.asarray(old).dtype)
        opt_state = self.state.opt_state._replace(hyperparams=hyperparams)
        self.state = self.state.replace(opt_state=opt_state)


def _hyperparams(state: TrainState, setting: bool = False) -> dict:
    hyperparams = getattr(state.opt_state, "hyperparams", None)
    if not isinstance(hyperparams, dict) or "learning_rate" not in hyperparams:
        raise ValueError(
            "this callback sets the learning rate, which needs an optimizer made with "
            "optax.inject_hyperparams (rnnjax.rmsprop, adam and sgd are; wrap your own: "
            "optax.inject_hyperparams(optax.adam)(learning_rate=1e-3))"
        )
    # optax recomputes a scheduled rate at every step, over whatever a callback set.
    if setting and "learning_rate" in getattr(state.opt_state, "hyperparams_states", {}):
        raise ValueError(
            "this callback sets the learning rate, but the optimizer's learning_rate is an optax "
            "schedule, which sets it at every step; give the optimizer a number "
            "(learning_rate=1e-3) or leave the rate to the schedule"
        )
    return hyperparams


class Callback:
    """Keras' ``keras.callbacks.Callback``: every hook does nothing until overridden."""

    order: ClassVar[int] = 0  # rnnjax's own callbacks run after the user's
    loop: Loop | None = None

    def set_loop(self, loop: Loop) -> None:
        self.loop = loop

    def on_train_begin(self, logs: Logs | None = None) -> None: ...

    def on_train_end(self, logs: Logs | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...

    def on_train_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_begin(batch, logs)

    def on_train_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        self.on_batch_end(batch, logs)

    def on_batch_begin(self, batch: int, logs: Logs | None = None) -> None:
        """Keras' older name for ``on_train_batch_begin``, which calls it."""

    def on_batch_end(self, batch: int, logs: Logs | None = None) -> None:
        """Keras' older name for ``on_train_batch_end``, which calls it."""

    def on_test_begin(self, logs: Logs | None = None) -> None: ...

    def on_test_end(self, logs: Logs | None = None) -> None: ...

    def on_test_batch_begin(self, batch: int, logs: Logs | None = None) -> None: ...

    def on_test_batch_end(self, batch: int, logs: Logs | None = None) -> None: ...

    def checkpoint_state(self) -> dict:
        """What this callback has learned that a resumed run needs (JSON values; parameter-shaped
        pytrees for weights)."""
        return {}

    def restore_state(self, state: dict) -> None:
        """Takes back what ``checkpoint_state`` returned (weights restored as arrays)."""

    def release(self) -> None:
        """Gives back what the callback holds (open files, claimed directories). ``fit`` calls it
        when it ends, also on an error (when Keras skips ``on_train_end``); it must be
        idempotent."""


class CallbackList:
    """Calls each hook on every callback, in ``order`` (stable: the user's order within)."""

    HOOKS = (
        "on_train_begin",
        "on_train_end",
        "on_epoch_begin",
        "on_epoch_end",
        "on_train_batch_begin",
        "on_train_batch_end",
        "on_test_begin",
        "on_test_end",
        "on_test_batch_begin",
        "on_test_batch_end",
    )

    def __init__(self, callbacks: Sequence[Callback], loop: Loop):
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise ValueError(
                    f"{callback!r} is not a Callback: subclass rnnjax.callbacks.Callback or use "
                    "LambdaCallback"
                )
        self.callbacks = sorted(callbacks, key=lambda c: c.order)
        loop.callbacks = self.callbacks
        for callback in self.callbacks:
            callback.set_loop(loop)

    def release(self) -> None:
        for callback in self.callbacks:
            callback.release()

    def __getattr__(self, hook: str):
        if hook not in self.HOOKS:
            raise AttributeError(hook)

        def call(*args):
            for callback in self.callbacks:
                getattr(callback, hook)(*args)

        return call


class History(Callback):
    """Keras' ``History``: ``history`` (a dict of per-epoch lists, ``{"loss": [...]}``),
    ``epoch`` (the epoch numbers) and ``epochs`` (the logs of each epoch, in order)."""

    order = 10

    def __init__(self):
        self.epochs: list[Logs] = []
        self.epoch: list[int] = []

    def on_train_begin(self, logs=None):
        self.epochs, self.epoch = [], []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(dict(logs or {}))
        self.epoch.append(epoch)

    @property
    def history(self) -> dict[str, list[float]]:
        keys: dict[str, None] = {}
        for logs in self.epochs:
            keys.update(dict.fromkeys(logs))
        return {key: [logs.get(key, math.nan) for logs in self.epochs] for key in keys}

    def __len__(self) -> int:
        return len(self.epochs)

    def to_json(self) -> str:
        return json.dumps({"epochs": self.epochs}, indent=1, allow_nan=True)

    def checkpoint_state(self) -> dict:
        return {"epochs": self.epochs, "epoch": self.epoch}

    def restore_state(self, state):
        self.epochs, self.epoch = list(state["epochs"]), list(state["epoch"])


class HistoryFile(Callback):
    """Rewrites ``path`` (``history.json``: ``{"epochs": [logs, ...]}``) atomically after every
    epoch, so a reader never sees a partial file: ``History``'s logs, each with the epoch's wall
    ``seconds`` (training and validation, ``on_epoch_begin`` to ``on_epoch_end``)."""

    order = 11

    def __init__(self, path: str):
        self.path = path
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self._write()

    def on_train_end(self, logs=None):
        self._write()  # a resumed run that trains nothing more still leaves its file

    def _write(self):
        history = next(c for c in self.loop.callbacks if isinstance(c, History))
        epochs = [logs | {"seconds": s} for logs, s in zip(history.epochs, self.seconds)]
        if self.loop.primary:
            write_atomic(self.path, json.dumps({"epochs": epochs}, indent=1, allow_nan=True))

    def checkpoint_state(self) -> dict:
        return {"seconds": self.seconds}

    def restore_state(self, state):
        self.seconds = list(state["seconds"])


class ProgbarLogger(Callback):
    """Keras' progress output: ``Epoch e/E``, then with ``verbose=1`` a bar redrawn after every
    chunk on a terminal (one final line an epoch elsewhere), with ``verbose=2`` one line an epoch,
    with ``verbose=0`` nothing. Values are Keras': running means within the epoch, the epoch's
    logs (``val_`` included) at its end, keys sorted, 4 decimals."""

    order = 30

    def __init__(self, verbose: int = 1, stream: TextIO | None = None):
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose must be 0, 1 or 2 (or 'auto'), got {verbose!r}")
        self.verbose = verbose
        self.stream = stream
        self._start = self._after_first = self._last_draw = 0.0
        self._steps_done = self._first_steps = 0

    @property
    def live(self) -> bool:
        """Whether a bar is redrawn during epochs (verbose 1 on a terminal)."""
        stream = self.stream or sys.stdout
        return self.verbose == 1 and stream.isatty()

    def print(self, text: str) -> None:
        if self.verbose and self.loop.primary:
            print(text, file=self.stream or sys.stdout, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        if self.loop.epochs > 1:
            self.print(f"Epoch {epoch + 1}/{self.loop.epochs}")
        self._start = self._last_draw = time.perf_counter()
        self._after_first, self._first_steps = 0.0, 0
        self._steps_done = self.loop.step

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if not self._after_first:
            self._after_first, self._first_steps = now, batch + 1 - self._steps_done
        self._steps_done = batch + 1
        steps = self.loop.steps_per_epoch
        if not self.live or not self.loop.primary or not steps:
            return
        if now - self._last_draw < 0.05 and batch + 1 < steps:
            return
        self._last_draw = now
        per_step = self._per_step(now)
        eta = per_step * (steps - batch - 1)
        line = format_line(batch + 1, steps, eta, per_step, _floats(logs), done=False)
        stream = self.stream or sys.stdout
        stream.write("\r" + line + "\x1b[K")
        stream.flush()

    def _per_step(self, now: float) -> float:
        # Keras leaves the first (compiling) step out of the time per step when it can.
        later = self._steps_done - self._first_steps
        if self._after_first and later > 0:
            return (now - self._after_first) / later
        return (now - self._start) / max(self._steps_done, 1)

    def on_epoch_end(self, epoch, logs=None):
        if not self.verbose or not self.loop.primary:
            return
        now = time.perf_counter()
        steps = self.loop.steps_per_epoch or self._steps_done
        values = _floats({k: v for k, v in (logs or {}).items()})
        if self.verbose == 2:
            metrics = "".join(f" - {k}: {format_value(v)}" for k, v in sorted(values.items()))
            line = (
                f"{steps}/{steps} - {now - self._start:.0f}s - "
                f"{format_time_per_step(self._per_step(now))}{metrics}"
            )
        else:
            line = format_line(steps, steps, now - self._start, self._per_step(now), values, True)
        stream = self.stream or sys.stdout
        live = self.live
        stream.write(("\r" if live else "") + line + ("\x1b[K" if live else "") + "\n")
        stream.flush()


def _floats(logs: Logs | None) -> dict[str, float]:
    """The scalar logs (progress shows no vectors)."""
    return {k: float(v) for k, v in (logs or {}).items() if np.ndim(v) == 0}


class TerminateOnNaN(Callback):
    """Keras' ``TerminateOnNaN``: after a chunk whose running epoch loss is NaN or infinite, stop
    training (the epoch still validates and ends, as in Keras); ``raise_error=True`` raises
    instead. The compiled loop itself ends a chunk right after such a step, so ``nan_at`` is the
    exact ``(epoch, step)`` (1-based). ``verbose=0`` silences Keras' message."""

    def __init__(self, raise_error: bool = False, verbose: int = 1):
        self.raise_error = raise_error
        self.verbose = verbose
        self.nan_at: tuple[int, int] | None = None

    def on_train_begin(self, logs=None):
        self.nan_at = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.nan_at = (self.loop.epoch + 1, batch + 1)
            if self.raise_error:
                raise RuntimeError(f"Loss is {loss} on batch {batch + 1}. Terminating training.")
            if self.verbose and self.loop.primary:
                print(f"Batch {batch}: Invalid loss, terminating training", flush=True)
            self.loop.stop_training = True

    def checkpoint_state(self) -> dict:
        return {"nan_at": self.nan_at}

    def restore_state(self, state):
        self.nan_at = None if state["nan_at"] is None else tuple(state["nan_at"])


class LambdaCallback(Callback):
    """Keras' ``LambdaCallback``: each hook given as a function of the hook's arguments, e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs["loss"]))``."""

    def __init__(self, **hooks: Callable[..., Any]):
        known = (*CallbackList.HOOKS, "on_batch_begin", "on_batch_end")
        unknown = set(hooks) - set(known)
        if unknown:
            raise ValueError(f"unknown hooks {sorted(unknown)}; use {known}")
        for name, function in hooks.items():
            setattr(self, name, function)


class CSVLogger(Callback):
    """Keras' ``CSVLogger``: one row per epoch (``epoch`` from 0, then the log keys sorted), in
    Keras' exact format: ``separator`` ``,``, excel dialect (``\\r\\n`` line ends), floats with
    ``str``, ``NA`` for a missing key, columns fixed at the first epoch (``val_<k>`` added for
    every key while no ``val_`` key exists), flushed every epoch. ``append=True`` continues a
    file (a header only if it is empty). A resumed run rewrites the file up to the position it
    resumes from, so no epoch appears twice."""

    def __init__(self, filename: str, separator: str = ",", append: bool = False):
        self.filename = filename
        self.separator = separator
        self.append = append
        self.keys: list[str] | None = None
        self._rows = 0  # rows this run wrote
        self._kept = 0  # rows of earlier runs kept (append)
        self._fresh = False

    def on_train_begin(self, logs=None):
        path = Path(self.filename).absolute()
        if path.is_dir() or not path.parent.is_dir():
            why = "it is a directory" if path.is_dir() else "its folder is missing"
            raise ValueError(
                f"CSVLogger cannot write {self.filename!r}: {why}; pass another filename"
            )
        self.keys, self._rows = None, 0
        existing = self._read() if self.append else ""
        self._kept = max(existing.count("\n") - 1, 0) if existing else 0
        # Emptied at the first epoch's end, so a resumed run (restore_state) keeps its rows.
        self._fresh = not self.append

    def _read(self) -> str:
        try:
            with open(self.filename, newline="") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if self.keys is None:
            self.keys = sorted(logs)
            if not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, ["epoch", *self.keys], delimiter=self.separator, dialect="excel"
        )
        if self._rows == 0 and self._kept == 0:
            writer.writeheader()
        row = {"epoch": epoch} | {k: _csv_value(logs[k]) if k in logs else "NA" for k in self.keys}
        writer.writerow(row)
        self._rows += 1
        if self.loop.primary:
            if self._fresh:
                write_atomic(self.filename, "")
                self._fresh = False
            with open(self.filename, "a", newline="") as f:
                f.write(buffer.getvalue())
                f.flush()

    def checkpoint_state(self) -> dict:
        return {"keys": self.keys, "rows": self._rows, "kept": self._kept}

    def restore_state(self, state):
        self.keys, self._rows, self._kept = state["keys"], state["rows"], state["kept"]
        self._fresh = False
        if not self.loop.primary:
            return
        lines = self._read().splitlines(keepends=True)
        header = 1 if (self._rows or self._kept) else 0
        write_atomic(self.filename, "".join(lines[: header + self._kept + self._rows]))


def _csv_value(value) -> str:
    if isinstance(value, (list, tuple, np.ndarray)):
        return f'"[{", ".join(str(v) for v in value)}]"'
    return str(value)


class LearningRateScheduler(Callback):
    """Keras' ``LearningRateScheduler``: at each epoch's start, ``lr = schedule(epoch, lr)`` (or
    ``schedule(epoch)``), applied from the epoch's first step; ``learning_rate`` is logged."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0):
        self.schedule = schedule
        self.verbose = verbose

    def on_train_begin(self, logs=None):
        _hyperparams(self.loop.state, setting=True)

    def on_epoch_begin(self, epoch, logs=None):
        try:
            lr = self.schedule(epoch, self.loop.learning_rate)
        except TypeError:  # a one-argument schedule, as Keras allows
            lr = self.schedule(epoch)
        if np.asarray(lr).dtype.kind not in "fiu" or np.ndim(lr) != 0:  # a real number
            raise ValueError(f"the schedule must return a float, got {lr!r}")
        self.loop.learning_rate = float(lr)
        if self.verbose and self.loop.primary:
            print(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.loop.learning_rate


class ReduceLROnPlateau(Callback):
    """Keras' ``ReduceLROnPlateau``: when ``monitor`` has not improved by ``min_delta`` for
    ``patience`` epochs, ``lr = max(lr * factor, min_lr)``, then ``cooldown`` epochs of rest.
    Keras' order at each epoch end: log ``learning_rate``; a missing monitor warns and stops
    there; cooldown counts down (and resets the wait); an improvement resets the wait, otherwise
    outside cooldown the wait grows and at ``patience`` the rate drops if it is above ``min_lr``.
    Values compare in float32, as Keras does."""

    def __init__(
        self,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        verbose: int = 0,
        mode: str = "auto",
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
    ):
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0, got {factor}")
        self.monitor, self.factor, self.patience = monitor, factor, patience
        self.verbose, self.mode, self.min_delta = verbose, mode, min_delta
        self.cooldown, self.min_lr = cooldown, min_lr
        self.best: float | None = None
        self.wait = self.cooldown_counter = 0
        self._warned = False

    def on_train_begin(self, logs=None):
        _hyperparams(self.loop.state, setting=True)
        self.best, self.wait, self.cooldown_counter = None, 0, 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = self.loop.learning_rate
        current = logs.get(self.monitor)
        if current is None:
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"Learning rate reduction is conditioned on metric `{self.monitor}` which is "
                    f"not available. Available metrics are: {','.join(logs)}.",
                    stacklevel=2,
                )
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        direction = self.loop.monitor_direction(self.monitor, self.mode)
        if _improves(current, self.best, direction, self.min_delta):
            self.best = float(np.float32(current))
            self.wait = 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = self.loop.learning_rate
                if old > float(np.float32(self.min_lr)):
                    new = max(old * self.factor, self.min_lr)
                    self.loop.learning_rate = new
                    if self.verbose and self.loop.primary:
                        print(
                            f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to "
                            f"{new}."
                        )
                    self.cooldown_counter = self.cooldown
                    self.wait = 0

    def checkpoint_state(self) -> dict:
        return {"best": self.best, "wait": self.wait, "cooldown_counter": self.cooldown_counter}

    def restore_state(self, state):
        self.best, self.wait = state["best"], state["wait"]
        self.cooldown_counter = state["cooldown_counter"]


def _improves(current: float, best: float | None, direction: str, min_delta: float) -> bool:
    """Keras' ``MonitorCallback._is_improvement`` in float32; NaN never improves."""
    if best is None:
        return True  # the first value is the best so far, even NaN (which then never improves)
    current32, best32 = np.float32(current), np.float32(best)
    delta = np.float32(abs(min_delta))
    if direction == "min":
        return bool(current32 + delta < best32)
    return bool(current32 - delta > best32)


class Interrupt(Callback):
    """Ends training at the next chunk boundary when ``requested()`` turns true (the CLI's Ctrl-C
    handler), without ending the epoch: ``BackupAndRestore`` saves the position inside it."""

    def __init__(self, requested: Callable[[], bool]):
        self.requested = requested

    def on_train_batch_end(self, batch, logs=None):
        if self.requested():
            self.loop.interrupted = True

    def on_epoch_end(self, epoch, logs=None):
        if self.requested() and epoch + 1 < self.loop.epochs:
            self.loop.interrupted = True


__all__ = [
    "Callback",
    "CallbackList",
    "CSVLogger",
    "History",
    "HistoryFile",
    "Interrupt",
    "LambdaCallback",
    "LearningRateScheduler",
    "Loop",
    "ProgbarLogger",
    "ReduceLROnPlateau",
    "TerminateOnNaN",
]
