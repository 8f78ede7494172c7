"""A metric and a callback of your own, beside Keras' built-ins, on IMDB-shaped sentiment data.

* ``F1Score``: a metric as two pure functions — ``stats`` (a batch's sufficient statistics, here
  the weighted true/false positive and false negative counts, summed over the epoch on device)
  and ``result`` (the F1 score from the summed counts). Because statistics are summed rather than
  averaged, the epoch's value is the F1 of all its examples, not a mean of batch F1s.
* ``SaveBestPredictions``: a callback is a ``Callback`` subclass with Keras' hooks; this one keeps
  the validation predictions of the best epoch by ``val_f1``, which ``EarlyStopping`` monitors
  too (F1 says it should go up: ``direction = "max"``).

Runs on synthetic ids by default (no download); ``--imdb`` reads the real IMDB reviews through
``rnnjax.data.imdb`` (``TFDS_DATA_DIR``).

    python examples/custom_metric_and_callback.py [--examples 4000] [--epochs 8] [--imdb]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj


@dataclasses.dataclass(frozen=True)
class F1Score(rj.metrics.Metric):
    """F1 of a binary classifier that outputs one logit: positive when the logit is > 0."""

    name: str = "f1"
    direction = "max"

    def stats(self, y_true, y_pred, sample_weight=None):
        predicted = (y_pred.reshape(-1) > 0).astype(jnp.float32)
        actual = (y_true.reshape(-1) > 0).astype(jnp.float32)
        weight = jnp.ones_like(actual) if sample_weight is None else sample_weight.reshape(-1)
        return {
            "tp": jnp.sum(weight * predicted * actual),
            "fp": jnp.sum(weight * predicted * (1 - actual)),
            "fn": jnp.sum(weight * (1 - predicted) * actual),
        }

    def result(self, stats):
        denominator = 2 * stats["tp"] + stats["fp"] + stats["fn"]
        return jnp.where(denominator > 0, 2 * stats["tp"] / jnp.maximum(denominator, 1e-12), 0.0)


class SaveBestPredictions(rj.Callback):
    """Keeps the validation predictions of the epoch with the best ``monitor`` (a callback sees
    the loop: ``self.loop.state`` is the current ``TrainState``)."""

    def __init__(self, inputs, monitor: str = "val_f1"):
        self.inputs, self.monitor = inputs, monitor
        self.best, self.best_epoch, self.predictions = -np.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        if logs[self.monitor] > self.best:
            self.best, self.best_epoch = logs[self.monitor], epoch
            self.predictions = rj.predict(self.loop.state, self.inputs)


def load(args):
    if args.imdb:
        (x_train, y_train), (x_test, y_test) = rj.data.imdb.load_data(num_words=1000)
        pad = lambda x: rj.pad_sequences(x, maxlen=100)  # noqa: E731
        return (pad(x_train), y_train), (pad(x_test), y_test), 1000
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 200, size=(args.examples, 40)).astype(np.int32)
    labels = ((ids < 30).sum(axis=1) > 5).astype(np.int32)  # "positive words" counted
    cut = int(0.8 * len(ids))
    return (ids[:cut], labels[:cut]), (ids[cut:], labels[cut:]), 200


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--imdb", action="store_true")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)

    (x_train, y_train), (x_val, y_val), vocab = load(args)
    config = rj.ModelConfig(vocab, 16, (rj.LayerSpec("gru", 16),))
    state = rj.TrainState.create(
        model=rj.Classifier(config),
        params=rj.init_params(config, jax.random.key(0)),
        tx=rj.adam(3e-3),
        loss=rj.losses.BinaryCrossentropy(from_logits=True),
        metrics=[
            rj.metrics.BinaryAccuracy(name="accuracy", threshold=0.0),
            rj.metrics.AUC(from_logits=True),
            F1Score(),
        ],
    )
    best = SaveBestPredictions(x_val)
    log_dir = tempfile.mkdtemp(prefix="rnnjax-example-")
    result = rj.fit(
        state,
        x_train,
        y_train,
        validation_data=(x_val, y_val),
        batch_size=64,
        epochs=args.epochs,
        verbose=args.verbose,
        callbacks=[
            best,
            rj.EarlyStopping(monitor="val_f1", patience=3),
            rj.CSVLogger(os.path.join(log_dir, "log.csv")),
        ],
    )
    print(f"best val_f1 {best.best:.4f} at epoch {best.best_epoch + 1}; log in {log_dir}")
    return result.history.epochs[-1]


if __name__ == "__main__":
    main()
