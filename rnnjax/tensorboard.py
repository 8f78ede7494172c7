"""Keras' ``TensorBoard`` callback, writing event files through ``tensorboardX`` (no TensorFlow).

``tensorboardX`` is an optional dependency (``pip install rnnjax[tensorboard]``); the callback
says so when it is missing.
"""

from __future__ import annotations

import os

import numpy as np

from rnnjax.callbacks import Callback


class TensorBoard(Callback):
    """``keras.callbacks.TensorBoard``'s scalars, laid out as Keras lays them out:
    ``<log_dir>/train`` and ``<log_dir>/validation`` event files, one ``epoch_<name>`` scalar per
    logged value each epoch (validation values without their ``val_`` prefix), at step = epoch.
    ``update_freq`` an int N adds ``batch_<name>`` scalars (running epoch means) every N steps,
    at the end of the compiled chunk that passes them (global step). Written by process 0 only.
    """

    def __init__(self, log_dir: str = "logs", update_freq: str | int = "epoch"):
        if update_freq != "epoch" and (
            isinstance(update_freq, bool) or not isinstance(update_freq, int) or update_freq < 1
        ):
            raise ValueError(f"update_freq must be 'epoch' or a positive int, got {update_freq!r}")
        self.log_dir = log_dir
        self.update_freq = update_freq
        self._writers: dict = {}
        self._last_batch_write = 0

    def _writer(self, name: str):
        if name not in self._writers:
            try:
                from tensorboardX import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "the TensorBoard callback writes through tensorboardX: pip install "
                    "tensorboardX (or rnnjax[tensorboard])"
                ) from error
            self._writers[name] = SummaryWriter(os.path.join(self.log_dir, name))
        return self._writers[name]

    def on_train_begin(self, logs=None):
        self._last_batch_write = 0
        if self.loop.primary:  # a log_dir that cannot be written fails now, not after an epoch
            try:
                self._writer("train")
            except OSError as error:
                raise ValueError(
                    f"TensorBoard cannot write its logs under {self.log_dir!r} "
                    f"({error.strerror or error}); pass another log_dir"
                ) from None

    def on_train_batch_end(self, batch, logs=None):
        if self.update_freq == "epoch" or not self.loop.primary:
            return
        steps = self.loop.steps_per_epoch or 0
        global_step = self.loop.epoch * steps + batch + 1
        if global_step - self._last_batch_write >= self.update_freq:
            self._last_batch_write = global_step
            for name, value in (logs or {}).items():
                if np.ndim(value) == 0:
                    self._writer("train").add_scalar(f"batch_{name}", value, global_step)

    def on_epoch_end(self, epoch, logs=None):
        if not self.loop.primary:
            return
        for name, value in (logs or {}).items():
            if np.ndim(value) != 0:
                continue
            split = "validation" if name.startswith("val_") else "train"
            tag = f"epoch_{name.removeprefix('val_')}"
            self._writer(split).add_scalar(tag, float(value), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        self.release()

    def release(self) -> None:
        writers, self._writers = self._writers, {}
        for writer in writers.values():
            writer.close()
