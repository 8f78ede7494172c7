"""Keras 3 under the speed benchmark, on whichever backend ``KERAS_BACKEND`` names (jax or
tensorflow): the tutorials' ``Sequential``, ``compile`` and ``fit(validation_data=...)``.

``Input((T,)) -> Embedding(V, E, mask_zero) -> [Bidirectional](LSTM/GRU(U, dropout,
recurrent_dropout)) ... (return_sequences except the last) -> Dense(C, sigmoid | softmax)``,
Keras defaults everywhere else (GRU ``reset_after=True``,
``jit_compile="auto"``, ``shuffle=True``), one-hot labels for categorical cross-entropy as the
Reuters tutorial makes them. Epoch seconds run from ``on_epoch_begin`` to ``on_epoch_end``, which
Keras calls after validation. See ``common`` for the job.
"""

import time

import keras
import numpy as np
from common import EPSILON, RHO, run_worker

LAYERS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


class EpochTimer(keras.callbacks.Callback):
    """Wall seconds of each epoch, validation included."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def versions() -> dict:
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        framework = {"jax": jax.__version__, "device": jax.devices()[0].device_kind}
    else:
        import tensorflow as tf

        framework = {"tensorflow": tf.__version__}
    return {"keras": keras.__version__, "backend": backend} | framework


def recurrent_layer(layer: dict, return_sequences: bool):
    """The Keras layer a job's layer entry describes."""
    rnn = LAYERS[layer["kind"]](
        layer["units"],
        dropout=layer["dropout"],
        recurrent_dropout=layer["recurrent_dropout"],
        return_sequences=return_sequences,
    )
    return keras.layers.Bidirectional(rnn) if layer["bidirectional"] else rnn


def train(job: dict, arrays: dict) -> dict:
    spec = job["model"]
    keras.utils.set_random_seed(job["seed"])
    last = len(spec["layers"]) - 1
    binary = spec["num_classes"] == 1
    model = keras.Sequential(
        [
            keras.Input((arrays["x_train"].shape[1],), dtype="int32"),
            keras.layers.Embedding(
                spec["vocab_size"], spec["embed_dim"], mask_zero=spec["mask_zero"]
            ),
        ]
        + [
            recurrent_layer(layer, return_sequences=index < last)
            for index, layer in enumerate(spec["layers"])
        ]
        + [keras.layers.Dense(spec["num_classes"], activation="sigmoid" if binary else "softmax")]
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(job["learning_rate"], rho=RHO, epsilon=EPSILON),
        loss="binary_crossentropy" if binary else "categorical_crossentropy",
        metrics=["accuracy"],
    )

    def labels(y: np.ndarray) -> np.ndarray:
        return y.astype("float32") if binary else keras.utils.to_categorical(y, spec["num_classes"])

    timer = EpochTimer()
    start = time.perf_counter()
    history = model.fit(
        arrays["x_train"],
        labels(arrays["y_train"]),
        validation_data=(arrays["x_val"], labels(arrays["y_val"])),
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        verbose=0,
        callbacks=[timer],
    )
    fit_seconds = time.perf_counter() - start
    return {
        "epoch_seconds": timer.seconds,
        "fit_seconds": fit_seconds,
        "train_loss": history.history["loss"][-1],
        "val_loss": history.history["val_loss"][-1],
        "options": {"jit_compile": model.jit_compile},
    }


if __name__ == "__main__":
    run_worker(versions, train)
