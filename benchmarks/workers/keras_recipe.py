"""An rnnjax recipe written the tutorials' way in Keras 3, run to early stop, with its phases
timed: the Keras side of ``benchmarks/end_to_end.py``.

    KERAS_BACKEND=jax python keras_recipe.py JOB

``JOB`` is JSON: ``{"data": .npz with x_train/y_train/x_val/y_val/x_test/y_test, "model": as
common.py's, "workdir", "epochs", "batch_size", "learning_rate", "patience", "seed", "started":
time.time() of whoever started this process}``. The script: ``Sequential`` of ``Input``,
``Embedding``, the recurrent layers and a sigmoid or softmax ``Dense``; ``compile`` with
RMSprop and (binary or categorical) cross-entropy with accuracy; ``fit`` on the training arrays
with ``validation_data``, ``EarlyStopping(val_loss, patience, restore_best_weights=True)`` and
``ModelCheckpoint(best.keras, save_best_only=True)``; ``evaluate`` on train, validation and test;
``history.json``. The answer, the last stdout line, holds the seconds of each phase, every
epoch's seconds (``on_epoch_begin`` to ``on_epoch_end``, validation included), the epochs run,
the best epoch and the final metrics.
"""

import json
import os
import time

import keras
from common import EPSILON, RHO, run_worker
from keras_worker import LAYERS, EpochTimer, versions

IMPORTED = time.time()


def recipe(job: dict, arrays: dict) -> dict:
    seconds = {
        "start + imports": IMPORTED - job["started"],
        "data: arrays from .npz": time.time() - IMPORTED,  # run_worker loaded them
    }
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = now - clock
        clock = now

    spec = job["model"]
    binary = spec["num_classes"] == 1
    keras.utils.set_random_seed(job["seed"])
    last = len(spec["layers"]) - 1
    model = keras.Sequential(
        [
            keras.Input((arrays["x_train"].shape[1],), dtype="int32"),
            keras.layers.Embedding(spec["vocab_size"], spec["embed_dim"]),
            *(
                LAYERS[kind](units, return_sequences=index < last)
                for index, (kind, units) in enumerate(spec["layers"])
            ),
            keras.layers.Dense(spec["num_classes"], activation="sigmoid" if binary else "softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.RMSprop(job["learning_rate"], rho=RHO, epsilon=EPSILON),
        loss="binary_crossentropy" if binary else "categorical_crossentropy",
        metrics=["accuracy"],
    )

    def labels(name: str):
        y = arrays[f"y_{name}"]
        return y.astype("float32") if binary else keras.utils.to_categorical(y, spec["num_classes"])

    phase("model: build, compile")
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=job["patience"], restore_best_weights=True
    )
    timer = EpochTimer()
    history = model.fit(
        arrays["x_train"],
        labels("train"),
        validation_data=(arrays["x_val"], labels("val")),
        epochs=job["epochs"],
        batch_size=job["batch_size"],
        verbose=0,
        callbacks=[
            stopping,
            keras.callbacks.ModelCheckpoint(
                os.path.join(job["workdir"], "best.keras"), monitor="val_loss", save_best_only=True
            ),
            timer,
        ],
    )
    phase("fit: epochs, validation, checkpoints")
    metrics = {}
    for name in ("train", "val", "test"):
        logs = model.evaluate(
            arrays[f"x_{name}"],
            labels(name),
            batch_size=job["batch_size"],
            verbose=0,
            return_dict=True,
        )
        metrics |= {f"{name}_{key}": float(value) for key, value in logs.items()}
    phase("final evaluations: train, val, test")
    with open(os.path.join(job["workdir"], "history.json"), "w") as f:
        json.dump(history.history, f)
    phase("outputs: history.json")
    return {
        "seconds": seconds,
        "epoch_seconds": timer.seconds,
        "fit_seconds": seconds["fit: epochs, validation, checkpoints"],
        "epochs_run": len(timer.seconds),
        "best_epoch": stopping.best_epoch + 1,
        "train_loss": history.history["loss"][-1],
        "val_loss": history.history["val_loss"][-1],
        "metrics": metrics,
        "ended": time.time(),
    }


if __name__ == "__main__":
    run_worker(versions, recipe)
